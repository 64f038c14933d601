"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) of a labelled batch, and their loss.

With ``lam ~ Beta(alpha, alpha)`` and a random pairing ``j = perm(i)`` of the batch:

* mixup: ``x_i <- lam x_i + (1 - lam) x_j``;
* cutmix: a box of area ``(1 - lam) H W`` (centre uniform, clipped at the borders) of ``x_j`` pasted
  into ``x_i``; ``lam`` becomes the uncovered fraction ``1 - box area / (H W)``;

and the loss is ``lam CE(logits, y_i) + (1 - lam) CE(logits, y_j)`` (:func:`mixed_cross_entropy`), label
smoothing and class weights applied inside each CE — without class weights, the same as cross-entropy on
the mixed soft target (``F.cross_entropy`` is linear in the target). With both alphas set, each batch is one or the other,
with probability 1/2 (timm's ``switch_prob`` 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Mixing:
    """``mixup`` / ``cutmix``: the Beta alphas (0: off)."""

    mixup: float = 0.0
    cutmix: float = 0.0

    @property
    def active(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0


def mixup(x: torch.Tensor, perm: torch.Tensor, lam: float) -> torch.Tensor:
    """``lam x + (1 - lam) x[perm]``."""
    return lam * x + (1 - lam) * x[perm]


def cutmix(x: torch.Tensor, perm: torch.Tensor, lam: float, cy: float, cx: float) -> tuple[torch.Tensor, float]:
    """Paste the box of ``x[perm]`` with centre ``(cy, cx)`` (fractions of H, W) and sides ``sqrt(1 - lam)``
    of H and W, clipped; returns the images and the uncovered fraction (the corrected ``lam``)."""
    h, w = x.shape[-2:]
    r = (1.0 - lam) ** 0.5
    bh, bw = int(h * r), int(w * r)
    y0, y1 = max(int(cy * h) - bh // 2, 0), min(int(cy * h) + bh - bh // 2, h)
    x0, x1 = max(int(cx * w) - bw // 2, 0), min(int(cx * w) + bw - bw // 2, w)
    out = x.clone()
    out[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    return out, 1.0 - (y1 - y0) * (x1 - x0) / (h * w)


def mix_batch(x: torch.Tensor, y: torch.Tensor, mixing: Mixing) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """``(mixed x, y_a, y_b, lam)`` for one batch (see the module docstring), drawn from torch's RNG."""
    use_cutmix = mixing.cutmix > 0 and (mixing.mixup <= 0 or torch.rand(()).item() < 0.5)
    alpha = mixing.cutmix if use_cutmix else mixing.mixup
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(len(x)).to(x.device)
    if use_cutmix:
        cy, cx = torch.rand(2).tolist()
        x, lam = cutmix(x, perm, lam, cy, cx)
    else:
        x = mixup(x, perm, lam)
    return x, y, y[perm], lam


def mixed_cross_entropy(logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam: float, *,
                        label_smoothing: float = 0.0, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``lam CE(logits, y_a) + (1 - lam) CE(logits, y_b)``, each with ``label_smoothing`` and ``weight``."""
    ce = lambda y: F.cross_entropy(logits, y, weight=weight, label_smoothing=label_smoothing)  # noqa: E731
    return lam * ce(y_a) + (1 - lam) * ce(y_b)
