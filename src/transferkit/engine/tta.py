"""``tta``: test-time adaptation of a finished run on a (corrupted) test stream (issue 11).

    load the run's model -> load the stream (DATA's test split, seeded order) -> corrupt it
    -> for each method: adapt online, batch by batch, scoring each batch's predictions
    -> metrics.json (+ a leaderboard and heat map for a grid; + the adapted model with --save)

Online accuracy: each batch is predicted by the forward pass its own update is computed from, i.e.
before that update (as in TENT's and EATA's code). ``none`` -- the unadapted model on the very same
stream -- always runs first: it is ``accuracy_before``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from rich.progress import Progress
from torch.utils.data import DataLoader

from transferkit.config import TTAConfig
from transferkit.data import ImageSet, TransformedSubset, load_source
from transferkit.errors import ConfigError, DataError
from transferkit.engine.export import EXPORTED
from transferkit.rundir import RunDir, declare_kind, write_json

#: what a tta run writes (rundir.layout): the model only with --save; kept never (undone when it fails)
TTA_RUN = declare_kind("tta", ("config.yaml", "metrics.json", "report.md", "report.html", "tta.png",
                               "model.safetensors", "model.json", *EXPORTED), result="metrics.json", keep=())

ONLINE = "each batch is predicted by the forward pass its own update is computed from (before that update)"


@dataclass
class Stream:
    """The test stream: segments ``(name, ImageSet)`` in order; labels in the model's class indices."""

    segments: list[tuple[str, ImageSet]]
    classes: list[str]
    labelled: bool


def tta(cfg: TTAConfig, *, overwrite: bool = False, save: bool = False, progress: bool = True) -> dict:
    """Run every method of ``cfg`` on the stream; returns ``metrics.json``'s content.

    The example adapts the run ``runs/digits`` that ``tk.finetune``'s example writes, on 64 noisy test digits.

    Example::

        >>> import transferkit as tk
        >>> cfg = tk.TTAConfig(run="runs/digits", data="builtin:digits", corruptions=["gaussian_noise"],
        ...                    methods=["bn", "tent"], images=64, out="runs/tta")
        >>> metrics = tk.tta(cfg, progress=False)
        >>> metrics["methods"], metrics["images_per_corruption"], metrics["severity"]
        (['bn', 'tent'], 64, 5)
        >>> 0.0 <= metrics["accuracy_before"] <= 1.0
        True
    """
    from transferkit.predict import load_run_model
    from transferkit.tta import check_method

    if save and len(cfg.methods) != 1:
        raise ConfigError("--save writes one adapted model: give one --method")

    model, meta = load_run_model(cfg.run, cfg.device)
    for method in cfg.methods:
        check_method(method, model, cfg.options.get(method))
    inputs = [cfg.run] + ([] if cfg.data.startswith("builtin:") else [cfg.data])
    run = RunDir(cfg.out, kind=TTA_RUN).check(overwrite=overwrite, inputs=inputs)
    stream = load_stream(cfg, meta)
    fisher = eata_fisher(cfg, meta, model) if needs_fisher(cfg.methods) and cfg.fisher_images else None
    with run.open(overwrite=overwrite, inputs=inputs):
        cfg.save(run.config)
        cells, adapted = [], None
        for method in ["none"] + [m for m in cfg.methods if m != "none"]:
            got, adapted = run_method(method, model, stream, cfg, meta, fisher, progress)
            cells += got
        metrics = summarise(cfg, cells, stream, fisher is not None)
        if save:
            save_adapted(run, adapted, meta, metrics)
        write_outputs(run, cfg, metrics)
    return metrics


# ----------------------------------------------------------------------------- the stream
def load_stream(cfg: TTAConfig, meta: dict) -> Stream:
    """DATA's test split (else all of it), seeded order, at most ``cfg.images``; one segment per
    corruption (each corrupts the same images), or one ``clean`` segment."""
    source = load_source(cfg.data, allow_unlabelled=True)
    images = source.test if source.test is not None else source.train
    classes = meta["classes"]
    targets = remap_labels(images, classes, cfg.data) if source.labelled else np.full(len(images), -1)
    order = np.random.default_rng(cfg.seed).permutation(len(images))[: cfg.images or len(images)]
    if not cfg.corruptions:
        clean = ImageSet(images.subset(order).paths or _as_array(images.subset(order), None), targets[order],
                         classes, "clean")
        return Stream([("clean", clean)], classes, source.labelled)
    from transferkit.data.corruptions import corrupt_images

    size = int(meta["data_config"]["input_size"][-1])
    pixels = _as_array(images.subset(order), max(size, 32))
    segments = [(name, ImageSet(np.stack(corrupt_images(pixels, name, cfg.severity, cfg.seed)), targets[order],
                                classes, f"{name}-{cfg.severity}")) for name in cfg.corruptions]
    return Stream(segments, classes, source.labelled)


def remap_labels(images: ImageSet, model_classes: list[str], spec: str) -> np.ndarray:
    """The stream's labels as the model's class indices; DataError naming classes the model lacks."""
    unknown = [c for c in images.classes if c not in model_classes]
    if unknown:
        raise DataError(f"{spec} has classes the model does not know: {', '.join(unknown[:5])}"
                        f"{' ...' if len(unknown) > 5 else ''}; the run was trained on {', '.join(model_classes[:5])}"
                        f"{' ...' if len(model_classes) > 5 else ''}")
    index = np.array([model_classes.index(c) for c in images.classes], dtype=np.int64)
    return index[images.targets]


def _as_array(images: ImageSet, size: int | None) -> np.ndarray:
    """(N, S, S, 3) uint8 RGB; ``size`` None keeps the (common) native size."""
    def pixels(im: Image.Image) -> np.ndarray:
        return np.asarray(im if size is None else im.resize((size, size), Image.BICUBIC))
    return np.stack([pixels(im) for im, _ in images])


def needs_fisher(methods: list[str]) -> bool:
    """Whether a method of ``methods`` reads the Fisher diagonal (its ``needs_fisher`` trait: EATA)."""
    from transferkit.registry import TTA

    return any(TTA[m].traits.get("needs_fisher", False) for m in methods)


def eata_fisher(cfg: TTAConfig, meta: dict, model: torch.nn.Module) -> list[torch.Tensor] | None:
    """The Fisher diagonal (EATA's) on up to ``cfg.fisher_images`` clean training images of the run (from its
    ``config.yaml``); None when the run's data cannot be read here (EATA then runs as ETA)."""
    from transferkit.predict import run_data_sample
    from transferkit.tta import fisher_diagonal

    data = run_data_sample(cfg.run, meta, cfg.fisher_images, cfg.seed, "train")
    if data is None:
        return None
    device = next(model.parameters()).device
    batches = (x.to(device) for x, _ in DataLoader(data, batch_size=64))
    return fisher_diagonal(copy.deepcopy(model), batches)


# ----------------------------------------------------------------------------- adapting
def run_method(method: str, model: torch.nn.Module, stream: Stream, cfg: TTAConfig, meta: dict, fisher,
               progress: bool) -> tuple[list[dict], torch.nn.Module]:
    """One method over the stream: a fresh adapter per segment, or one for all with ``continual``."""
    from transferkit.predict import eval_transform
    from transferkit.tta import build_adapter

    from transferkit.registry import TTA

    device = next(model.parameters()).device
    prior = TTA[method].defaults.get("bn_prior", 0.0) if cfg.bn_prior is None else cfg.bn_prior
    make = lambda: build_adapter(method, copy.deepcopy(model), len(stream.classes), bn_prior=prior, lr=cfg.lr,  # noqa: E731
                                 steps=cfg.steps, episodic=cfg.episodic, optimizer=cfg.optimizer,
                                 fisher=fisher, options=cfg.options.get(method))
    transform = eval_transform(meta)
    cells, adapter = [], None
    for name, images in stream.segments:
        adapter = adapter if cfg.continual and adapter is not None else make()
        loader = DataLoader(TransformedSubset(images, range(len(images)), transform), batch_size=cfg.batch_size)
        cells.append({"method": method, "corruption": name, "bn_prior": prior,
                      **score_online(adapter, loader, device, f"{method} {name}", progress)})
    return cells, adapter


def score_online(adapter: torch.nn.Module, loader: DataLoader, device: torch.device, desc: str,
                 progress: bool) -> dict:
    """Online accuracy of ``adapter`` over ``loader`` (labels < 0: unlabelled, accuracy None)."""
    correct = labelled = seen = 0
    start, kept0, seen0 = time.perf_counter(), getattr(adapter, "kept", 0), getattr(adapter, "seen", 0)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(desc, total=len(loader))
        for x, y in loader:
            pred = adapter(x.to(device)).argmax(1).cpu()
            mask = y >= 0
            correct += int((pred[mask] == y[mask]).sum())
            labelled, seen = labelled + int(mask.sum()), seen + len(y)
            bar.advance(task)
    out = {"accuracy": correct / labelled if labelled else None, "images": seen,
           "seconds": round(time.perf_counter() - start, 2)}
    if hasattr(adapter, "kept"):
        out["kept_fraction"] = round((adapter.kept - kept0) / max(adapter.seen - seen0, 1), 4)
    return out


# ----------------------------------------------------------------------------- results
def summarise(cfg: TTAConfig, cells: list[dict], stream: Stream, with_fisher: bool) -> dict:
    """``metrics.json``: every (method, corruption) cell, each method's mean accuracy over the
    corruptions, ``accuracy_before`` (none's); ``method``/``accuracy_after`` for a single method."""
    means = {}
    for method in dict.fromkeys(c["method"] for c in cells):
        accs = [c["accuracy"] for c in cells if c["method"] == method]
        means[method] = None if None in accs else float(np.mean(accs))
    metrics = {"methods": cfg.methods, "accuracy_before": means["none"], "mean_accuracy": means,
               "batch_size": cfg.batch_size, "seed": cfg.seed, "episodic": cfg.episodic, "steps": cfg.steps,
               "lr": cfg.lr, "optimizer": cfg.optimizer, "corruptions": cfg.corruptions or ["clean"],
               "severity": cfg.severity if cfg.corruptions else None,
               "stream": "continual (one stream, never reset)" if cfg.continual else "reset for each corruption",
               "images_per_corruption": len(stream.segments[0][1]), "online": ONLINE,
               "eata_fisher": with_fisher, "labelled": stream.labelled,
               "baseline_verdict": none_verdict(means, len(stream.segments)), "cells": cells}
    if len(cfg.methods) == 1:
        metrics = {"method": cfg.methods[0], "accuracy_after": means[cfg.methods[0]], **metrics}
    return metrics


def none_verdict(means: dict[str, float | None], segments: int) -> str | None:
    """The methods whose mean online accuracy does not beat ``none`` (the unadapted model on the same
    stream; ``evaluation.baselines.grid_verdict``, one stream: no seed spread); None without labels."""
    from transferkit.evaluation.baselines import grid_verdict

    records = [{"method": m, "seed": 0, "accuracy": acc} for m, acc in means.items()]
    where = "the stream" if segments == 1 else f"the {segments} corruptions"
    return grid_verdict(records, "method", "none", "accuracy", measure=f"online accuracy (mean over {where})",
                        baseline_name="no adaptation (none)")


def save_adapted(run: RunDir, adapter: torch.nn.Module, meta: dict, metrics: dict) -> None:
    """The adapted model as a run ``predict`` reads: BatchNorm running statistics become the
    statistics it normalised the stream with."""
    from transferkit.rundir import save_weights
    from transferkit.tta import unwrap_bn

    model = unwrap_bn(adapter.model)
    save_weights(run.weights, model)
    write_json(run.model_json, {**meta, "tta": {"method": metrics["method"], "from_run": "see config.yaml"}})


def write_outputs(run: RunDir, cfg: TTAConfig, metrics: dict) -> None:
    """Leaderboard (table + heat map of error per corruption x method), then ``metrics.json``."""
    from transferkit.report.tta import write_tta_report

    write_tta_report(run.path, cfg.model_dump(), metrics)
    write_json(run.metrics_json, metrics)
