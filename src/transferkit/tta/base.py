"""What a test-time adaptation entry's ``check`` and ``build`` read (the contract: :mod:`transferkit.tta`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class TTAContext:
    """The model to adapt and the run's settings.

    ``model``: the trained classifier (``build`` may change it in place: the engine passes a copy);
    ``num_classes``: its number of classes (None where only ``check`` runs without it); ``bn_prior``: the
    BatchNorm prior strength N (:class:`~transferkit.tta.bn.PriorBatchNorm`); ``lr``, ``steps``,
    ``episodic``, ``optimizer``: the gradient methods' settings; ``fisher``: the diagonal Fisher of the
    normalisation affine parameters on clean images (methods with the ``needs_fisher`` trait; None without
    clean images); ``options``: the entry's validated :class:`~transferkit.registry.Options`, or None.
    """

    model: Any
    num_classes: int | None = None
    bn_prior: float = 0.0
    lr: float = 1e-3
    steps: int = 1
    episodic: bool = False
    optimizer: str = "adam"
    fisher: list | None = None
    options: Any = None

