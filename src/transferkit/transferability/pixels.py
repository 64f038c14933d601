"""The raw-pixel baseline: the linear probe on pixels instead of a backbone's features.

ImageNet features have to earn their keep: on small grayscale tasks a logistic
regression on raw pixels is a strong, nearly free baseline (Fashion-MNIST with
10 / 50 labels per class: 0.69 / 0.77). Every run reports it next to the
fine-tuned model, so a user sees at once whether transfer helped (the verdict:
:func:`transferkit.evaluation.baselines.verdict`).
"""

from __future__ import annotations

import numpy as np
import torch

from transferkit.data import ImageSet
from transferkit.transferability.probes import linear_probe_accuracy

#: Pixel baselines train on at most this many images (seeded subsample) to stay cheap.
MAX_TRAIN = 5000


def pixels(images: ImageSet, size: int = 28) -> np.ndarray:
    """``(N, size*size)`` grayscale pixels in [0, 1] (images resized to ``size``×``size``)."""
    out = np.empty((len(images), size * size), dtype=np.float32)
    for i in range(len(images)):
        img, _ = images[i]
        out[i] = np.asarray(img.convert("L").resize((size, size)), dtype=np.float32).ravel() / 255.0
    return out


def pixel_baseline(train: ImageSet, test: ImageSet, size: int = 28, seed: int = 0) -> float:
    """Test accuracy of a cross-validated logistic regression on raw pixels.

    ``train`` is subsampled (seeded) to :data:`MAX_TRAIN` images at most.
    """
    if len(train) > MAX_TRAIN:
        keep = np.sort(np.random.default_rng(seed).choice(len(train), MAX_TRAIN, replace=False))
        train = train.subset(keep)
    return linear_probe_accuracy(pixels(train, size), train.targets, pixels(test, size), test.targets)


def cached_pixel_baseline(train: ImageSet, test: ImageSet, size: int = 28, seed: int = 0, cache=None) -> float:
    """:func:`pixel_baseline` through a :class:`~transferkit.evaluation.features.FeatureCache`
    (default: the shared one), keyed by both image sets' fingerprints, ``size`` and ``seed``: the
    strategies of one ``compare`` seed, and a rerun, score the same baseline once."""
    import sklearn

    from transferkit.evaluation.features import FeatureCache

    key = {"baseline": "pixels", "train": train.fingerprint(), "test": test.fingerprint(), "size": size,
           "seed": seed, "max_train": MAX_TRAIN, "sklearn": sklearn.__version__}
    got = (cache or FeatureCache()).cached(
        key, lambda: {"accuracy": torch.tensor(pixel_baseline(train, test, size, seed), dtype=torch.float64)})
    return got["accuracy"].item()
