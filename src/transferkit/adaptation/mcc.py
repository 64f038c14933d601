"""MCC: Minimum Class Confusion (Jin, Wang, Long & Wang, "Minimum Class Confusion for Versatile
Domain Adaptation", ECCV 2020).

No discriminator and no source statistics: the loss reads the target predictions alone and
penalises probability mass that two classes share on the same target images (class confusion).
Use it as ``loss = task_loss(source) + trade_off * mcc_loss(target_logits)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from transferkit.adaptation.cdan import entropy_weights
from transferkit.errors import DataError
from transferkit.registry import ADAPTATION, Method, Options
from transferkit.terms import Step, Term

__all__ = ["MCC", "METHOD", "MCCOptions", "MCCTerm", "class_confusion", "mcc_loss"]


def class_confusion(target_logits: torch.Tensor, temperature: float = 2.5) -> torch.Tensor:
    r"""MCC's category-normalised class-confusion matrix (C, C) of target logits ``Z`` (B, C):

    .. math::
        \hat Y = \mathrm{softmax}(Z / T), \qquad
        W_{ii} = \frac{B\,(1 + e^{-H(\hat y_i)})}{\sum_{i'} (1 + e^{-H(\hat y_{i'})})}, \qquad
        C = \hat Y^\top W \hat Y, \qquad
        \tilde C_{jj'} = \frac{C_{jj'}}{\sum_{j''} C_{j''j'}}

    :math:`H` is the entropy (confident images weigh more); the weights are detached (they only
    weigh the images, as in the authors' code and tllib). :math:`C` is symmetric, so dividing each
    column by its sum is the paper's category normalisation; every column of :math:`\tilde C` sums
    to 1. A column whose sum underflows to 0 (a class with no probability mass at all) stays 0.
    """
    if target_logits.ndim != 2 or len(target_logits) == 0:
        raise DataError(f"MCC needs target logits of shape (B, C), B >= 1, got {tuple(target_logits.shape)}")
    y = F.softmax(target_logits / temperature, dim=1)
    w = entropy_weights(y.detach())
    w = len(y) * w / w.sum()
    c = (y * w[:, None]).T @ y
    return c / c.sum(0, keepdim=True).clamp_min(torch.finfo(c.dtype).tiny)


def mcc_loss(target_logits: torch.Tensor, temperature: float = 2.5) -> torch.Tensor:
    r"""MCC loss :math:`L = \frac{1}{|\mathcal C|} \sum_j \sum_{j' \ne j} |\tilde C_{jj'}|` of target
    logits (B, C), :math:`\tilde C` = :func:`class_confusion`; a 0-d tensor, differentiable in the logits.

    In [0, (C-1)/C]: 0 when every image is predicted one-hot (no two classes share an image),
    (C-1)/C for uniform predictions. :math:`\tilde C \ge 0`, so no absolute value is needed; the
    off-diagonal entries are summed directly (total minus trace loses them to rounding when small).
    """
    c = class_confusion(target_logits, temperature)
    off = ~torch.eye(c.shape[0], dtype=torch.bool, device=c.device)
    return c[off].sum() / c.shape[0]


class MCC(nn.Module):
    """:func:`mcc_loss` as a module: ``MCC(temperature)(target_logits)``."""

    def __init__(self, temperature: float = 2.5):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"MCC's temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, target_logits: torch.Tensor) -> torch.Tensor:
        return mcc_loss(target_logits, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}"


class MCCTerm(Term):
    """The ``align`` term: ``weight * mcc_loss(step.target_logits)`` (the unlabelled target batch)."""

    def __init__(self, temperature: float = 2.5, weight: float = 1.0):
        super().__init__("align", weight)
        self.mcc = MCC(temperature)

    def loss(self, step: Step) -> torch.Tensor:
        if step.target_logits is None:
            raise DataError("MCC needs unlabelled target images in the step (x_t); got a step without them")
        return self.mcc(step.target_logits)


class MCCOptions(Options):
    """``--mcc-temperature``: the softmax temperature T of the target predictions (the paper: 2.5)."""

    temperature: float = Field(2.5, gt=0)


def _build(ctx) -> MCCTerm:
    options = ctx.options or MCCOptions()
    return MCCTerm(options.temperature, weight=ctx.weight)


METHOD = ADAPTATION.register(Method(
    name="mcc",
    summary="Minimum Class Confusion: penalise classes sharing the target predictions (Jin et al. 2020)",
    build=_build,
    defaults={"trade_off": 1.0},
    options=MCCOptions,
    traits={"uses_target_labels": False, "target_views": ("weak",)},
))
