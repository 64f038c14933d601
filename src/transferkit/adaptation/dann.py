"""DANN: domain-adversarial training (Ganin & Lempitsky, ICML 2015; Ganin et al., JMLR 2016).

Use it as ``loss = task_loss + trade_off * dann(f_s, f_t)[0]`` with ``f_s``/``f_t`` the
feature extractor's outputs on a source and a target batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from transferkit.adaptation.grl import DomainDiscriminator, GradientReversal
from transferkit.errors import ConfigError, DataError
from transferkit.registry import ADAPTATION, Method

__all__ = ["DANNLoss", "domain_adversarial_loss"]


def check_rows(name: str, x: torch.Tensor, ndim: int = 2) -> None:
    """Refuse ``x`` unless it is a non-empty ``ndim``-D tensor (one line naming ``name``)."""
    if x.ndim != ndim or len(x) == 0:
        raise DataError(f"{name} must be a non-empty {ndim}-D tensor, got shape {tuple(x.shape)}")


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """``sum(w * v) / sum(w)`` (the plain mean without weights)."""
    if weights is None:
        return values.mean()
    weights = weights.reshape(values.shape).to(values)
    return (weights * values).sum() / weights.sum()


def domain_adversarial_loss(d_s: torch.Tensor, d_t: torch.Tensor, w_s: torch.Tensor | None = None,
                            w_t: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Binary domain loss and accuracy of discriminator logits ``d_s`` (N_s,), ``d_t`` (N_t,):

    .. math:: L = \tfrac12 \Big( \frac{\sum_i w^s_i\, \ell(d^s_i, 1)}{\sum_i w^s_i}
                  + \frac{\sum_j w^t_j\, \ell(d^t_j, 0)}{\sum_j w^t_j} \Big),
              \quad \ell(d, y) = -y \log\sigma(d) - (1 - y)\log(1 - \sigma(d))

    source labelled 1, target 0; weights default to 1 (each domain's mean), so unequal
    batch sizes weigh both domains alike. Accuracy: ``(acc_s + acc_t) / 2`` with the
    decision ``d > 0``, a detached 0-d tensor (0.5 = the domains cannot be told apart).
    """
    loss_s = F.binary_cross_entropy_with_logits(d_s, torch.ones_like(d_s), reduction="none")
    loss_t = F.binary_cross_entropy_with_logits(d_t, torch.zeros_like(d_t), reduction="none")
    loss = 0.5 * (_weighted_mean(loss_s, w_s) + _weighted_mean(loss_t, w_t))
    with torch.no_grad():
        accuracy = 0.5 * ((d_s > 0).float().mean() + (d_t <= 0).float().mean())
    return loss, accuracy


class DANNLoss(nn.Module):
    r"""DANN's domain loss: :math:`L_d(D(R_\lambda(f_s)), D(R_\lambda(f_t)))`.

    ``forward(f_s (N_s, D), f_t (N_t, D), w_s=None, w_t=None) -> (loss, domain_accuracy)``:
    both batches go through the gradient reversal ``self.grl`` and, concatenated (one
    batch, so a batch-norm discriminator sees both domains), through ``self.discriminator``;
    the loss is :func:`domain_adversarial_loss`. Minimising it trains ``D`` to separate the
    domains and, through the reversal, the feature extractor to confuse ``D``.

    ``discriminator``: any module (N, D) -> (N,) logits; default a
    :class:`~transferkit.adaptation.grl.DomainDiscriminator` on ``features_dim`` with
    ``hidden`` units. Set ``self.grl.coeff`` over training
    (:func:`~transferkit.adaptation.grl.warm_start_coefficient`).
    """

    def __init__(self, features_dim: int | None = None, discriminator: nn.Module | None = None,
                 hidden: int = 1024, coeff: float = 1.0):
        super().__init__()
        if discriminator is None:
            if features_dim is None:
                raise ConfigError("DANNLoss needs features_dim (the feature size) or a discriminator module")
            discriminator = DomainDiscriminator(features_dim, hidden)
        self.discriminator = discriminator
        self.grl = GradientReversal(coeff)

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor, w_s: torch.Tensor | None = None,
                w_t: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_rows("f_s", f_s)
        check_rows("f_t", f_t)
        d = self.discriminator(self.grl(torch.cat([f_s, f_t]))).reshape(-1)
        return domain_adversarial_loss(d[: len(f_s)], d[len(f_s):], w_s, w_t)


def _build(ctx):
    from transferkit.adaptation.alignment import AlignmentTerm

    return AlignmentTerm(DANNLoss(ctx.features_dim), ctx.weight)


METHOD = ADAPTATION.register(Method(
    name="dann", summary="domain-adversarial: a discriminator on the features, through gradient reversal (DANN)",
    build=_build, defaults={"trade_off": 1.0}))
