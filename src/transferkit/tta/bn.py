"""BatchNorm statistics adaptation (Schneider et al., NeurIPS 2020, "Improving robustness against
common corruptions by covariate shift adaptation").

A model trained on clean images normalises every BatchNorm layer with the *source* running
statistics ``(mu_s, var_s)``. Under a covariate shift those statistics are wrong; recomputing them
on the test batch fixes much of the damage without any gradient step. With few test images per
batch the batch statistics are noisy, so they are mixed with the source ones by a prior strength N::

    mu  = (N * mu_s  + n * mu_t ) / (N + n)
    var = (N * var_s + n * var_t) / (N + n)

``n`` is the batch size and ``mu_t, var_t`` the batch's (biased) statistics over (batch, H, W).
``N = 0``: pure test-batch statistics; ``N -> inf``: the source statistics (no adaptation).
"""

from __future__ import annotations

import torch
from torch import nn

from transferkit.errors import ConfigError
from transferkit.registry import TTA, Method


class PriorBatchNorm(nn.Module):
    """Wraps one ``nn.BatchNorm2d`` (timm's ``BatchNormAct2d`` included: its activation and drop are
    applied after) to normalise with source statistics mixed with the batch's, whatever the mode.

    x: (B, C, H, W) -> (B, C, H, W). Gradients flow through the batch statistics and into the
    wrapped layer's affine ``weight``/``bias`` (the parameters TENT trains). ``stream_mean`` and
    ``stream_var`` average the statistics used over every batch seen; :func:`unwrap_bn` writes them
    into the layer's running statistics so that the adapted model works in plain eval mode.
    """

    def __init__(self, bn: nn.BatchNorm2d, prior: float = 0.0):
        super().__init__()
        if prior < 0:
            raise ConfigError(f"BN prior strength must be >= 0, got {prior}")
        if bn.running_mean is None or bn.running_var is None:
            raise ConfigError("a BatchNorm layer without running statistics has no source statistics to adapt")
        self.bn, self.prior = bn, float(prior)
        self.register_buffer("stream_mean", torch.zeros_like(bn.running_mean))
        self.register_buffer("stream_var", torch.zeros_like(bn.running_var))
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))

    def statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixed ``(mean, var)`` per channel for the batch ``x``."""
        var_t, mu_t = torch.var_mean(x, dim=(0, 2, 3), correction=0)
        if self.prior == 0:
            return mu_t, var_t
        n, big_n = x.shape[0], self.prior
        mean = (big_n * self.bn.running_mean + n * mu_t) / (big_n + n)
        var = (big_n * self.bn.running_var + n * var_t) / (big_n + n)
        return mean, var

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, var = self.statistics(x)
        with torch.no_grad():
            self.batches += 1
            self.stream_mean += (mean.detach() - self.stream_mean) / self.batches
            self.stream_var += (var.detach() - self.stream_var) / self.batches
        bn = self.bn
        shape = (1, -1, 1, 1)  # written out: F.batch_norm takes no gradient through its statistics
        x = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + bn.eps)
        if bn.affine:
            x = x * bn.weight.view(shape) + bn.bias.view(shape)
        for post in ("drop", "act"):  # timm's BatchNormAct2d
            if isinstance(getattr(bn, post, None), nn.Module):
                x = getattr(bn, post)(x)
        return x


def batchnorm_layers(model: nn.Module) -> list[str]:
    """Names of the ``nn.BatchNorm2d`` layers (with running statistics) of ``model``."""
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None]


def wrap_bn(model: nn.Module, prior: float = 0.0) -> nn.Module:
    """Replace, in place, every BatchNorm2d of ``model`` by a :class:`PriorBatchNorm` around it; returns
    ``model``. ConfigError when it has none (BN adaptation does not apply to LayerNorm/GroupNorm
    models: they have no statistics from the source to replace)."""
    names = batchnorm_layers(model)
    if not names:
        raise ConfigError("the model has no BatchNorm layer, so BN-statistics adaptation does not apply "
                          "(its LayerNorm/GroupNorm layers carry no source statistics); use --method tent")
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, PriorBatchNorm(getattr(owner, child), prior))
    return model


def unwrap_bn(model: nn.Module) -> nn.Module:
    """Undo :func:`wrap_bn` in place: each layer gets back, as running statistics, the average of the
    statistics it normalised the stream with (unchanged if it saw no batch); returns ``model``."""
    for name, m in list(model.named_modules()):
        if isinstance(m, PriorBatchNorm):
            if int(m.batches) > 0:
                m.bn.running_mean.copy_(m.stream_mean)
                m.bn.running_var.copy_(m.stream_var)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, m.bn)
    return model


class BNAdapt(nn.Module):
    """A model whose BatchNorm layers normalise each test batch with prior-mixed statistics
    (see the module docstring); no parameter changes. ``forward(x) -> logits``."""

    def __init__(self, model: nn.Module, prior: float = 0.0):
        super().__init__()
        self.model = wrap_bn(model.eval(), prior)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def check_bn(ctx) -> None:
    """BN adaptation needs BatchNorm layers: LayerNorm/GroupNorm carry no source statistics to replace."""
    if not batchnorm_layers(ctx.model):
        raise ConfigError("the model has no BatchNorm layer, so --method bn does not apply (its LayerNorm/"
                          "GroupNorm layers carry no source statistics); use --method tent")


#: The prior strength N when --bn-prior is not given, chosen with ``bn`` on the four held-out corruptions
#: only (speckle noise, Gaussian blur, spatter, saturate; severity 5, 500 images, the Fashion-MNIST 32-px run
#: of benchmarks/RESULTS.md "tta"): N = 16 is best or within 1.2 points of the best at every batch size
#: 1..200, where N = 0 (pure test statistics, the papers' setting) falls to chance at batch 1 and loses
#: 15 points at batch 4. The gradient methods (tent, eata) normalise the same way and share it.
MEASURED_PRIOR = 16.0

METHOD = TTA.register(Method(
    name="bn", summary="BatchNorm statistics of each test batch, mixed with the source's by --bn-prior",
    build=lambda ctx: BNAdapt(ctx.model, ctx.bn_prior), check=check_bn, defaults={"bn_prior": MEASURED_PRIOR}))
