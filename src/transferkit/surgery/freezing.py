"""Freezing parts of a model, and the frozen-BatchNorm policy (Q1, Q7, Q17).

Frozen BatchNorm means both: the BN module runs in eval mode (it normalises with
its stored running statistics and never updates them) *and* its affine weight and
bias do not train. ``model.train()`` silently switches BN back to training mode,
so the eval mode must be re-applied after every ``train()`` call — the engine does
that through :func:`reapply_frozen`. ``track_running_stats=False`` is never used:
it would throw away the pretrained statistics.

The BN policy (``--bn``) of the strategies that train the backbone is
:func:`resolve_bn_policy`: ``train``, ``freeze``, or ``auto`` — freeze when the
per-device batch is smaller than :data:`BN_AUTO_FREEZE_BELOW`.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from transferkit.errors import ConfigError

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
BN_POLICIES = ("auto", "train", "freeze")
#: ``--bn auto`` freezes BatchNorm below this per-device batch size: batch statistics
#: of fewer images are too noisy to beat the pretrained running statistics (Q7).
BN_AUTO_FREEZE_BELOW = 16


def set_trainable(module: nn.Module, trainable: bool) -> nn.Module:
    """Set ``requires_grad`` on every parameter of ``module``."""
    for p in module.parameters():
        p.requires_grad_(trainable)
    return module


def batchnorm_modules(module: nn.Module) -> list[nn.Module]:
    """All BatchNorm layers inside ``module`` (timm's BatchNormAct2d included)."""
    return [m for m in module.modules() if isinstance(m, BN_TYPES)]


def freeze_batchnorm(module: nn.Module) -> list[nn.Module]:
    """Freeze every BN layer in ``module`` (eval mode, affine params frozen).

    Returns the frozen layers; pass them to :func:`reapply_frozen` after each
    ``model.train()``.
    """
    layers = batchnorm_modules(module)
    for m in layers:
        set_trainable(m, False)
        m.eval()
    return layers


def reapply_frozen(modules: Iterable[nn.Module]) -> None:
    """Put frozen modules back in eval mode (call after ``model.train()``)."""
    for m in modules:
        m.eval()


def resolve_bn_policy(policy: str, batch_size: int) -> bool:
    """Whether BatchNorm is frozen under ``policy`` with ``batch_size`` images per device."""
    if policy not in BN_POLICIES:
        raise ConfigError(f"unknown BatchNorm policy '{policy}'; choose one of: {', '.join(BN_POLICIES)}")
    return policy == "freeze" or (policy == "auto" and batch_size < BN_AUTO_FREEZE_BELOW)


def frozen_subtrees(model: nn.Module) -> list[nn.Module]:
    """The largest sub-modules whose parameters are all frozen.

    Putting these in eval mode freezes their BatchNorm statistics, dropout and
    stochastic depth, while parameter-free modules next to the trainable head
    (pooling, head dropout) keep following ``model.train()``.
    """
    out: list[nn.Module] = []

    def visit(m: nn.Module) -> None:
        params = list(m.parameters())
        if not params:
            return
        if not any(p.requires_grad for p in params):
            out.append(m)
            return
        for child in m.children():
            visit(child)

    visit(model)
    return out
