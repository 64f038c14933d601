"""Common corruptions (Hendrycks & Dietterich, ICLR 2019: ImageNet-C / CIFAR-10-C), applied by the
maintained ``imagecorruptions-imaug`` package (import name ``imagecorruptions``), seeded.

The package works on uint8 images of at least 32x32 and returns 3 channels; smaller images (e.g.
Fashion-MNIST's 28x28) are upsampled (bilinear) to 32x32 first. ``BENCHMARK`` is the 15-corruption
set of the CIFAR-10-C benchmark; ``EXTRA`` the package's four held-out ones.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from transferkit.errors import ConfigError

BENCHMARK = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
             "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
             "jpeg_compression")
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
MIN_SIZE = 32
#: corruptions that take their own seed instead of drawing from numpy's global generator
SEEDED = ("impulse_noise", "glass_blur")


def corruption_names(spec: str) -> list[str]:
    """``all`` (the 15 benchmark corruptions), ``extra``, or comma-separated names; ConfigError on an
    unknown name."""
    if spec.strip() == "all":
        return list(BENCHMARK)
    if spec.strip() == "extra":
        return list(EXTRA)
    names = [n.strip().replace("-", "_") for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARK + EXTRA]
    if unknown or not names:
        raise ConfigError(f"unknown corruption {', '.join(unknown) or repr(spec)}; choose all, extra or "
                          f"some of {', '.join(BENCHMARK + EXTRA)}")
    return names


def _at_least(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    if min(h, w) >= size:
        return image
    scale = size / min(h, w)
    pil = Image.fromarray(image).resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    return np.asarray(pil)


def check_opencv() -> None:
    """One ConfigError line, before anything is written, where OpenCV cannot load."""
    _corrupt_function()


def _corrupt_function():
    """``imagecorruptions.corrupt``, imported only where corruptions are made (numba, OpenCV: heavy); OpenCV's
    system libraries missing (a bare Debian) is one actionable line, not a traceback."""
    try:
        from imagecorruptions import corrupt
    except ImportError as e:
        raise ConfigError(f"corruptions need OpenCV, which cannot load here ({e}); on Debian/Ubuntu: "
                          "apt-get install libgl1 libglib2.0-0") from None
    return corrupt


def corrupt_images(images, name: str, severity: int, seed: int = 0) -> list[np.ndarray]:
    """Each of ``images`` ((H, W) or (H, W, 3) uint8 arrays, or an (N, H, W[, 3]) array) as an
    (H', W', 3) uint8 array with corruption ``name`` at ``severity`` 1..5; H', W' >= 32. Deterministic for a given (seed, name, severity): each image gets its own seed (numpy's
    global generator, which the package draws from, is restored afterwards)."""
    corrupt = _corrupt_function()
    corruption_names(name)
    check_severity(severity)
    rng = np.random.default_rng(zlib.crc32(f"{seed}/{name}/{severity}".encode()))
    state, out = np.random.get_state(), []
    try:
        for im in images:
            image_seed = int(rng.integers(2**31))
            np.random.seed(image_seed)
            extra = {"seed": image_seed} if name in SEEDED else {}
            out.append(np.asarray(corrupt(_at_least(im, MIN_SIZE), corruption_name=name,
                                          severity=int(severity), **extra)))
    finally:
        np.random.set_state(state)
    return [(o if o.ndim == 3 else np.repeat(o[..., None], 3, axis=2)).astype(np.uint8) for o in out]


def check_severity(severity: int) -> int:
    """``severity`` when it is 1..5, else one ConfigError line."""
    if not 1 <= int(severity) <= 5:
        raise ConfigError(f"--severity must be 1..5, got {severity}")
    return int(severity)


def write_corrupted(images, name: str, severity: int, folder, *, seed: int = 0) -> Path:
    """Corrupt ``images`` (an ImageSet) with ``name`` at ``severity`` into the existing, empty
    ``folder``: ``images/<n>.png`` + ``labels.csv`` (path,label: any transferkit command reads it as
    data; class names may hold any character). Returns the CSV. The caller makes the folder appear
    whole (``rundir.atomic_dir``)."""
    import csv

    folder = Path(folder)
    pixels = [np.asarray(im) for im, _ in images]
    (folder / "images").mkdir()
    rows = []
    for i, (im, label) in enumerate(zip(corrupt_images(pixels, name, severity, seed), images.targets)):
        Image.fromarray(im).save(folder / "images" / f"{i:05d}.png")
        rows.append((f"images/{i:05d}.png", images.classes[label]))
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("path", "label"), *rows])
    return folder / "labels.csv"
