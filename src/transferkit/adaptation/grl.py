"""Gradient reversal, its warm-start schedule and the domain discriminator
(Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015;
Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016).

The reversal layer lets one backward pass train a domain discriminator ``D`` to tell
source from target features while the feature extractor ``F`` is trained to fool it:
``D`` gets the gradient of the domain loss, ``F`` gets it multiplied by ``-lambda``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from transferkit.errors import ConfigError

__all__ = ["DomainDiscriminator", "GradientReversal", "reverse_gradient", "warm_start_coefficient"]


class _ReverseGradient(torch.autograd.Function):
    """``forward(x, coeff) = x``; ``backward(grad) = -coeff * grad`` (no gradient for ``coeff``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coeff * grad, None


def reverse_gradient(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    r"""Gradient reversal :math:`R_\lambda`: :math:`R_\lambda(x) = x` forward,
    :math:`\partial R_\lambda / \partial x = -\lambda I` backward. Any shape in, same shape out."""
    return _ReverseGradient.apply(x, float(coeff))


class GradientReversal(nn.Module):
    r"""The reversal layer :math:`R_\lambda` as a module, :math:`\lambda` = ``self.coeff``.

    The module keeps no schedule of its own: a training loop sets ``coeff`` each step,
    e.g. ``grl.coeff = warm_start_coefficient(step / total_steps)`` (the engine does this
    in a callback, so a resumed run recomputes it from the step it resumes at).
    """

    def __init__(self, coeff: float = 1.0):
        super().__init__()
        self.coeff = float(coeff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(x, self.coeff)

    def extra_repr(self) -> str:
        return f"coeff={self.coeff:g}"


def warm_start_coefficient(progress: float, gamma: float = 10.0, high: float = 1.0) -> float:
    r"""DANN's schedule of :math:`\lambda` over training progress :math:`p \in [0, 1]`:

    .. math:: \lambda(p) = \text{high} \cdot \Big(\frac{2}{1 + \exp(-\gamma p)} - 1\Big)

    0 at the start (the discriminator is still noise, so ``F`` is not pushed by it), rising
    monotonically to ``high * tanh(gamma / 2)`` (0.99991 for ``gamma = 10``) at the end.
    ``progress`` outside [0, 1] is clipped. Ganin & Lempitsky use ``gamma = 10``.
    """
    if gamma <= 0 or high < 0:
        raise ConfigError(f"warm_start_coefficient needs gamma > 0 and high >= 0, got {gamma}, {high}")
    p = min(max(float(progress), 0.0), 1.0)
    return high * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


class DomainDiscriminator(nn.Sequential):
    """The domain classifier ``D``: features (N, in_features) -> one logit per row (N,),
    positive for "source".

    ``in_features -> hidden -> hidden -> 1``, each hidden layer ``Linear, BatchNorm1d, ReLU``
    (``batch_norm=True``, as in tllib's discriminator) or ``Linear, ReLU, Dropout(dropout)``
    (``batch_norm=False``, as in the DANN and CDAN papers' code: 1024 units, dropout 0.5).
    With batch norm, pass source and target rows in one batch so its statistics mix both.
    """

    def __init__(self, in_features: int, hidden: int = 1024, batch_norm: bool = True, dropout: float = 0.5):
        if in_features < 1 or hidden < 1 or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"DomainDiscriminator needs in_features, hidden >= 1 and 0 <= dropout < 1, "
                              f"got {in_features}, {hidden}, {dropout}")
        layers: list[nn.Module] = []
        for n_in in (in_features, hidden):
            layers.append(nn.Linear(n_in, hidden))
            layers += [nn.BatchNorm1d(hidden), nn.ReLU()] if batch_norm else [nn.ReLU(), nn.Dropout(dropout)]
        super().__init__(*layers, nn.Linear(hidden, 1), nn.Flatten(0))
        self.in_features = in_features
