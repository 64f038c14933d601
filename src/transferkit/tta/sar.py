"""SAR: sharpness-aware and reliable entropy minimisation (Niu et al., ICLR 2023, "Towards Stable
Test-Time Adaptation in Dynamic Wild World").

TENT's objective on the normalisation affine parameters theta, made stable for small batches, mixed
shifts and imbalanced label streams by three changes. On a batch with entropies H(x) of the
predictions p = softmax(f_theta(x)), C classes:

    (i)   reliable samples:   S = {x : H(x) < E0},   E0 = margin * ln C   (margin 0.4)
          L(theta) = mean_{x in S} H(x)
    (ii)  sharpness-aware step (SAM, Foret et al. 2021), radius rho = 0.05:
          eps = rho * g / ||g||,   g = grad L(theta)        (||.||: the 2-norm over all of theta)
          S'  = {x in S : H_{theta+eps}(x) < E0}             (still reliable at the perturbed point)
          theta <- optimizer step on theta with the gradient grad_theta mean_{x in S'} H_{theta+eps}(x)
    (iii) model recovery:   e_m <- 0.9 e_m + 0.1 L'   (L' = mean_{x in S'} H_{theta+eps}(x); the first
          e_m = L');   when e_m < e0 = 0.2 the parameters, statistics and optimizer go back to their
          initial state (a collapsed model predicts one class with near-zero entropy).

A batch with no reliable sample (S or S' empty) makes no update. The batch is predicted by the first
forward pass, before its update (as TENT's and SAR's code). With BatchNorm the layers normalise as
TENT's do (:class:`~transferkit.tta.bn.PriorBatchNorm`); the second, perturbed, pass does not count in
their stream statistics.

Differences from the paper's code, both for simplicity: every normalisation affine parameter adapts
(the paper leaves out the deepest blocks' norms: ResNet's layer4, ViT's last three blocks), and a
recovery restarts the moving average (the code keeps the value that triggered it, so it may reset
again on the next batch). The paper's optimizer is SGD, momentum 0.9, lr 2.5e-4 * B / 64 (BatchNorm/
GroupNorm ResNets) or 1e-3 * B / 64 (ViT): ``--optimizer sgd --lr ...``; the SAM step wraps any optimizer.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from pydantic import Field
from torch import nn

from transferkit.registry import TTA, Method, Options
from transferkit.tta.bn import MEASURED_PRIOR, PriorBatchNorm
from transferkit.tta.tent import Tent, entropy, require_norm_affine


class SAROptions(Options):
    """``--sar-rho``, ``--sar-margin``, ``--sar-reset-threshold`` (the paper's values by default)."""

    rho: float = Field(0.05, gt=0, description="SAM radius: the perturbation is rho * g / ||g||")
    margin: float = Field(0.4, gt=0, description="reliable samples: entropy < margin * ln C")
    reset_threshold: float = Field(0.2, ge=0, description="recover (reset) when the moving average of the "
                                   "entropy falls below it (0: never)")


def reliable(logits: torch.Tensor, e0: float) -> torch.Tensor:
    """Boolean mask (B,) of the samples whose prediction entropy is below ``e0``."""
    return entropy(logits).detach() < e0


def ema_update(average: float | None, value: float, momentum: float = 0.9) -> float:
    """``momentum * average + (1 - momentum) * value``; the first value starts the average."""
    return value if average is None else momentum * average + (1 - momentum) * value


@torch.no_grad()
def sam_perturb(params: list[nn.Parameter], rho: float) -> list[torch.Tensor]:
    """Move each parameter by ``rho * g / ||g||`` (g: its ``.grad``, the norm over all of them); returns the
    values before the move (for :func:`sam_restore`)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = rho / (norm + 1e-12)
    before = [p.detach().clone() for p in params]
    for p, g in zip(params, grads):
        p.add_(g * scale)
    return before


@torch.no_grad()
def sam_restore(params: list[nn.Parameter], before: list[torch.Tensor]) -> None:
    for p, b in zip(params, before):
        p.copy_(b)


@contextmanager
def stream_statistics_kept(model: nn.Module):
    """The :class:`PriorBatchNorm` stream averages (what ``--save`` writes) as they were before the block."""
    layers = [m for m in model.modules() if isinstance(m, PriorBatchNorm)]
    saved = [(m.stream_mean.clone(), m.stream_var.clone(), m.batches.clone()) for m in layers]
    try:
        yield
    finally:
        for m, (mean, var, batches) in zip(layers, saved):
            m.stream_mean.copy_(mean), m.stream_var.copy_(var), m.batches.copy_(batches)


class SAR(Tent):
    """Wrap a trained classifier for SAR (the module docstring); ``forward(x) -> logits`` predicts and adapts.
    ``kept``/``seen`` count the samples reliable at the first pass and all samples; ``ema`` is the moving
    average of the entropy loss (None before the first update, and after a recovery); ``resets`` counts
    the recoveries."""

    def __init__(self, model: nn.Module, num_classes: int, *, lr: float = 1e-3, steps: int = 1,
                 episodic: bool = False, optimizer: str = "adam", bn_prior: float = 0.0, rho: float = 0.05,
                 margin: float = 0.4, reset_threshold: float = 0.2):
        super().__init__(model, lr=lr, steps=steps, episodic=episodic, optimizer=optimizer, bn_prior=bn_prior)
        self.rho, self.e0, self.reset_threshold = rho, margin * math.log(num_classes), reset_threshold
        self.ema: float | None = None
        self.kept = self.seen = self.resets = 0

    @torch.enable_grad()
    def adapt_step(self, x: torch.Tensor) -> torch.Tensor:
        """Predict, then one SAM update on the reliable samples; recover if the moving average collapsed."""
        logits = self.model(x)
        keep = reliable(logits, self.e0)
        self.kept, self.seen = self.kept + int(keep.sum()), self.seen + len(keep)
        if keep.any():
            entropy(logits[keep]).mean().backward()
            loss = self.sharp_step(x, keep)
            if loss is not None:
                self.ema = ema_update(self.ema, loss)
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None and self.ema < self.reset_threshold:
            self.reset()
            self.resets += 1
        return logits.detach()

    def sharp_step(self, x: torch.Tensor, kept: torch.Tensor) -> float | None:
        """With the first gradient in ``.grad``: perturb, take the gradient on the ``kept`` samples still
        reliable there (the whole batch goes through: BatchNorm sees the same batch), restore, step.
        Returns that loss, or None when no sample is still reliable."""
        before = sam_perturb(self.params, self.rho)
        self.optimizer.zero_grad(set_to_none=True)
        with stream_statistics_kept(self.model):
            ent = entropy(self.model(x))[kept]
        keep = ent.detach() < self.e0
        if keep.any():
            loss = ent[keep].mean()
            loss.backward()
        sam_restore(self.params, before)
        if not keep.any():
            return None
        self.optimizer.step()
        return float(loss.detach())

    def reset(self) -> None:
        super().reset()
        self.ema = None


def build(ctx) -> SAR:
    options = ctx.options or SAROptions()
    return SAR(ctx.model, ctx.num_classes, lr=ctx.lr, steps=ctx.steps, episodic=ctx.episodic,
               optimizer=ctx.optimizer, bn_prior=ctx.bn_prior, **options.model_dump())


#: bn_prior: the strength tent and eata use (measured with bn, tta/bn.py); not measured for sar. Out of the
#: default line-up until benchmarks/RESULTS.md has measured it.
METHOD = TTA.register(Method(
    name="sar", summary="SAR: entropy minimisation on reliable samples with a sharpness-aware step and "
                        "model recovery",
    build=build, check=lambda ctx: require_norm_affine(ctx.model, "sar"), defaults={"bn_prior": MEASURED_PRIOR},
    options=SAROptions, in_lineup=False))
