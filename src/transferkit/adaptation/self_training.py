"""Self-training for domain adaptation: FixMatch's pseudo-labels with AdaMatch's refinements
(Berthelot, Roelofs, Sohn, Carlini & Kurakin, "AdaMatch: A Unified Approach to Semi-Supervised
Learning and Domain Adaptation", ICLR 2022).

The weakly augmented target view gives pseudo-labels (no gradient), the strongly augmented view of
the same images learns them. AdaMatch's three changes to FixMatch for a shifted target:

* distribution alignment -- the target probabilities are rescaled to the source's class marginal
  (:func:`distribution_alignment`);
* a relative confidence threshold -- ``tau`` times the source batch's mean confidence, so the
  threshold follows how confident the model is (:func:`relative_threshold`);
* a warm-up of the unlabelled loss weight over training (:func:`warmup_weight`).

Use it as ``loss = CE(source) + trade_off * warmup_weight(t) * self_training_loss(...)[0]``.
(AdaMatch's random logit interpolation and its strong source view are not part of this block.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from transferkit.errors import DataError
from transferkit.registry import ADAPTATION, Method, Options
from transferkit.terms import Step, Term

__all__ = ["METHOD", "SelfTrainingOptions", "SelfTrainingTerm", "adamatch_loss", "distribution_alignment",
           "relative_threshold", "self_training_loss", "warmup_weight"]


def distribution_alignment(p_target: torch.Tensor, p_source: torch.Tensor) -> torch.Tensor:
    r"""AdaMatch's distribution alignment of target probabilities ``p_target`` (N_t, C) to the class
    marginal of source probabilities ``p_source`` (N_s, C):

    .. math:: \tilde p_t = \mathrm{normalize}\Big(p_t \odot \frac{\mathbb E[p_s]}{\mathbb E[p_t]}\Big),
              \qquad \mathrm{normalize}(v) = v / \textstyle\sum_k v_k

    the expectations are batch means (per class); each row of the result sums to 1.
    """
    if p_target.ndim != 2 or p_source.ndim != 2 or p_target.shape[1] != p_source.shape[1]:
        raise DataError(f"p_target and p_source must be (N, C) with the same C, got "
                        f"{tuple(p_target.shape)}, {tuple(p_source.shape)}")
    tiny = torch.finfo(p_target.dtype).tiny
    ratio = p_source.mean(0) / p_target.mean(0).clamp_min(tiny)
    scaled = p_target * ratio
    return scaled / scaled.sum(1, keepdim=True).clamp_min(tiny)


def relative_threshold(p_source: torch.Tensor, tau: float = 0.9) -> torch.Tensor:
    r"""AdaMatch's relative confidence threshold :math:`c_\tau = \tau \cdot \frac1{N_s}\sum_i \max_k
    p_s(i, k)`: ``tau`` times the source batch's mean top-class probability (a 0-d tensor)."""
    return tau * p_source.max(1).values.mean()


def self_training_loss(strong_logits: torch.Tensor, p_target: torch.Tensor,
                       threshold: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The masked pseudo-label loss over the N_t target images:

    .. math:: L = \frac1{N_t} \sum_i \mathbb 1[\max_k \tilde p_t(i,k) \ge c]\;
              \mathrm{CE}\big(z^{strong}_i, \arg\max_k \tilde p_t(i,k)\big)

    ``strong_logits`` (N_t, C): the strongly augmented view's logits (the gradient flows through
    them only); ``p_target`` (N_t, C): the (aligned) probabilities of the weak view, which enter
    through an argmax and a comparison only (fixed targets, no gradient); ``threshold``: :math:`c`. Returns ``(loss, mask)``, mask (N_t,) boolean.
    """
    if strong_logits.shape != p_target.shape:
        raise DataError(f"the strong view's logits {tuple(strong_logits.shape)} and the weak view's "
                        f"probabilities {tuple(p_target.shape)} must have the same shape (same images, same order)")
    confidence, pseudo = p_target.max(1)
    mask = confidence >= threshold
    ce = F.cross_entropy(strong_logits, pseudo, reduction="none")
    return (ce * mask).mean(), mask


def warmup_weight(progress: float) -> float:
    r"""AdaMatch's unlabelled-loss warm-up :math:`\mu(t) = \frac12 - \frac12\cos(\min(\pi, 2\pi t))`,
    ``t`` = progress in [0, 1]: 0 at the start, 1/2 at a quarter, 1 from half-way on."""
    return 0.5 - math.cos(min(math.pi, 2 * math.pi * float(progress))) / 2


def adamatch_loss(source_logits: torch.Tensor, target_logits: torch.Tensor, strong_logits: torch.Tensor,
                  tau: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`self_training_loss` of the strong view with pseudo-labels from the weak view's logits
    (``target_logits``), distribution-aligned to and thresholded relative to the labelled source
    batch's predictions (``source_logits``). Source and weak-target logits are detached. ``(loss, mask)``."""
    p_source = F.softmax(source_logits.detach(), dim=1)
    p_target = distribution_alignment(F.softmax(target_logits.detach(), dim=1), p_source)
    return self_training_loss(strong_logits, p_target, relative_threshold(p_source, tau))


class SelfTrainingTerm(Term):
    """The ``align`` term: ``weight * warmup_weight(step.progress) * adamatch_loss(...)``.

    Reads the source logits (``step.logits``), the weak target view's logits (``step.target_logits``)
    and the strong view ``step.extra["x_t_strong"]`` (same images, same order), whose logits come from
    a second forward pass ``step.net(x_t_strong)``. Logs ``mask_rate``: the fraction of target images
    whose pseudo-label passed the threshold. (No pseudo-label accuracy: target labels are not used.)
    """

    def __init__(self, tau: float = 0.9, weight: float = 1.0):
        super().__init__("align", weight)
        self.tau = float(tau)

    def loss(self, step: Step):
        strong = step.extra.get("x_t_strong")
        if step.target_logits is None or strong is None:
            raise DataError("self-training needs the target batch's weak view (x_t) and its strongly "
                            "augmented view (extra['x_t_strong']) in the step")
        strong_logits = step.net(strong)
        if isinstance(strong_logits, tuple):      # a two-head model: the class head
            strong_logits = strong_logits[0]
        loss, mask = adamatch_loss(step.logits, step.target_logits, strong_logits, self.tau)
        return warmup_weight(step.progress) * loss, {"mask_rate": mask.float().mean()}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, tau={self.tau:g}"


class SelfTrainingOptions(Options):
    """``--self-training-tau``: the relative confidence threshold's factor (AdaMatch: 0.9)."""

    tau: float = Field(0.9, gt=0, le=1)


def _build(ctx) -> SelfTrainingTerm:
    options = ctx.options or SelfTrainingOptions()
    return SelfTrainingTerm(options.tau, weight=ctx.weight)


METHOD = ADAPTATION.register(Method(
    name="self-training",
    summary="pseudo-labels of the weak target view train the strong view (AdaMatch, Berthelot et al. 2022)",
    build=_build,
    defaults={"trade_off": 1.0},
    options=SelfTrainingOptions,
    traits={"uses_target_labels": False, "target_views": ("weak", "strong")},
))
