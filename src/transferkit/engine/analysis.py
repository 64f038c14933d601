"""Error analysis of a trained model on a labelled split, the one code path of every command that
evaluates (finetune, adapt, distill): the most confident mistakes (``evaluation.mistakes``) with
Grad-CAM of the predicted class (``evaluation.gradcam``) as a gallery (``report.gallery``), and the
per-class scores and calibration error figures that go with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from transferkit.report.gallery import MISTAKES_PNG

#: how many mistakes a run's gallery shows
MISTAKES_SHOWN = 8


def raw_image(dataset, i: int) -> np.ndarray:
    """Item ``i`` of a ``TransformedSubset`` as the user's image (uint8 ``H x W x 3``, before the eval
    transform): the eval transform squashes the whole image to the input size, so a map at the input size
    resized to it lines up."""
    image, _ = dataset.images[int(dataset.indices[i])]
    return np.asarray(image.convert("RGB"))


def image_path(dataset, i: int) -> str | None:
    """The file of item ``i`` (its display name), or None for in-memory images."""
    from transferkit.data import display_name

    paths = getattr(dataset.images, "paths", None)
    return display_name(paths[int(dataset.indices[i])]) if paths else None


def named(rows: list[dict], classes: list[str], dataset) -> list[dict]:
    """``confident_mistakes``' rows with class names (and the image's file when it has one), for metrics.json."""
    out = []
    for r in rows:
        row = {"index": r["index"], "true": classes[r["true"]], "pred": classes[r["pred"]], "prob": r["prob"]}
        path = image_path(dataset, r["index"])
        out.append(row | ({"path": path} if path else {}))
    return out


def mistake_cams(model: torch.nn.Module, dataset, rows: list[dict]) -> tuple[np.ndarray | None, str | None]:
    """Grad-CAM maps of the predicted class for the mistakes' images, or ``(None, why)`` for a model with
    no known Grad-CAM layer (the gallery then shows the images alone)."""
    from transferkit.evaluation.gradcam import gradcam

    if not rows:
        return np.zeros((0, 1, 1), dtype=np.float32), None
    x = torch.stack([dataset[r["index"]][0] for r in rows])
    try:
        return gradcam(model, x, [r["pred"] for r in rows]), None
    except ValueError as e:
        return None, f"No Grad-CAM: {e}."


def error_analysis(model: torch.nn.Module, dataset, classes: list[str], folder: Path, *,
                   logits: torch.Tensor | None = None, device=None, batch_size: int = 64,
                   n: int = MISTAKES_SHOWN, name: str = MISTAKES_PNG) -> dict:
    """The ``n`` most confident mistakes of ``model`` on ``dataset`` (a ``TransformedSubset`` through the
    eval transform; ``logits`` of it when already computed) and their gallery ``folder/name``
    (none without mistakes). Returns ``{"mistakes": [{index, true, pred, prob[, path]}], "gallery": name or
    None, "note": why there is no Grad-CAM or None}``."""
    from transferkit.evaluation.metrics import predict_logits
    from transferkit.evaluation.mistakes import confident_mistakes
    from transferkit.report.gallery import plot_mistakes_gallery

    if logits is None:
        logits, _ = predict_logits(model, torch.utils.data.DataLoader(dataset, batch_size=batch_size), device)
    labels = torch.as_tensor(np.asarray(dataset.targets))
    rows = confident_mistakes(logits.float().softmax(-1), labels, n)
    cams, note = mistake_cams(model, dataset, rows)
    gallery = None
    if rows:
        images = [raw_image(dataset, r["index"]) for r in rows]
        gallery = plot_mistakes_gallery(images, cams, rows, classes, Path(folder) / name).name
    return {"mistakes": named(rows, classes, dataset), "gallery": gallery, "note": note}


def uncalibrated(logits: torch.Tensor, labels: torch.Tensor, split: str, why: str) -> dict:
    """Calibration figures without a temperature (no labelled validation split to fit one on): the ECE of
    ``softmax(logits)`` on ``split``, and ``why`` no temperature was fitted."""
    from transferkit.evaluation.calibration import calibrated_probs, expected_calibration_error

    return {"temperature": None, f"{split}_ece": expected_calibration_error(calibrated_probs(logits), labels),
            "note": why}


__all__ = ["MISTAKES_PNG", "MISTAKES_SHOWN", "error_analysis", "raw_image", "uncalibrated"]
