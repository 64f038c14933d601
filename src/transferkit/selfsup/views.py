"""What every method's multi-view transform shares: lightly's transforms at the run's input size and
normalisation (:class:`ViewSpec`). Each method declares its own transform in its module, as its entry's
``views`` trait (``views(spec) -> transform``); :func:`method_views` calls it by name.

Grayscale data (every sampled image has R = G = B) gets the colour part of the jitter (saturation,
hue) and random grayscale off — they do nothing to a grey image but cost time and, with hue, round-off
tints — while brightness and contrast jitter stay: they are the intensity augmentation SimCLR's
ablations found to matter most after cropping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def is_grayscale(images, n: int = 32, seed: int = 0) -> bool:
    """True when ``n`` seeded images of ``images`` (``images[i] -> (PIL image, label)``) all have R = G = B."""
    rng = np.random.default_rng(seed)
    for i in rng.choice(len(images), size=min(n, len(images)), replace=False):
        a = np.asarray(images[int(i)][0].convert("RGB"))
        if not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2])):
            return False
    return True


@dataclass(frozen=True)
class ViewSpec:
    """What a method's ``views(spec)`` (its entry's ``views`` trait) reads to make its transform.

    ``image_size``: the run's input size; ``mean``/``std``: the backbone's normalisation; ``grayscale``:
    every sampled image has R = G = B; ``hflip``: horizontal flip probability; ``local_views``: multi-crop
    methods may add smaller crops; ``backbone``: the network the views feed (None: any).
    """

    image_size: int
    mean: tuple
    std: tuple
    grayscale: bool
    hflip: float = 0.5
    local_views: bool = True
    backbone: Any = None

    @property
    def normalize(self) -> dict:
        """lightly's ``normalize`` argument."""
        return {"mean": list(self.mean), "std": list(self.std)}

    @property
    def colour(self) -> dict:
        """The colour part of lightly's jitter, off for grayscale data (see the module docstring)."""
        return {"cj_sat": 0.0, "cj_hue": 0.0, "random_gray_scale": 0.0} if self.grayscale else {}

    @property
    def small(self) -> bool:
        """Below 64 px Gaussian blur is off (as lightly's CIFAR-10 benchmarks do: it erases small images)."""
        return self.image_size < 64


def method_views(method: str, image_size: int, mean, std, grayscale: bool, hflip: float = 0.5,
                 local_views: bool = True, backbone=None):
    """The registered ``method``'s transform (a PIL image -> a list of normalised view tensors): its
    entry's ``views`` trait, called with a :class:`ViewSpec`."""
    from transferkit.registry import SELFSUP

    spec = ViewSpec(image_size, tuple(mean), tuple(std), grayscale, hflip, local_views, backbone)
    return SELFSUP[method].traits["views"](spec)
