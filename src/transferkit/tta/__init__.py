"""Test-time adaptation: update a trained model on the unlabelled test stream, batch by batch.

Plain PyTorch blocks, usable around any trained classifier:

* :class:`NoAdapt` -- the model as it is (``none``, the baseline);
* :class:`BNAdapt` -- BatchNorm statistics from the test batch, mixed with the source's by a prior
  strength N (Schneider et al. 2020);
* :class:`Tent` -- entropy minimisation on the normalisation affine parameters (Wang et al. 2021);
* :class:`EATA` -- TENT on reliable, non-redundant samples with a Fisher anti-forgetting penalty
  (Niu et al. 2022): the robust method for small batches and long mixed streams.

The family contract (:data:`transferkit.registry.TTA`, ``tta --method NAME``). Each method is one module
of this package that registers a :class:`~transferkit.registry.Method` on import (every module here is
imported with the package, so a new method is one module):

* ``build(ctx) -> nn.Module`` -- the adapter; ``adapter(x)`` returns the logits the batch ``x`` is
  predicted with (and adapts, for the gradient methods). It may change ``ctx.model`` in place (the engine
  passes a copy) and keeps the adapted model as ``adapter.model`` (``tta --save`` writes it);
  ``adapter.kept``/``adapter.seen``, where present, count the samples that drove an update;
* ``check(ctx)`` -- ConfigError, before any work, for a model it cannot adapt (no BatchNorm for ``bn``,
  no normalisation affine parameters for the gradient methods);
* ``ctx`` -- a :class:`TTAContext`: ``model, num_classes, bn_prior, lr, steps, episodic, optimizer,
  fisher, options`` (``options``: the entry's validated Options instance, or None);
* ``defaults={"bn_prior": N}`` -- the BatchNorm prior strength when ``--bn-prior`` is not given;
* ``traits={"needs_fisher": True}`` -- the engine computes the Fisher diagonal on clean training images
  (:func:`fisher_diagonal`) and passes it as ``ctx.fisher`` (EATA);
* ``in_lineup`` -- part of ``tta``'s default ``--method`` line-up.

:func:`build_adapter` and :func:`check_method` do that by name, for your own loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from transferkit.registry import TTA, import_submodules
from transferkit.tta.base import TTAContext
from transferkit.tta.none import NoAdapt  # noqa: I001 -- these first: the default line-up's order
from transferkit.tta.bn import BNAdapt, PriorBatchNorm, batchnorm_layers, unwrap_bn, wrap_bn
from transferkit.tta.tent import Tent, entropy, norm_affine_params
from transferkit.tta.eata import EATA, fisher_diagonal
from transferkit.tta.sar import SAR

import_submodules(__name__, __path__)


def context(method: str, model: nn.Module, num_classes: int | None = None, *, bn_prior: float | None = 0.0,
            lr: float = 1e-3, steps: int = 1, episodic: bool = False, optimizer: str = "adam", fisher=None,
            options: Mapping[str, Any] | None = None) -> TTAContext:
    """The :class:`TTAContext` of ``method`` (ConfigError for an unknown one or invalid ``options``);
    ``bn_prior`` None: the method's default."""
    entry = TTA[method]
    prior = entry.defaults.get("bn_prior", 0.0) if bn_prior is None else bn_prior
    return TTAContext(model=model, num_classes=num_classes, bn_prior=prior, lr=lr, steps=steps, episodic=episodic,
                      optimizer=optimizer, fisher=fisher, options=entry.resolve(options))


def check_method(method: str, model: nn.Module, options: Mapping[str, Any] | None = None) -> None:
    """ConfigError, before any work, when ``method`` is unknown or cannot adapt ``model``."""
    entry = TTA[method]
    if entry.check is not None:
        entry.check(context(method, model, options=options))


def build_adapter(method: str, model: nn.Module, num_classes: int, *, bn_prior: float | None = 0.0, lr: float = 1e-3,
                  steps: int = 1, episodic: bool = False, optimizer: str = "adam", fisher=None,
                  options: Mapping[str, Any] | None = None) -> nn.Module:
    """Wrap ``model`` (changed in place: pass a copy to keep it) for test-time adaptation by ``method``
    (``bn_prior`` None: the method's default; ``options``: the method's own, ``{option: value}``)."""
    ctx = context(method, model, num_classes, bn_prior=bn_prior, lr=lr, steps=steps, episodic=episodic,
                  optimizer=optimizer, fisher=fisher, options=options)
    entry = TTA[method]
    if entry.check is not None:
        entry.check(ctx)
    return entry.build(ctx)


def method_names() -> tuple[str, ...]:
    """Every registered method (run-time registrations included)."""
    return TTA.names()


__all__ = ["BNAdapt", "EATA", "NoAdapt", "PriorBatchNorm", "SAR", "TTAContext", "Tent", "batchnorm_layers", "build_adapter",
           "check_method", "context", "entropy", "fisher_diagonal", "method_names", "norm_affine_params", "unwrap_bn",
           "wrap_bn"]
