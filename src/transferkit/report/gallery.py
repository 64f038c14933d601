"""The gallery of a run's most confident mistakes: each image beside its Grad-CAM overlay, and the
report section that shows it (``evaluation.mistakes`` picks them, ``evaluation.gradcam`` maps them)."""

from __future__ import annotations

from pathlib import Path

from transferkit.report.plots import new_figure, save_png

#: the gallery's file in a run directory (declared by each command that writes it: rundir.layout)
MISTAKES_PNG = "mistakes.png"
#: mistakes per gallery row (each takes two panels: the image, its overlay)
PER_ROW = 4
MISTAKES_HEADING = "Most confident mistakes (Grad-CAM)"


def as_rgb_float(image):
    """An image as float ``(H, W, 3)`` in [0, 1]: uint8 or float, grayscale ``(H, W)`` or ``(H, W, 1|3)``."""
    import numpy as np

    a = np.asarray(image)
    a = a.astype(np.float64) / 255.0 if a.dtype == np.uint8 else a.astype(np.float64)
    if a.ndim == 2:
        a = a[..., None]
    return np.clip(np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[..., :3], 0.0, 1.0)


def resized(cam, height: int, width: int):
    """A map ``(h, w)`` resized (bilinear) to ``(height, width)``: a map at the model's input size onto the
    image it was squashed from (or a small image's channel up to the map's size)."""
    import numpy as np
    from PIL import Image

    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape == (height, width):
        return cam
    return np.asarray(Image.fromarray(cam, mode="F").resize((width, height), Image.BILINEAR))


def label(value, classes: list[str]) -> str:
    """A class given by index (into ``classes``) or by name, as its name."""
    return value if isinstance(value, str) else classes[int(value)]


def caption(row: dict, classes: list[str]) -> str:
    """``true X / pred Y (p=0.97)``."""
    return f"true {label(row['true'], classes)} / pred {label(row['pred'], classes)} (p={row['prob']:.2f})"


def plot_mistakes_gallery(images, cams, rows: list[dict], classes: list[str], path: Path, alpha: float = 0.5) -> Path:
    """One image and its Grad-CAM overlay (jet, ``alpha``) per mistake, :data:`PER_ROW` mistakes a row; each
    titled :func:`caption`. ``images``: uint8 or [0, 1] float ``(H, W[, 3])`` of any size; ``cams``: maps in
    [0, 1] (resized to their image), or None for the images alone; ``rows``: ``{true, pred, prob}`` (classes by index or name)."""
    import numpy as np
    from matplotlib import colormaps

    n = len(rows)
    cols, lines = 2 * min(n, PER_ROW), max(-(-n // PER_ROW), 1)
    fig = new_figure(figsize=(2.1 * max(cols, 2), 2.4 * lines))
    axes = fig.subplots(lines, max(cols, 2), squeeze=False)
    jet = colormaps["jet"]
    for ax in axes.flat:
        ax.axis("off")
    for k, (image, row) in enumerate(zip(images, rows)):
        rgb = as_rgb_float(image)
        if cams is not None and np.shape(cams[k])[0] > rgb.shape[0]:  # a small image shown at the map's size
            rgb = np.stack([resized(rgb[..., c], *np.shape(cams[k])) for c in range(3)], axis=2).clip(0, 1)
        left, right = axes[k // PER_ROW, 2 * (k % PER_ROW)], axes[k // PER_ROW, 2 * (k % PER_ROW) + 1]
        left.imshow(rgb, interpolation="nearest")
        left.set_title(caption(row, classes), fontsize=7)
        if cams is not None:
            heat = jet(resized(cams[k], *rgb.shape[:2]))[..., :3]
            right.imshow((1 - alpha) * rgb + alpha * heat, interpolation="nearest")
            right.set_title(f"Grad-CAM: {label(row['pred'], classes)}", fontsize=7)
    return save_png(fig, path)


def mistakes_section(rows: list[dict], split: str = "test", note: str | None = None,
                     image: str | None = MISTAKES_PNG) -> list[str]:
    """Markdown lines: the :data:`MISTAKES_HEADING` section, a table of the mistakes (``{index, true, pred,
    prob[, path]}``, classes by name, most confident first; ``index``: the image's position in the ``split``
    split) and the gallery ``image`` (beside the report); ``note``: added to its first line."""
    lines = ["", f"## {MISTAKES_HEADING}", ""]
    if not rows:
        return lines + [f"No mistakes on the {split} images."]
    lines += [f"The {len(rows)} wrong predictions on the {split} images the model was surest of; beside each "
              "image, Grad-CAM of the predicted class (red: where the evidence for it was); probability: the "
              "softmax of the logits, before temperature scaling."
              + (f" {note}" if note else ""), "",
              "| # | image | true | predicted | probability |", "|---|---|---|---|---|"]
    lines += [f"| {i} | {r.get('path') or r['index']} | {r['true']} | {r['pred']} | {r['prob']:.3f} |"
              for i, r in enumerate(rows, 1)]
    if image:
        lines += ["", f"![{MISTAKES_HEADING}]({image})"]
    return lines


__all__ = ["MISTAKES_HEADING", "MISTAKES_PNG", "caption", "label", "mistakes_section", "plot_mistakes_gallery"]
