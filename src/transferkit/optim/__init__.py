"""Optimizers and learning-rate schedules for fine-tuning.

* :func:`param_groups` splits parameters into optimizer groups, each carrying an
  ``lr_scale`` (discriminative learning rates, Q2) and no weight decay on norms
  and biases (1-d parameters).
* :func:`layer_lr_decay` gives layer groups (stem ... head) geometrically
  decreasing LR scales from the head down (discriminative / layer-wise LR, Q2).
* :func:`build_optimizer` makes AdamW (default) or SGD from those groups, once,
  with every group present from step 0 (the optimizer-built-once contract).
* :func:`warmup_cosine` is the default schedule: linear warmup, then cosine decay
  (Q10). The scale is applied per group through ``LambdaLR``, so each group keeps
  its own ``lr_scale`` relative to the base learning rate.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from transferkit.errors import ConfigError

OPTIMIZERS = ("adamw", "sgd")


@dataclass
class OptimSettings:
    """Optimizer and schedule settings (learning rate is the head's)."""

    lr: float = 1e-3
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1


def param_groups(
    groups: Sequence[tuple[str, nn.Module | Iterable[tuple[str, nn.Parameter]], float]],
    lr: float,
    weight_decay: float,
    no_weight_decay: Collection[str] = (),
) -> list[dict]:
    """Optimizer groups from ``(name, module_or_named_params, lr_scale)`` triples.

    Each triple becomes up to two torch param groups: one with ``weight_decay``
    and one without for 1-d tensors (norm weights, biases) — decaying those
    towards zero hurts fine-tuning. Groups named in ``no_weight_decay`` get no
    weight decay at all. Every group stores ``name`` and ``lr_scale``;
    its ``lr`` is ``lr * lr_scale``. Parameters are included even when frozen
    (``requires_grad=False``) so later unfreezing never adds groups.
    """
    out: list[dict] = []
    seen: set[int] = set()
    for name, source, scale in groups:
        named = source.named_parameters() if isinstance(source, nn.Module) else source
        decay, no_decay = [], []
        for pname, p in named:
            if id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if p.ndim <= 1 else decay).append(p)
        wd_group = 0.0 if name in no_weight_decay else weight_decay
        for params, wd, suffix in ((decay, wd_group, ""), (no_decay, 0.0, ".no_decay")):
            if params:
                out.append({"params": params, "weight_decay": wd, "lr": lr * scale,
                            "lr_scale": scale, "name": name + suffix})
    return out


def layer_lr_decay(
    groups: Sequence[tuple[str, Iterable[tuple[str, nn.Parameter]]]], decay: float,
) -> list[tuple[str, Iterable[tuple[str, nn.Parameter]], float]]:
    """Discriminative (layer-wise) learning rates: ``lr_scale = decay ** i``.

    ``groups`` are ordered bottom (stem) to top (head), as
    :func:`transferkit.backbones.groups.layer_groups` returns them; ``i`` counts
    from the top, so with L groups

        lr_i = lr · D^(L-1-k)   for the k-th group from the bottom,

    the head (last group) trains at the base ``lr`` and the stem at ``lr · D^(L-1)``
    (ULMFiT's discriminative fine-tuning, BEiT/timm's layer decay). ``0 < D <= 1``.
    Returns ``(name, params, lr_scale)`` triples for :func:`param_groups`.
    """
    if not 0 < decay <= 1:
        raise ConfigError(f"layer LR decay must be in (0, 1], got {decay}")
    top = len(groups) - 1
    return [(name, params, decay ** (top - k)) for k, (name, params) in enumerate(groups)]


def build_optimizer(groups: list[dict], name: str = "adamw", lr: float = 1e-3,
                    momentum: float = 0.9) -> torch.optim.Optimizer:
    """AdamW (default) or SGD with Nesterov momentum over prepared ``groups``."""
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    raise ConfigError(f"unknown optimizer '{name}'; choose one of: {', '.join(OPTIMIZERS)}")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_factor: float = 0.01) -> float:
    """LR factor at ``step``: linear warmup from ~0 to 1 over ``warmup_steps``,
    then cosine decay to ``min_factor`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(optimizer: torch.optim.Optimizer, total_steps: int,
                            warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` applying :func:`warmup_cosine` to every group's own initial LR."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total_steps, warmup_steps))
