"""Classifier heads: replace the head for N classes and split head/backbone parameters (Q3, Q18).

Every timm model ends in ``features -> global pool -> classifier``. The head is the
module returned by ``model.get_classifier()``; replacing it keeps the global pooling,
so a CNN still accepts any input resolution.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from transferkit.errors import ModelError


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Replace the classifier with a freshly initialised ``num_classes``-way head, in place.

    Uses timm's ``reset_classifier``: logits ``y = W·pool(f(x)) + b`` with
    ``W ∈ R^{N×D}`` (``D = model.num_features``) newly initialised; the pooling and
    every backbone weight are left untouched. ``num_classes=0`` removes the head
    (``nn.Identity``), so ``model(x)`` returns pooled features of shape ``(B, D)``.
    Returns ``model``.
    """
    if not hasattr(model, "reset_classifier"):
        raise ModelError(f"{type(model).__name__} has no reset_classifier(); use a timm model")
    if num_classes < 0:
        raise ModelError(f"num_classes must be >= 0, got {num_classes}")
    model.reset_classifier(num_classes)
    return model


def _head_modules(model: nn.Module) -> list[nn.Module]:
    head = model.get_classifier()
    return list(head) if isinstance(head, tuple) else [head]  # distilled ViTs: (head, head_dist)


def head_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """Parameters of the classifier (``model.get_classifier()``)."""
    for module in _head_modules(model):
        yield from module.parameters()


def backbone_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """Every parameter that is not in the classifier."""
    head = {id(p) for p in head_parameters(model)}
    return (p for p in model.parameters() if id(p) not in head)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (each shared tensor counted once); only ``requires_grad`` ones if asked."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def split_head(model: nn.Module) -> tuple[list[tuple[str, nn.Parameter]], list[tuple[str, nn.Parameter]]]:
    """(backbone, head) named parameters of a timm model; head = ``get_classifier()``."""
    head_ids = {id(p) for p in head_parameters(model)}
    backbone, head = [], []
    for name, p in model.named_parameters():
        (head if id(p) in head_ids else backbone).append((name, p))
    return backbone, head
