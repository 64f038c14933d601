"""Offline, seeded renderers of the synthetic domains ``builtin:synth-digits`` and
``builtin:fashion-mnist-m`` (domain adaptation, issue 10).

Both are made from files that installed packages ship (matplotlib's TrueType fonts,
scikit-image's sample photos) and a fixed seed, so no download is needed and the same
arrays come out on every run. The sources' keys carry a hash of the arrays
(:func:`content_key`), so a different FreeType or font version can never reuse a cache
written from other pixels.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from transferkit.errors import DataError

#: Fonts of matplotlib's ``mpl-data/fonts/ttf`` used for the digits (all have the ten digit glyphs).
DIGIT_FONTS = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf", "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmti10.ttf",
)
#: scikit-image sample photos (colour, shipped with the package) that backgrounds are cut from.
BACKGROUND_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
RENDER_SIZE = 80          # font size (px) of the high-resolution glyph
BITMAP = 32               # side of the binary bitmap, as in UCI optdigits (sklearn's digits)
BLOCK = 4                 # 32x32 bitmap -> 8x8 counts of on pixels per 4x4 block: levels 0..16


def content_key(prefix: str, *arrays: np.ndarray) -> str:
    """``prefix#hash``: the source key with a short SHA-256 of the arrays' bytes."""
    h = hashlib.sha256(prefix.encode())
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return f"{prefix}#{h.hexdigest()[:16]}"


# ------------------------------------------------------------------ synth-digits


@cache
def _font(name: str) -> ImageFont.FreeTypeFont:
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    try:
        return ImageFont.truetype(str(path), RENDER_SIZE)
    except OSError as e:
        raise DataError(f"font {path} is missing or unreadable ({e}); reinstall matplotlib") from None


def _glyph(digit: int, font: str, stroke: int, angle: float) -> Image.Image:
    """The digit in white on black at high resolution, rotated by ``angle`` degrees, cropped."""
    side = 2 * RENDER_SIZE
    image = Image.new("L", (side, side))
    ImageDraw.Draw(image).text((side // 2, side // 2), str(digit), fill=255, font=_font(font),
                               anchor="mm", stroke_width=stroke, stroke_fill=255)
    image = image.rotate(angle, resample=Image.Resampling.BILINEAR)
    return image.crop(image.getbbox())


def _bitmap(glyph: Image.Image, height: int, rng: np.random.Generator) -> np.ndarray:
    """The glyph scaled to ``height`` rows (aspect kept, at most 32 wide), thresholded to a
    binary 32x32 bitmap, centred and then shifted by up to 2 pixels each way (UCI optdigits
    centres its size-normalised digits)."""
    w, h = glyph.size
    scale = min(height / h, BITMAP / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(glyph.resize(size, Image.Resampling.BOX)) >= 128
    bitmap = np.zeros((BITMAP, BITMAP), dtype=bool)
    top, left = ((BITMAP - n) // 2 + int(rng.integers(-2, 3)) for n in (size[1], size[0]))
    top, left = min(max(top, 0), BITMAP - size[1]), min(max(left, 0), BITMAP - size[0])
    bitmap[top:top + size[1], left:left + size[0]] = small
    return bitmap


def to_digit_levels(bitmap: np.ndarray) -> np.ndarray:
    """A binary 32x32 bitmap -> the 8x8 image of on-pixel counts per 4x4 block (0..16)."""
    n = BITMAP // BLOCK
    return bitmap.reshape(n, BLOCK, n, BLOCK).sum(axis=(1, 3)).astype(np.uint8)


def render_digit(digit: int, rng: np.random.Generator) -> np.ndarray:
    """One 8x8 digit (levels 0..16): random font, stroke width, rotation, height and position."""
    font = DIGIT_FONTS[int(rng.integers(len(DIGIT_FONTS)))]
    stroke = int(rng.integers(0, 5))               # at 80 px: 0..4 px wider strokes
    angle = float(rng.uniform(-10, 10))
    height = int(rng.integers(26, BITMAP + 1))     # rows of the 32 the digit spans
    return to_digit_levels(_bitmap(_glyph(digit, font, stroke, angle), height, rng))


def synth_digits(per_class: int = 180, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(levels (10*per_class, 8, 8) uint8 in 0..16, labels (N,) int64)``, classes in turn
    (0, 1, ..., 9, 0, 1, ...), from one ``numpy`` generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(10, dtype=np.int64), per_class)
    images = np.stack([render_digit(int(d), rng) for d in labels])
    return images, labels


# --------------------------------------------------------------- fashion-mnist-m


def background_photos() -> list[np.ndarray]:
    """The RGB photos of :data:`BACKGROUND_PHOTOS` from ``skimage.data`` (uint8, H x W x 3)."""
    try:
        import skimage.data
    except ImportError:
        raise DataError("builtin:fashion-mnist-m needs scikit-image's sample photos; "
                        "install it with `pip install scikit-image`") from None
    return [np.asarray(getattr(skimage.data, name)())[..., :3] for name in BACKGROUND_PHOTOS]


def blend_on_photos(images: np.ndarray, photos: list[np.ndarray], seed: int = 0) -> np.ndarray:
    """MNIST-M's recipe (Ganin et al. 2016) on grey ``images`` (N, H, W) uint8: for each image a
    random H x W patch of a random photo, and per colour channel ``out_c = |patch_c - image|``.
    Returns (N, H, W, 3) uint8; the choices come from a ``numpy`` generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    n, h, w = images.shape
    which = rng.integers(len(photos), size=n)
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    for i, (image, p) in enumerate(zip(images, which)):
        photo = photos[p]
        top = int(rng.integers(photo.shape[0] - h + 1))
        left = int(rng.integers(photo.shape[1] - w + 1))
        patch = photo[top:top + h, left:left + w].astype(np.int16)
        out[i] = np.abs(patch - image[..., None].astype(np.int16))
    return out
