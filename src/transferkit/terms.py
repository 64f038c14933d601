"""Composable loss terms: one training step, one sum.

A training step computes once what the terms read (:class:`Step`, lazily: a term that needs the
target's features makes them be computed, a step without one does not), then

    loss = task_weight * CE(logits of the labelled images, y) + sum_k term_k(step)

where each :class:`Term` returns ``(weighted loss, logs)``. Regularisers (L2-SP, LwF, co-tuning,
BSS), domain alignment (DANN, CDAN, DAN, CORAL, MCC, self-training) and distillation (soft, hard,
token, feature hints, DKD) are all terms; :class:`transferkit.engine.module.TransferModule` sums them.

Plain PyTorch: usable in any loop::

    step = Step(model, x, y, x_t=target_images, progress=i / total)
    loss = F.cross_entropy(step.logits, y) + sum(term(step)[0] for term in terms)
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import torch
from torch import nn


class Step:
    """The tensors of one training step, computed on first use and shared by every term.

    ``x``/``y``: the labelled images and labels (``y = -1``: an image without a label); ``x_t``: the
    unlabelled (target) images, or None; ``progress``: ``global step / total steps`` in [0, 1];
    ``extra``: anything else the batch carried (e.g. ``teacher_logits`` cached once).
    The labelled and unlabelled images go through the network in one forward pass (BatchNorm sees both).
    """

    def __init__(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, x_t: torch.Tensor | None = None,
                 progress: float = 0.0, extra: dict[str, Any] | None = None):
        self.net, self.x, self.y, self.x_t = net, x, y, x_t
        self.n, self.progress, self.extra = len(x), float(progress), dict(extra or {})

    @property
    def inputs(self) -> torch.Tensor:
        return self.x if self.x_t is None else torch.cat([self.x, self.x_t])

    @cached_property
    def maps(self) -> torch.Tensor:
        """``net.forward_features`` of every image (labelled first)."""
        return self.net.forward_features(self.inputs)

    @cached_property
    def _head(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not hasattr(self.net, "forward_features"):      # a bare head on cached features
            return self.net(self.inputs), None
        out = self.net.forward_head(self.maps)
        return (out[0], out[1]) if isinstance(out, tuple) else (out, None)

    @cached_property
    def all_features(self) -> torch.Tensor:
        """Pooled pre-logits features of every image, as the head sees them."""
        if not hasattr(self.net, "forward_features"):
            return self.inputs
        return self.net.forward_head(self.maps, pre_logits=True)

    @property
    def all_logits(self) -> torch.Tensor:
        return self._head[0]

    @property
    def logits(self) -> torch.Tensor:
        """The labelled images' logits (the class head's, for a two-head distilled ViT)."""
        return self.all_logits[: self.n]

    @property
    def aux_logits(self) -> torch.Tensor | None:
        """A second head's logits (a distilled ViT's distillation head), labelled images; None without one."""
        aux = self._head[1]
        return None if aux is None else aux[: self.n]

    @property
    def features(self) -> torch.Tensor:
        return self.all_features[: self.n]

    @property
    def target_logits(self) -> torch.Tensor | None:
        return None if self.x_t is None else self.all_logits[self.n:]

    @property
    def target_features(self) -> torch.Tensor | None:
        return None if self.x_t is None else self.all_features[self.n:]

    @property
    def labelled(self) -> torch.Tensor:
        """Mask of the images that carry a label."""
        return self.y >= 0


class Term(nn.Module):
    """One loss term: ``forward(step) -> (weight * loss(step), logs)``.

    Subclasses implement :meth:`loss` (a 0-d tensor, or ``(tensor, {name: value})``). ``name`` keys the
    logged value (``<name>_loss``). ``rebuilt`` names submodules (a frozen teacher, pretrained weights)
    that are not checkpointed: the command rebuilds them on resume. Trainable parameters of a term
    (a domain discriminator, a hint projection) train at the head's learning rate.
    """

    rebuilt: tuple[str, ...] = ()

    def __init__(self, name: str, weight: float = 1.0):
        super().__init__()
        self.name, self.weight = name, float(weight)

    def loss(self, step: Step):
        raise NotImplementedError

    def on_step(self, step: Step) -> None:
        """Before the loss, every step (e.g. a gradient reversal's schedule over ``step.progress``)."""

    def forward(self, step: Step) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.on_step(step)
        out = self.loss(step)
        value, logs = out if isinstance(out, tuple) else (out, {})
        return self.weight * value, {f"{self.name}_loss": value.detach(), **logs}

    def extra_repr(self) -> str:
        return f"name={self.name!r}, weight={self.weight:g}"


__all__ = ["Step", "Term"]
