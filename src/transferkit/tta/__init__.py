"""Test-time adaptation: update a trained model on the unlabelled test stream, batch by batch.

Plain PyTorch blocks, usable around any trained classifier:

* :class:`BNAdapt` -- BatchNorm statistics from the test batch, mixed with the source's by a prior
  strength N (Schneider et al. 2020);
* :class:`Tent` -- entropy minimisation on the normalisation affine parameters (Wang et al. 2021);
* :class:`EATA` -- TENT on reliable, non-redundant samples with a Fisher anti-forgetting penalty
  (Niu et al. 2022): the robust method for small batches and long mixed streams.

:func:`build_adapter` makes any of them (or ``none``) by name; every adapter's ``forward(x)`` returns
the logits the batch is predicted with.
"""

from __future__ import annotations

import torch
from torch import nn

from transferkit.errors import ConfigError
from transferkit.tta.bn import BNAdapt, PriorBatchNorm, batchnorm_layers, unwrap_bn, wrap_bn
from transferkit.tta.eata import EATA, fisher_diagonal
from transferkit.tta.tent import Tent, entropy, norm_affine_params

#: name -> what it does (the CLI's choices and the report's legend)
METHODS = {
    "none": "the trained model as it is (source BatchNorm statistics, no update)",
    "bn": "BatchNorm statistics of each test batch, mixed with the source's by --bn-prior",
    "tent": "TENT: entropy minimisation on the normalisation affine parameters",
    "eata": "EATA: TENT on reliable, non-redundant samples + Fisher anti-forgetting penalty",
}


class NoAdapt(nn.Module):
    """The model unchanged, in eval mode: the baseline every method is compared with."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def check_method(method: str, model: nn.Module) -> None:
    """ConfigError, before any work, when ``method`` cannot adapt ``model`` (no BatchNorm for ``bn``,
    no normalisation affine parameters for ``tent``/``eata``)."""
    if method not in METHODS:
        raise ConfigError(f"unknown TTA method '{method}'; choose one of: {', '.join(METHODS)}")
    if method == "bn" and not batchnorm_layers(model):
        raise ConfigError("the model has no BatchNorm layer, so --method bn does not apply (its LayerNorm/"
                          "GroupNorm layers carry no source statistics); use --method tent")
    if method in ("tent", "eata") and not norm_affine_params(model):
        raise ConfigError(f"the model has no BatchNorm, LayerNorm or GroupNorm affine parameters for "
                          f"--method {method} to adapt")


def build_adapter(method: str, model: nn.Module, num_classes: int, *, bn_prior: float = 0.0, lr: float = 1e-3,
                  steps: int = 1, episodic: bool = False, optimizer: str = "adam", fisher=None) -> nn.Module:
    """Wrap ``model`` (changed in place: pass a copy to keep it) for test-time adaptation by ``method``."""
    if method == "none":
        return NoAdapt(model)
    if method == "bn":
        return BNAdapt(model, bn_prior)
    options = dict(lr=lr, steps=steps, episodic=episodic, optimizer=optimizer, bn_prior=bn_prior)
    if method == "tent":
        return Tent(model, **options)
    if method == "eata":
        return EATA(model, num_classes, fisher=fisher, **options)
    raise ConfigError(f"unknown TTA method '{method}'; choose one of: {', '.join(METHODS)}")


__all__ = ["METHODS", "BNAdapt", "EATA", "NoAdapt", "PriorBatchNorm", "Tent", "batchnorm_layers", "build_adapter",
           "check_method", "entropy", "fisher_diagonal", "norm_affine_params", "unwrap_bn", "wrap_bn"]
