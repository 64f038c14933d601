"""BSS, Batch Spectral Shrinkage (Chen, Wang, Fu, Long & Wang, NeurIPS 2019, "Catastrophic Forgetting
Meets Negative Transfer: Batch Spectral Shrinkage for Safe Transfer Learning").

Fine-tuning transfers, besides what helps the target task, spectral components of the pretrained
features that do not (negative transfer); the paper finds these in the *smallest* singular values of
the batch's feature matrix. BSS shrinks them::

    F = U diag(sigma_1 >= ... >= sigma_m) V^T          (B x D pre-logits features, m = min(B, D))
    L_bss = eta * sum_{i=1..k} sigma_{-i}^2             (the k smallest singular values)

Paper / reference (tllib's ``BatchSpectralShrinkage``) defaults: k = 1, eta = 0.001. The penalty
reads the pooled pre-logits features of the labelled batch (``step.features``), so it needs a
backbone that trains (``traits={"needs_backbone": True}``).
"""

from __future__ import annotations

import torch
from pydantic import Field

from transferkit.registry import REGULARIZERS, Method, Options
from transferkit.terms import Step, Term


def bss_penalty(features: torch.Tensor, k: int = 1) -> torch.Tensor:
    """``sum of the k smallest sigma_i^2`` of ``features`` (B, D); all ``min(B, D)`` of them when
    ``k`` exceeds that. Half precision is computed in float32 (SVD has no half kernel); differentiable."""
    if features.ndim != 2:
        raise ValueError(f"features must be (batch, dim), got {tuple(features.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if features.dtype not in (torch.float32, torch.float64):
        features = features.float()
    sigma = torch.linalg.svdvals(features)     # descending
    return (sigma[-k:] ** 2).sum()


class BSSOptions(Options):
    """``k``: how many of the smallest singular values are shrunk; ``weight``: eta."""

    k: int = Field(1, ge=1)
    weight: float = Field(0.001, ge=0.0)


class BatchSpectralShrinkage(Term):
    """``eta * bss_penalty(step.features, k)`` as a loss term (name ``reg``)."""

    def __init__(self, k: int = 1, weight: float = 0.001):
        super().__init__("reg", weight)
        self.k = int(k)

    def loss(self, step: Step) -> torch.Tensor:
        return bss_penalty(step.features, self.k)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, k={self.k}"


def build(ctx) -> BatchSpectralShrinkage:
    opts = getattr(ctx, "options", None) or BSSOptions()
    return BatchSpectralShrinkage(opts.k, opts.weight)


METHOD = REGULARIZERS.register(Method(
    name="bss", summary="batch spectral shrinkage: shrink the k smallest singular values of the batch's features",
    build=build, options=BSSOptions, traits={"needs_backbone": True}))
