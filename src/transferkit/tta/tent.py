"""TENT: fully test-time adaptation by entropy minimisation (Wang et al., ICLR 2021).

On each test batch, predict, then take ``steps`` gradient steps on the mean prediction entropy::

    H(x) = - sum_c p_c(x) log p_c(x),   p = softmax(f_theta(x)),   loss = mean_batch H(x)

updating only the normalisation layers' affine parameters theta (BatchNorm scale and shift, with
test-batch statistics; LayerNorm/GroupNorm affine for models without BatchNorm). Everything else is
frozen and in eval mode (no dropout). Online: the state carries over from batch to batch;
``episodic``: model and optimiser are reset to their initial state after every batch.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from transferkit.errors import ConfigError
from transferkit.registry import TTA, Method
from transferkit.tta.bn import MEASURED_PRIOR, batchnorm_layers, wrap_bn

NORM_TYPES = (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of ``softmax(logits)`` per row: (B, C) -> (B,)."""
    logp = logits.log_softmax(dim=1)
    return -(logp.exp() * logp).sum(dim=1)


def norm_affine_params(model: nn.Module) -> list[nn.Parameter]:
    """The affine weight and bias of every BatchNorm2d, LayerNorm and GroupNorm of ``model``
    (timm's norm-act layers and LayerNorm2d included: they subclass these)."""
    params = []
    for m in model.modules():
        if isinstance(m, NORM_TYPES):
            params += [p for p in (m.weight, m.bias) if isinstance(p, nn.Parameter)]
    return params


def require_norm_affine(model: nn.Module, method: str) -> None:
    """ConfigError when ``model`` has no normalisation affine parameter for ``--method method`` to adapt."""
    if not norm_affine_params(model):
        raise ConfigError(f"the model has no BatchNorm, LayerNorm or GroupNorm affine parameters for "
                          f"--method {method} to adapt")


def make_optimizer(params: list[nn.Parameter], name: str, lr: float) -> torch.optim.Optimizer:
    """``adam`` (TENT's CIFAR setting, betas 0.9/0.999) or ``sgd`` (momentum 0.9, its ImageNet one)."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    raise ConfigError(f"unknown TTA optimizer '{name}'; choose adam or sgd")


class Tent(nn.Module):
    """Wrap a trained classifier for TENT; ``forward(x) -> logits`` predicts *and* adapts.

    The logits returned for a batch are those of the forward pass the first step's loss is computed
    on, i.e. the batch is predicted before the update it causes (as in the paper's code); with
    ``steps > 1`` they come from the last step's forward. ``bn_prior``: see
    :class:`~transferkit.tta.bn.PriorBatchNorm` (0 = pure test-batch statistics, the paper's).
    """

    def __init__(self, model: nn.Module, *, lr: float = 1e-3, steps: int = 1, episodic: bool = False,
                 optimizer: str = "adam", bn_prior: float = 0.0):
        super().__init__()
        if steps < 1:
            raise ConfigError(f"--steps must be >= 1, got {steps}")
        if batchnorm_layers(model):
            wrap_bn(model, bn_prior)
        self.model = model.eval().requires_grad_(False)
        params = norm_affine_params(model)
        if not params:
            raise ConfigError("the model has no BatchNorm, LayerNorm or GroupNorm affine parameters for "
                              "TENT to adapt")
        for p in params:
            p.requires_grad_(True)
        self.params, self.steps, self.episodic = params, steps, episodic
        self.optimizer = make_optimizer(params, optimizer, lr)
        self._initial = copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.optimizer.state_dict())

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        """The objective minimised on a batch: its mean prediction entropy."""
        return entropy(logits).mean()

    @torch.enable_grad()
    def adapt_step(self, x: torch.Tensor) -> torch.Tensor:
        """One forward, one update; returns the forward's logits (detached)."""
        logits = self.model(x)
        loss = self.loss(logits)
        if loss.requires_grad:
            loss.backward()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return logits.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.steps):
            logits = self.adapt_step(x)
        if self.episodic:
            self.reset()
        return logits

    def reset(self) -> None:
        """Back to the state at wrapping: weights, statistics and optimiser moments."""
        model_state, opt_state = self._initial
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(copy.deepcopy(opt_state))


def build(ctx) -> Tent:
    return Tent(ctx.model, lr=ctx.lr, steps=ctx.steps, episodic=ctx.episodic, optimizer=ctx.optimizer,
                bn_prior=ctx.bn_prior)


METHOD = TTA.register(Method(
    name="tent", summary="TENT: entropy minimisation on the normalisation affine parameters",
    build=build, check=lambda ctx: require_norm_affine(ctx.model, "tent"), defaults={"bn_prior": MEASURED_PRIOR}))
