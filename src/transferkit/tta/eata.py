"""EATA: efficient test-time adaptation without forgetting (Niu et al., ICML 2022).

TENT's objective, restricted to the test samples worth learning from, plus a penalty that keeps the
adapted parameters near the source ones where they matter for clean inputs::

    keep x  iff  H(x) < E0                       (reliable: E0 = margin * ln C, margin 0.4)
            and  |cos(p(x), m)| < d              (not redundant: m = EMA of kept predictions)
    loss = sum_{x kept} H(x) / exp(H(x) - E0) / B  +  beta * sum_i F_i (theta_i - theta0_i)^2

``F`` is the diagonal Fisher information of the normalisation affine parameters theta on clean
in-distribution images, with the model's own predictions as labels (no labels needed); without
clean images ``beta`` = 0 and the method is the paper's ETA. A batch with no kept sample makes no
update.

The paper's d = 0.05 is for ImageNet's 1000 classes: with 10 classes the cosine between a confident
prediction and a near-uniform mean is about 1/sqrt(10) = 0.32, so d = 0.05 would drop nearly every
sample; the default d = 0.4 is the CIFAR-10 setting of the public TTA benchmarks. Unreliable samples are what drives TENT to collapse on long or mixed streams and on small
batches, and the Fisher penalty keeps clean accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from transferkit.registry import TTA, Method, Options
from transferkit.tta.bn import MEASURED_PRIOR
from transferkit.tta.tent import Tent, entropy, norm_affine_params, require_norm_affine


def fisher_diagonal(model: nn.Module, batches: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """For each normalisation affine parameter of ``model`` (eval mode: on clean images the source
    statistics apply), the mean over ``batches`` of the squared gradient of CE(f(x), argmax f(x))."""
    params = [p.requires_grad_(True) for p in norm_affine_params(model.eval())]
    sums, count = [torch.zeros_like(p) for p in params], 0
    with torch.enable_grad():
        for x in batches:
            logits = model(x)
            loss = F.cross_entropy(logits, logits.argmax(1).detach())
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for s, g in zip(sums, grads):
                if g is not None:
                    s += g.detach() ** 2
            count += 1
    return [s / max(count, 1) for s in sums]


class EATA(Tent):
    """Wrap a trained classifier for EATA; ``forward(x) -> logits`` predicts and adapts (see
    :class:`Tent` for when a batch is predicted). ``fisher``: the diagonal Fisher of the model's
    normalisation affine parameters (:func:`fisher_diagonal` on clean images, in the order of
    :func:`~transferkit.tta.tent.norm_affine_params`); None: ETA, no penalty. ``kept`` and ``seen``
    count the samples that passed both filters and all samples."""

    def __init__(self, model: nn.Module, num_classes: int, *, lr: float = 1e-3, steps: int = 1,
                 episodic: bool = False, optimizer: str = "adam", bn_prior: float = 0.0,
                 margin: float = 0.4, d_margin: float = 0.4, fisher_beta: float = 2000.0,
                 fisher: list[torch.Tensor] | None = None):
        super().__init__(model, lr=lr, steps=steps, episodic=episodic, optimizer=optimizer, bn_prior=bn_prior)
        if fisher is not None and len(fisher) != len(self.params):
            raise ValueError(f"fisher has {len(fisher)} tensors for {len(self.params)} parameters")
        self.fisher = None if fisher is None or fisher_beta == 0 else [fisher_beta * f for f in fisher]
        self.anchor = [p.detach().clone() for p in self.params]
        self.e0, self.d_margin = margin * math.log(num_classes), d_margin
        self.mean_probs: torch.Tensor | None = None
        self.kept, self.seen = 0, 0

    def reset(self) -> None:
        super().reset()
        self.mean_probs = None

    def select(self, logits: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the reliable, non-redundant samples; updates the moving prediction mean."""
        ent = entropy(logits).detach()
        probs = logits.detach().softmax(1)
        keep = ent < self.e0
        if self.mean_probs is not None and keep.any():
            cos = F.cosine_similarity(self.mean_probs.unsqueeze(0), probs, dim=1)
            keep &= cos.abs() < self.d_margin
        if keep.any():
            batch_mean = probs[keep].mean(0)
            self.mean_probs = batch_mean if self.mean_probs is None else 0.9 * self.mean_probs + 0.1 * batch_mean
        self.kept, self.seen = self.kept + int(keep.sum()), self.seen + len(keep)
        return keep

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        keep = self.select(logits)
        ent = entropy(logits)
        weights = torch.exp(-(ent.detach() - self.e0))
        loss = (ent * weights * keep).sum() / len(logits)
        if self.fisher is not None:
            loss = loss + sum((f * (p - a) ** 2).sum() for f, p, a in zip(self.fisher, self.params, self.anchor))
        if not keep.any():
            return loss.detach()  # no reliable sample: no update
        return loss


class EATAOptions(Options):
    """``--eata-margin``, ``--eata-d-margin``, ``--eata-fisher-beta`` (the module docstring says where each is from)."""

    margin: float = Field(0.4, gt=0, description="reliable: entropy < margin * ln C (the paper's 0.4)")
    d_margin: float = Field(0.4, gt=0, le=1, description="non-redundant: |cos(p, mean p)| < d (0.4: CIFAR-10's)")
    fisher_beta: float = Field(2000.0, ge=0, description="weight of the Fisher anti-forgetting penalty "
                               "(the paper's 2000; 0: ETA)")


def build(ctx) -> EATA:
    options = ctx.options or EATAOptions()
    return EATA(ctx.model, ctx.num_classes, lr=ctx.lr, steps=ctx.steps, episodic=ctx.episodic,
                optimizer=ctx.optimizer, bn_prior=ctx.bn_prior, fisher=ctx.fisher, **options.model_dump())


METHOD = TTA.register(Method(
    name="eata", summary="EATA: TENT on reliable, non-redundant samples + Fisher anti-forgetting penalty",
    build=build, check=lambda ctx: require_norm_affine(ctx.model, "eata"), defaults={"bn_prior": MEASURED_PRIOR},
    options=EATAOptions, traits={"needs_fisher": True}))
