"""What every self-supervised method shares: a backbone, a loss of views, momentum targets."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn


#: Every method's defaults when --epochs/--lr are unset (AdamW): the papers' optimisers scaled down to CPU
#: budgets, not tuned here (benchmarks/RESULTS.md, "pretrain", says what was measured).
DEFAULTS = {"epochs": 20, "lr": 1e-3}


@dataclass
class SelfSupContext:
    """What a self-supervised entry's ``check`` and ``build`` read (the contract: :mod:`transferkit.selfsup`).

    ``backbone``: a timm model built with ``num_classes=0`` (images -> pooled features); ``pretrained``: it
    carries weights to keep (a method must not re-initialise it); ``options``: the entry's validated
    Options instance, or None; ``name``: the backbone's model name for messages (None: its class name).
    """

    backbone: Any
    pretrained: bool = False
    options: Any = None
    name: str | None = None

    @property
    def model_name(self) -> str:
        return self.name or type(self.backbone).__name__


class SelfSupervised(nn.Module):
    """Base class: ``backbone`` maps images to pooled features (a timm model with ``num_classes=0``).

    Subclasses implement ``forward(views, step, total) -> loss``; ``views`` is the list of batched
    views the method's transform (its entry's ``views`` trait, :func:`~transferkit.selfsup.method_views`)
    made of each image.
    """

    #: the method's name (``--method``)
    name = "base"

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.feature_dim = int(backbone.num_features)

    def after_backward(self, epoch: int) -> None:
        """Between ``backward()`` and the optimizer step (DINO cancels its last layer's gradients)."""


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` that follows it by exponential moving average (BYOL's and DINO's teacher)."""
    target = copy.deepcopy(module)
    deactivate_requires_grad(target)
    return target


def ema_step(pairs, step: int, total: int, start: float) -> None:
    """``target <- m target + (1 - m) online`` for each ``(online, target)``, with m rising from ``start`` to
    1 along a cosine over the K steps of training (BYOL, Grill et al. 2020; lightly's schedule:
    m = 1 - (1 - start)(cos(pi k / (K - 1)) + 1) / 2, so the last step has m = 1)."""
    m = cosine_schedule(step, max(total, 1), start, 1.0)
    for online, target in pairs:
        update_momentum(online, target, m=m)
