"""Deep CORAL: correlation alignment (Sun & Saenko, "Deep CORAL: Correlation Alignment for Deep
Domain Adaptation", ECCV 2016 workshops).

Use it as ``loss = task_loss + trade_off * coral_loss(f_s, f_t)``; Sun & Saenko pick the
trade-off so that the two losses are about equal at the end of training.
"""

from __future__ import annotations

import torch
from torch import nn

from transferkit.errors import DataError
from transferkit.registry import ADAPTATION, Method

__all__ = ["CORAL", "coral_loss", "covariance"]


def covariance(x: torch.Tensor) -> torch.Tensor:
    r"""Unbiased covariance of the rows of ``x`` (N, d), N >= 2:
    :math:`C = \frac{1}{N-1} (x - \bar x)^\top (x - \bar x)`, (d, d)."""
    centred = x - x.mean(0, keepdim=True)
    return centred.T @ centred / (len(x) - 1)


def coral_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    r"""CORAL loss :math:`\frac{1}{4d^2} \lVert C_s - C_t \rVert_F^2` between the unbiased
    covariances of ``f_s`` (N_s, d) and ``f_t`` (N_t, d); a 0-d tensor, differentiable in both.
    0 when the covariances match (means are not compared)."""
    if f_s.ndim != 2 or f_t.ndim != 2 or f_s.shape[1] != f_t.shape[1]:
        raise DataError(f"f_s and f_t must be (N, d) with the same d, got {tuple(f_s.shape)}, {tuple(f_t.shape)}")
    if len(f_s) < 2 or len(f_t) < 2:
        raise DataError(f"CORAL needs at least 2 rows per domain to estimate a covariance, got "
                        f"{len(f_s)} and {len(f_t)}; use a batch size >= 2")
    d = f_s.shape[1]
    return (covariance(f_s) - covariance(f_t)).pow(2).sum() / (4.0 * d * d)


class CORAL(nn.Module):
    """:func:`coral_loss` as a module: ``CORAL()(f_s, f_t)``."""

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        return coral_loss(f_s, f_t)


def _build(ctx):
    from transferkit.adaptation.alignment import AlignmentTerm

    return AlignmentTerm(CORAL(), ctx.weight)


METHOD = ADAPTATION.register(Method(
    name="coral", summary="match the features' covariances (Deep CORAL)", build=_build, defaults={"trade_off": 1.0}))
