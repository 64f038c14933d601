"""Imbalanced labels: class weights for the loss, and a sampler that draws classes equally.

* :func:`inverse_frequency_weights` — ``w_c = (1 / n_c) / mean_k (1 / n_k)`` over the classes present
  in the training split (``n_c`` images of class ``c``; mean weight 1, so the loss keeps its scale);
  a class without training images gets 0 (no image carries it). Passed as ``CrossEntropyLoss(weight=)``.
* :func:`balanced_sampler` — draws each image with probability ``∝ 1 / n_{y_i}``, with replacement, so
  every present class is drawn equally often in expectation (``WeightedRandomSampler``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler


def class_counts(targets: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    """``n_c``: how many of ``targets`` are class ``c``, for ``c`` in ``0..num_classes-1``."""
    return np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes)[:num_classes]


def inverse_frequency_weights(targets: Sequence[int] | np.ndarray, num_classes: int) -> torch.Tensor:
    """Per-class loss weights ``w_c = (1 / n_c) / mean over present k of (1 / n_k)``; 0 where ``n_c = 0``."""
    counts = class_counts(targets, num_classes).astype(np.float64)
    inverse = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
    present = counts > 0
    if not present.any():
        raise ValueError("no training targets to weight")
    return torch.tensor(inverse / inverse[present].mean(), dtype=torch.float32)


def balanced_sampler(targets: Sequence[int] | np.ndarray, num_samples: int | None = None,
                     generator: torch.Generator | None = None) -> WeightedRandomSampler:
    """A sampler of ``num_samples`` indices (default: one per image) drawn with replacement, image ``i``
    with weight ``1 / n_{y_i}``: each class present is drawn with probability ``1 / (classes present)``."""
    targets = np.asarray(targets, dtype=np.int64)
    counts = np.bincount(targets)
    weights = torch.as_tensor(1.0 / counts[targets], dtype=torch.double)
    return WeightedRandomSampler(weights, num_samples or len(targets), replacement=True, generator=generator)
