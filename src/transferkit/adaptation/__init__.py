"""Domain adaptation building blocks (Q8, issue 10): plain PyTorch, usable in any training loop.

Labelled source images and unlabelled target images; each block is a loss added to the task
loss on a source batch and a target batch, ``loss = task + trade_off * block(...)``:

* :mod:`~transferkit.adaptation.grl` -- :class:`GradientReversal`, :func:`warm_start_coefficient`
  (lambda's schedule over training), :class:`DomainDiscriminator`.
* :mod:`~transferkit.adaptation.dann` -- :class:`DANNLoss` (adversarial, marginal alignment).
* :mod:`~transferkit.adaptation.cdan` -- :class:`CDANLoss` (adversarial, conditioned on the
  predictions; ``entropy_conditioning=True`` is CDAN+E).
* :mod:`~transferkit.adaptation.mmd` -- :func:`mk_mmd` / :class:`MultipleKernelMMD` (DAN).
* :mod:`~transferkit.adaptation.coral` -- :func:`coral_loss` / :class:`CORAL` (Deep CORAL).
* :mod:`~transferkit.adaptation.proxy_a` -- :func:`proxy_a_distance`, a measurement of how
  separable two domains' features are.

The adversarial losses return ``(loss, domain_accuracy)``; the statistic losses a 0-d tensor.

Each method is registered on :data:`transferkit.registry.ADAPTATION` (``adapt --method``) in its own
module: ``build(ctx) -> Term | None`` (a loss term of :mod:`transferkit.terms`, None: no alignment;
:class:`~transferkit.adaptation.alignment.AlignmentTerm` wraps a block); ``ctx``: ``features_dim``,
``num_classes``, ``seed``, ``weight`` (``--trade-off``, else ``defaults["trade_off"]``), ``options``.
Traits: ``uses_target_labels`` (oracle), ``target_views`` (``("weak", "strong")``: the step also carries
a strongly augmented view of the target images, ``step.extra["x_t_strong"]``).
"""

from transferkit.adaptation import baselines  # noqa: F401  (source-only first in every line-up)
from transferkit.adaptation.dann import DANNLoss, domain_adversarial_loss
from transferkit.adaptation.cdan import CDANLoss, RandomizedMultilinearMap, entropy_weights, multilinear_map
from transferkit.adaptation.coral import CORAL, coral_loss, covariance
from transferkit.adaptation.grl import (
    DomainDiscriminator,
    GradientReversal,
    reverse_gradient,
    warm_start_coefficient,
)
from transferkit.adaptation.mmd import DEFAULT_MULTIPLIERS, MultipleKernelMMD, mk_mmd
from transferkit.adaptation.proxy_a import proxy_a_distance
from transferkit.registry import import_submodules

import_submodules(__name__, __path__)  # each module registers its method: a new method is one module

__all__ = [
    "CORAL",
    "DEFAULT_MULTIPLIERS",
    "CDANLoss",
    "DANNLoss",
    "DomainDiscriminator",
    "GradientReversal",
    "MultipleKernelMMD",
    "RandomizedMultilinearMap",
    "coral_loss",
    "covariance",
    "domain_adversarial_loss",
    "entropy_weights",
    "mk_mmd",
    "multilinear_map",
    "proxy_a_distance",
    "reverse_gradient",
    "warm_start_coefficient",
]
