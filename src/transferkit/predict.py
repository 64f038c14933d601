"""Predict with a finished run: ``model.json`` + ``model.safetensors`` are all it needs.

Every way a run folder or an input can be wrong ends in one line: a missing,
truncated or empty ``model.safetensors`` or weights of another model
(WeightsError), a missing, non-JSON or incomplete ``model.json`` or a run path
that is a file (RunDirError), a bad ``topk`` or ``device`` (ConfigError),
missing or unreadable images (DataError; with ``skip_bad_images`` the unreadable
ones are skipped and listed in the result's ``skipped``, and none readable is a
DataError). Nothing is written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from transferkit.backbones import build_from_description
from transferkit.data import ImageSet, TransformedSubset, build_transform, check_images
from transferkit.data import display_name, iter_image_files, quoted
from transferkit.errors import ConfigError, DataError, RunDirError, WeightsError
from transferkit.evaluation.features import resolve_device
from transferkit.rundir import RunDir, load_weights

REQUIRED_KEYS = ("architecture", "num_classes", "classes", "data_config")


def read_model_json(run: RunDir) -> dict:
    """``model.json`` of a run, checked for the keys predict needs."""
    try:
        meta = json.loads(run.model_json.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunDirError(f"{quoted(run.model_json)} is not readable JSON ({display_name(e)}); "
                          "it is written at the end of a run: rerun or resume it (--resume)") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise RunDirError(f"{quoted(run.model_json)} lacks {', '.join(missing)}; "
                          "was it written by transferkit finetune? rerun the run")
    classes, cfg = meta["classes"], meta["data_config"]
    if not (isinstance(classes, list) and len(classes) == meta["num_classes"]
            and all(isinstance(c, str) for c in classes)):
        raise RunDirError(f"{quoted(run.model_json)}: classes must be {meta['num_classes']} names "
                          "(num_classes); the file was edited or damaged, rerun the run")
    if not (isinstance(cfg, dict) and isinstance(cfg.get("input_size"), list) and cfg["input_size"]):
        raise RunDirError(f"{quoted(run.model_json)}: data_config lacks input_size; rerun the run")
    t = meta.get("temperature", 1.0)  # calibration temperature; absent in runs before it = 1.0
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
        raise RunDirError(f"{quoted(run.model_json)}: temperature must be a positive number, got {t!r}; "
                          "fix it (1.0 = uncalibrated) or rerun the run")
    return meta


def load_run_model(run_dir: Path | str, device: str | None = None) -> tuple[torch.nn.Module, dict]:
    """The trained model of a run (eval mode, on ``device``, see :func:`resolve_device`)
    and its ``model.json`` metadata."""
    target = resolve_device(device)
    run = RunDir(run_dir)
    if run.path.exists() and not run.path.is_dir():
        raise RunDirError(f"{quoted(run.path)} is a file, not a run directory; give the run's folder")
    if not run.path.is_dir():
        raise RunDirError(f"run directory {quoted(run.path)} not found")
    if not run.model_json.is_file():
        raise RunDirError(f"{quoted(run.path)} has no model.json; is the run finished? (resume it with --resume)")
    meta = read_model_json(run)
    if meta.get("kind") == "pretrain":
        raise RunDirError(f"{quoted(run.path)} is a pretrain run: a backbone without a classifier; fine-tune it "
                          f"first: transferkit finetune --weights {run.path} --data DATA")
    model = build_from_description(meta)
    try:
        state = load_weights(run.weights)
    except RunDirError:
        raise
    except Exception as e:  # safetensors raises its own error type on a truncated or empty file
        raise WeightsError(f"{quoted(run.weights)} is damaged ({display_name(str(e).splitlines()[0])}); "
                           "rerun the run to write it again") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise WeightsError(f"{quoted(run.weights)} does not fit {meta.get('architecture')}: "
                           f"{display_name(str(e).splitlines()[0])}") from None
    return model.eval().to(target), meta


def eval_transform(meta: dict):
    """The run's evaluation transform (its ``model.json`` data config, at its input size)."""
    cfg = meta["data_config"]
    return build_transform(cfg, cfg["input_size"][-1], train=False)


def run_data_sample(run_dir: Path | str, meta: dict, count: int, seed: int, split: str) -> TransformedSubset | None:
    """Up to ``count`` seeded images of the data the run was trained on (its ``config.yaml``), through
    its eval transform: ``split`` ``train``, or ``test`` (the data's test split, else its images).
    None when the run records no data or it cannot be read here (moved, another machine)."""
    import yaml

    from transferkit.data import load_source

    try:
        spec = (yaml.safe_load(RunDir(run_dir).config.read_text()) or {})["data"]
        source = load_source(spec)
    except Exception:  # noqa: BLE001 -- any failure means: no data of the run here; callers say so
        return None
    images = source.test if split == "test" and source.test is not None else source.train
    pick = np.random.default_rng(seed).permutation(len(images))[:count]
    return TransformedSubset(images, pick, eval_transform(meta))


def load_backend(run_dir: Path | str, device: str | None, backend: str):
    """``(callable model, model.json)``: the PyTorch model, or the run's ``model.onnx`` in onnxruntime."""
    if backend == "torch":
        return load_run_model(run_dir, device)
    if backend != "onnxruntime":
        raise ConfigError(f"unknown --backend '{backend}'; choose torch or onnxruntime")
    run = RunDir(run_dir)
    onnx_file = run.path / "model.onnx"
    if not onnx_file.is_file():
        raise RunDirError(f"{quoted(onnx_file)} not found; write it with: transferkit export {quoted(run.path)}")
    from transferkit.export import OnnxModel

    return OnnxModel(onnx_file), read_model_json(run)


def collect_images(paths: list[Path | str]) -> list[Path]:
    """Image files among ``paths``: files as given, folders searched recursively
    with the training filter (:func:`transferkit.data.iter_image_files`)."""
    if not paths:
        raise DataError("no images given; name image files or folders")
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = list(iter_image_files(p))
            if not found:
                raise DataError(f"no images found in folder {quoted(p)}")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{quoted(p)} not found")
    return files


class Predictions(list):
    """``predict``'s result: one ``{path, top}`` per image, and ``skipped``: the ``display_name`` of each
    unreadable file skipped under ``skip_bad_images``; ``evaluation``: the scores against the images' folder
    names under ``labels`` (:func:`~transferkit.evaluation.metrics.labelled_scores`), else None."""

    def __init__(self, results=(), skipped=(), evaluation: dict | None = None):
        super().__init__(results)
        self.skipped = list(skipped)
        self.evaluation = evaluation


def shown(names: list[str], first: int = 3) -> str:
    """The first few names, quoted, and how many more: ``'a.png', 'b.png' and 4 more``."""
    more = f" and {len(names) - first} more" if len(names) > first else ""
    return ", ".join(f"'{n}'" for n in names[:first]) + more


def readable_images(files: list[Path], skip_bad_images: bool) -> tuple[list[Path], list[str]]:
    """``(readable files, display names of the skipped ones)``; an unreadable file is a DataError unless
    ``skip_bad_images``, and so is none being readable."""
    bad = check_images(files, skip_bad_images)
    skipped = [display_name(f) for f in files if f in bad]
    if files and len(skipped) == len(files):
        raise DataError(f"none of the {len(files)} image(s) is readable (skipped: {shown(skipped)}); "
                        "fix or delete them, or give other images")
    return [f for f in files if f not in bad], skipped


def predict(run_dir: Path | str, paths: list[Path | str], topk: int = 3,
            batch_size: int = 32, skip_bad_images: bool = False,
            device: str | None = "cpu", backend: str = "torch", labels: bool = False,
            gallery: Path | str | None = None) -> Predictions:
    """Top-k classes with probabilities for each image: ``[{path, top: [{class, prob}]}]`` (a list whose
    ``skipped`` names the unreadable files skipped under ``skip_bad_images``).

    ``topk``: 3 by default (a table that reads at a glance; ``transferkit predict``
    takes its ``--topk`` default from here); larger than the number of classes is
    clamped to it (every class is listed); below 1 is a ConfigError.
    ``device``: see :func:`resolve_device` (None is the CPU too).
    ``path`` is the file's :func:`~transferkit.data.display_name` (its text for
    ordinary names; undecodable bytes as ``\\xNN``), so results always print and
    JSON-encode. ``backend``: ``torch``, or ``onnxruntime`` to serve from the run's
    ``model.onnx`` (written by ``transferkit export``). ``labels``: each image's true class is the name of
    its folder (class folders, as training reads them); the result's ``evaluation`` then holds accuracy,
    macro-F1, the calibration error of the probabilities shown and per-class scores. ``gallery`` (with
    ``labels``, the torch backend): a PNG path for the most confident mistakes beside their Grad-CAM
    (``engine.analysis``, as a run's ``mistakes.png``); ``evaluation["mistakes"]`` lists them.

    The example reads the run ``runs/digits`` that ``tk.finetune``'s example writes, an image file
    ``digit.png`` and a folder ``more_digits/`` holding four images (here in class folders).

    Example::

        >>> import transferkit as tk
        >>> results = tk.predict("runs/digits", ["digit.png", "more_digits/"], topk=1)
        >>> len(results), results.skipped
        (5, [])
        >>> results[0]
        {'path': 'digit.png', 'top': [{'class': '...', 'prob': ...}]}

    Images in memory (PIL, numpy, torch): ``tk.load("runs/digits").predict(image)``.
    """
    check_topk(topk, batch_size)
    check_gallery(gallery, labels, backend)
    model, meta = load_backend(run_dir, device, backend)
    target = next(model.parameters()).device if backend == "torch" else torch.device("cpu")
    batch_size = getattr(model, "fixed_batch", None) or batch_size  # an ONNX file exported for batch 1
    files, skipped = readable_images(collect_images(paths), skip_bad_images)
    classes, temperature = meta["classes"], meta.get("temperature", 1.0)
    truth = folder_labels(files, classes) if labels else np.zeros(len(files), dtype=np.int64)
    dataset = TransformedSubset(ImageSet(files, truth, classes), range(len(files)), eval_transform(meta))
    results, outputs = Predictions(skipped=skipped), []
    with torch.inference_mode():  # the forward passes only: the weights stay ordinary tensors for Grad-CAM
        for i, (x, _) in enumerate(DataLoader(dataset, batch_size=batch_size)):
            outputs.append(torch.as_tensor(model(x.to(target))).float().cpu())
            for j, top in enumerate(top_classes(outputs[-1], classes, topk, temperature)):
                results.append({"path": display_name(files[i * batch_size + j]), "top": top})
    if labels:
        from transferkit.evaluation.metrics import labelled_scores

        results.evaluation = labelled_scores(torch.cat(outputs), torch.as_tensor(truth), classes, temperature)
    if gallery:
        from transferkit.engine.analysis import error_analysis

        gallery = Path(gallery)
        errors = error_analysis(model, dataset, classes, gallery.parent, logits=torch.cat(outputs), name=gallery.name)
        results.evaluation |= {"mistakes": errors["mistakes"], "gallery": errors["gallery"] and str(gallery),
                               "gradcam_note": errors["note"]}
    return results


def check_gallery(gallery: Path | str | None, labels: bool, backend: str) -> None:
    """``--gallery`` needs ``--labels`` (mistakes need true classes), the torch backend (Grad-CAM needs
    the PyTorch model), a ``.png`` name and an existing folder."""
    if gallery is None:
        return
    gallery = Path(gallery)
    if not labels:
        raise ConfigError("--gallery shows the mistakes, which need the true classes: add --labels")
    if backend != "torch":
        raise ConfigError("--gallery draws Grad-CAM, which needs the PyTorch model: use --backend torch")
    if gallery.suffix.lower() != ".png" or not gallery.parent.is_dir():
        raise ConfigError(f"--gallery must be a .png file in an existing folder, got {quoted(gallery)}")


def folder_labels(files: list[Path], classes: list[str]) -> np.ndarray:
    """Each file's class index: its folder's name among ``classes``; a DataError naming the files elsewhere."""
    index = {c: k for k, c in enumerate(classes)}
    stray = [display_name(f) for f in files if f.parent.name not in index]
    if stray:
        raise DataError(f"--labels reads each image's class from its folder's name, but {shown(stray)} lie outside "
                        f"a folder named after a class of the run ({shown(classes, 5)}); give class folders")
    return np.asarray([index[f.parent.name] for f in files], dtype=np.int64)


def check_topk(topk: int, batch_size: int = 1) -> None:
    """``topk`` and ``batch_size`` at least 1 (ConfigError otherwise)."""
    if topk < 1:
        raise ConfigError(f"--topk must be >= 1, got {topk}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")


def top_classes(logits: torch.Tensor, classes: list[str], topk: int, temperature: float = 1.0) -> list[list[dict]]:
    """Per row of ``logits`` (B, C): the ``min(topk, C)`` most probable classes, ``[{class, prob}]`` with
    ``prob = softmax(logits / T)_c`` rounded to 6 decimals, most probable first. ``T``: the run's
    fitted temperature (model.json ``temperature``, 1.0 when absent; see evaluation/calibration.py)."""
    top = (logits.float() / float(temperature)).softmax(-1).topk(min(topk, len(classes)), dim=-1)
    return [[{"class": classes[c], "prob": round(float(p), 6)} for p, c in zip(values, indices)]
            for values, indices in zip(top.values.tolist(), top.indices.tolist())]
