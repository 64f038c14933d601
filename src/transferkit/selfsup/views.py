"""Each method's multi-view transform, from lightly, at the run's input size and normalisation.

Grayscale data (every sampled image has R = G = B) gets the colour part of the jitter (saturation,
hue) and random grayscale off — they do nothing to a grey image but cost time and, with hue, round-off
tints — while brightness and contrast jitter stay: they are the intensity augmentation SimCLR's
ablations found to matter most after cropping.
"""

from __future__ import annotations

import numpy as np


def is_grayscale(images, n: int = 32, seed: int = 0) -> bool:
    """True when ``n`` seeded images of ``images`` (``images[i] -> (PIL image, label)``) all have R = G = B."""
    rng = np.random.default_rng(seed)
    for i in rng.choice(len(images), size=min(n, len(images)), replace=False):
        a = np.asarray(images[int(i)][0].convert("RGB"))
        if not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2])):
            return False
    return True


def method_views(method: str, image_size: int, mean, std, grayscale: bool, hflip: float = 0.5,
                 local_views: bool = True):
    """lightly's transform for ``method`` (a PIL image -> a list of normalised view tensors).

    simclr: 2 views (SimCLR's crop, flip, jitter, grayscale, blur); byol: 2 asymmetric views
    (blur always on the first, solarisation on the second); dino: 2 global crops (40-100 % of the
    image) and, with ``local_views``, 6 local crops of half the size (5-40 %); mae: 1 crop (20-100 %).
    Gaussian blur is off below 64 px (as lightly's CIFAR-10 benchmarks do: it erases small images).
    """
    from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform, DINOTransform, MAETransform
    from lightly.transforms import SimCLRTransform

    normalize = {"mean": list(mean), "std": list(std)}
    colour = {"cj_sat": 0.0, "cj_hue": 0.0, "random_gray_scale": 0.0} if grayscale else {}
    small = image_size < 64
    if method == "simclr":
        return SimCLRTransform(input_size=image_size, hf_prob=hflip, gaussian_blur=0.0 if small else 0.5,
                               normalize=normalize, **colour)
    if method == "byol":
        blur = {"gaussian_blur": 0.0} if small else {}
        return BYOLTransform(BYOLView1Transform(input_size=image_size, hf_prob=hflip, normalize=normalize,
                                                **colour, **blur),
                             BYOLView2Transform(input_size=image_size, hf_prob=hflip, normalize=normalize,
                                                **colour, **blur))
    if method == "dino":
        local = max(8, (image_size // 2) // 8 * 8)
        return DINOTransform(global_crop_size=image_size, local_crop_size=local, n_local_views=6 if local_views else 0,
                             hf_prob=hflip, gaussian_blur=(0.0, 0.0, 0.0) if small else (1.0, 0.1, 0.5),
                             normalize=normalize, **colour)
    if method == "mae":
        return MAETransform(input_size=image_size, normalize=normalize)
    raise ValueError(f"unknown self-supervised method '{method}'")
