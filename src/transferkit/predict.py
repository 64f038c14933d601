"""Predict with a finished run: ``model.json`` + ``model.safetensors`` are all it needs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from transferkit.backbones import build_from_description
from transferkit.data import IMAGE_EXTENSIONS, ImageSet, TransformedSubset, build_transform
from transferkit.data import check_images
from transferkit.rundir import RunDir, load_weights
from transferkit.errors import DataError, RunDirError, WeightsError


def load_run_model(run_dir: Path | str) -> tuple[torch.nn.Module, dict]:
    """The trained model of a run (eval mode) and its ``model.json`` metadata."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise RunDirError(f"run directory {run.path} not found")
    if not run.model_json.is_file():
        raise RunDirError(f"{run.path} has no model.json; is the run finished? (resume it with --resume)")
    meta = json.loads(run.model_json.read_text())
    model = build_from_description(meta)
    try:
        model.load_state_dict(load_weights(run.weights))
    except RuntimeError as e:
        raise WeightsError(f"{run.weights} does not fit {meta.get('architecture')}: "
                           f"{str(e).splitlines()[0]}") from None
    return model.eval(), meta


def collect_images(paths: list[Path | str]) -> list[Path]:
    """Image files among ``paths``; folders are searched recursively (sorted)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
            if not found:
                raise DataError(f"no images found in folder {p}")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p} not found")
    return files


@torch.inference_mode()
def predict(run_dir: Path | str, paths: list[Path | str], topk: int = 5,
            batch_size: int = 32, skip_bad_images: bool = False) -> list[dict]:
    """Top-k classes with probabilities for each image: ``[{path, top: [{class, prob}]}]``."""
    model, meta = load_run_model(run_dir)
    files = collect_images(paths)
    bad = check_images(files, skip_bad_images)
    files = [f for f in files if f not in bad]
    classes = meta["classes"]
    cfg = meta["data_config"]
    images = ImageSet([str(f) for f in files], np.zeros(len(files), dtype=np.int64), classes)
    dataset = TransformedSubset(images, range(len(files)), build_transform(cfg, cfg["input_size"][-1], train=False))
    k = min(topk, len(classes))
    results = []
    for i, (x, _) in enumerate(DataLoader(dataset, batch_size=batch_size)):
        probs = model(x).softmax(-1)
        top = probs.topk(k, dim=-1)
        for j in range(len(x)):
            results.append({"path": str(files[i * batch_size + j]),
                            "top": [{"class": classes[c], "prob": round(float(p), 6)}
                                    for p, c in zip(top.values[j], top.indices[j])]})
    return results
