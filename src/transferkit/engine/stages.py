"""The shared stages every training command is made of (see docs/architecture.md).

    load_data -> build_model -> (recipe) -> train -> evaluate -> save_model -> write_run_report

Each stage is a function of what the previous ones returned; ``finetune`` is their
sequence, and later commands (adapt, distill, pretrain) reuse them with other recipes.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from transferkit.config import FinetuneConfig
from transferkit.data import (TransformedSubset, build_transform, cap_per_class, data_config_for, load_source, make_splits,
                              train_transform)
from transferkit.errors import TrainingError
from transferkit.rundir import RunDir, is_global_zero


@dataclass
class Data:
    """The data stage: a source, its classes and seeded splits (``split -> (images, indices)``)."""

    source: object
    classes: list[str]
    subsets: dict[str, tuple[object, np.ndarray]]

    @property
    def train_per_class(self) -> float:
        return len(self.subsets["train"][1]) / len(self.classes)

    def size(self, split: str) -> int:
        return len(self.subsets[split][1])

    def images(self, split: str, transform) -> TransformedSubset:
        base, idx = self.subsets[split]
        return TransformedSubset(base, idx, transform)

    def record(self, **extra) -> dict:
        """What ``data.json`` records of the data: its classes and content (``Source.content``), so that
        ``--resume`` can refuse data that changed (``checks.check_same_data``); ``extra`` added."""
        return {"classes": self.classes, **extra, "fingerprint": self.source.content()}

    def fingerprint(self, split: str) -> str:
        """Identifies the images of ``split`` for the feature cache, as ``rank`` does:
        :meth:`ImageSet.fingerprint` of the selected images."""
        base, idx = self.subsets[split]
        return base.subset(idx).fingerprint()


def record_run(run: RunDir, cfg: FinetuneConfig, data_record: dict, *, resume: bool, changed: dict) -> None:
    """``config.yaml`` and ``data.json`` of a new run (global rank zero). On ``--resume``, ``config.yaml``
    is written again when safe changes were applied (``--epochs``, ...): it states the settings the run
    goes on with, as ``metrics.json`` will; ``data.json`` keeps what the run started from."""
    from transferkit.rundir import write_json

    if not is_global_zero():
        return
    if not resume or changed:
        cfg.save(run.config)
    if not resume:
        write_json(run.path / "data.json", data_record)


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch (splits are seeded separately, by ``make_splits``), and tell
    Lightning to seed its data-loader workers from it — without importing Lightning, which the
    cached-feature recipes never need."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PL_GLOBAL_SEED"], os.environ["PL_SEED_WORKERS"] = str(seed), "1"


def quiet_lightning() -> None:
    """Keep the terminal for progress bars and results: no Lightning banners or tips."""
    import logging
    import warnings

    import lightning.pytorch  # noqa: F401  (sets its loggers to INFO on import; override after)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*(LeafSpec|weights_only|num_workers|does not have many workers"
                                               r"|module\(s\) in eval mode|Grad strides).*")


def load_data(cfg: FinetuneConfig, source=None) -> Data:
    """Load ``cfg.data`` (unless ``source`` is given, already loaded) and make the seeded train/val/test
    splits (test: the source's own, if any). A config without label options (pretrain) uses every image."""
    source = source or load_source(cfg.data, skip_bad_images=cfg.skip_bad_images)
    per_class, test_per_class = getattr(cfg, "per_class", None), getattr(cfg, "test_per_class", None)
    splits = make_splits(source.train.targets, val_split=cfg.val_split, test_split=cfg.test_split,
                         seed=cfg.seed, has_test=source.test is not None, per_class=per_class,
                         classes=source.classes)
    test_set = source.test if source.test is not None else source.train
    test_idx = splits.test if source.test is None else np.arange(len(test_set))
    if test_per_class:
        test_idx = cap_per_class(test_idx, test_set.targets, test_per_class, cfg.seed)
    return Data(source, source.classes, {"train": (source.train, splits.train), "val": (source.train, splits.val),
                                         "test": (test_set, np.asarray(test_idx))})


@dataclass
class Built:
    """The model stage: the timm model with its new head, and its input transforms."""

    model: torch.nn.Module
    data_config: dict
    eval_tf: object
    train_tf: object


def build_model(cfg: FinetuneConfig, num_classes: int, image_size: int, augment: str = "light") -> Built:
    """The model with its new head; the training transform is ``augment``'s (``data.train_transform``)."""
    from transferkit.backbones import load_backbone
    from transferkit.surgery.norm import batchnorm_to_groupnorm

    model = load_backbone(cfg.model, cfg.weights, num_classes=num_classes, image_size=image_size, **cfg.model_args)
    if cfg.norm == "groupnorm":
        batchnorm_to_groupnorm(model)
    model = model.to(memory_format=torch.channels_last)  # measured faster on CPU (benchmarks/bench_train_step.py)
    data_cfg = data_config_for(model, image_size)
    return Built(model, data_cfg, build_transform(data_cfg, image_size, train=False),
                 train_transform(data_cfg, image_size, augment, hflip=cfg.hflip))


def source_model(cfg: FinetuneConfig, image_size: int) -> torch.nn.Module:
    """The pretrained model with its own (source) head: LwF's teacher and the forgetting reference."""
    from transferkit.backbones import load_backbone

    return load_backbone(cfg.model, cfg.weights, image_size=image_size).eval()


def loader(dataset, cfg: FinetuneConfig, shuffle: bool = False, drop_last: bool = False, sampler=None) -> DataLoader:
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=shuffle, sampler=sampler, num_workers=cfg.workers,
                      persistent_workers=cfg.workers > 0, drop_last=drop_last)


def train_loader(dataset, cfg: FinetuneConfig, drop_last: bool = False, sampler=None) -> DataLoader:
    """Shuffled training batches, the loader every training command fits on. A last batch of exactly
    one image is dropped (BatchNorm cannot normalise one image in training mode); under DDP the count
    is each process's share, ``ceil(n / world_size)`` (Lightning's sampler pads the shares even).
    ``drop_last``: drop any partial last batch. Fewer than 2 images per process are refused before
    the run starts (``checks.check_train_images``). ``sampler`` (e.g. ``data.balanced_sampler``, as many
    draws as images) replaces the shuffle; Lightning shards it across processes."""
    per_process = math.ceil(len(dataset) / world_size(cfg))
    return loader(dataset, cfg, shuffle=sampler is None, sampler=sampler,
                  drop_last=drop_last or per_process % cfg.batch_size == 1)


def world_size(cfg: FinetuneConfig) -> int:
    """How many training processes share the data: devices (a count, or a list's length; ``auto``
    counted as 1) times nodes."""
    d = lightning_devices(cfg.devices)
    return max(len(d) if isinstance(d, list) else 1 if d == "auto" else abs(d), 1) * cfg.num_nodes


def device_of(cfg: FinetuneConfig) -> torch.device:
    """The one device that feature extraction, probes and evaluation run on (rank zero's):
    ``--accelerator`` cpu/gpu/cuda/auto, and the first of ``--devices`` when it lists GPUs."""
    from transferkit.evaluation.features import resolve_device

    acc = {"gpu": "cuda"}.get(cfg.accelerator, cfg.accelerator)
    if acc == "cuda" and "," in cfg.devices:
        acc = f"cuda:{cfg.devices.strip('[] ').split(',')[0].strip()}"
    return resolve_device(acc)


@dataclass
class Trained:
    """The train stage's result: the fitted network (on rank zero) and its timings."""

    net: torch.nn.Module
    train_seconds: float
    resumed: bool = False
    is_global_zero: bool = True
    extra: dict = field(default_factory=dict)
    #: cached ``{split: (features, labels)}`` when the head was fitted on them
    features: dict | None = None


def train_lightning(module, cfg: FinetuneConfig, run: RunDir, loaders: dict, epochs: int, *,
                    callbacks: list, resume_from: Path | None, prep_seconds: float, progress: bool,
                    ema_decay: float = 0.0) -> Trained:
    """Fit ``module`` (a :class:`TransferModule`) with Lightning; every rank runs this.

    The final weights are gathered inside ``fit`` on every rank (FSDP shards them) and
    loaded, on global rank zero, into a plain copy of the network made before training.
    ``ema_decay`` > 0: an exponential moving average of the weights (Lightning's
    ``EMAWeightAveraging``, buffers included) is what validation sees and what training ends
    with; it is saved in every checkpoint, so a resumed run averages on. Global rank zero logs: the
    CSV logs (``metrics.csv``) and ``--logger``'s TensorBoard or MLflow (``engine.loggers``).
    """
    quiet_lightning()
    import lightning as L

    from transferkit.engine.callbacks import AtomicCheckpoint, FinalWeights, ProgressBar, TrainTimer, ema_callback
    from transferkit.engine.loggers import training_loggers

    plain = copy.deepcopy(module.net)
    timer, final = TrainTimer(prep_seconds=prep_seconds), FinalWeights()
    averaging = [ema_callback(ema_decay)] if ema_decay else []
    callbacks = [AtomicCheckpoint(run.checkpoints), timer, *callbacks, *averaging, final]  # the average before final
    trainer = L.Trainer(
        max_epochs=epochs, accelerator=cfg.accelerator, devices=lightning_devices(cfg.devices), num_nodes=cfg.num_nodes,
        strategy=cfg.dist, precision=cfg.precision,
        callbacks=callbacks + ([ProgressBar(leave=True)] if progress else []),
        logger=training_loggers(cfg, run) if is_global_zero() else False,  # CSV always, + --logger's
        default_root_dir=run.path,
        enable_progress_bar=progress, enable_model_summary=False, enable_checkpointing=False,
        log_every_n_steps=1, num_sanity_val_steps=0, deterministic=False)
    try:
        trainer.fit(module, loaders["train"], loaders["val"] if len(loaders["val"].dataset) else None,
                    ckpt_path=str(resume_from) if resume_from else None)
    except TrainingError as e:
        kept = (f"last good checkpoint: {run.last_checkpoint}" if run.last_checkpoint.is_file()
                else "no epoch had finished, so there is no checkpoint")
        raise TrainingError(f"{e} ({kept})") from None
    if trainer.is_global_zero:  # a resume past the last epoch does not train: the loaded checkpoint is final
        state = final.state or module.state_dict()
        plain.load_state_dict({k[len("net."):]: v for k, v in state.items() if k.startswith("net.")})
    return Trained(plain, timer.seconds, resume_from is not None, trainer.is_global_zero)


def lightning_devices(devices: str):
    """Lightning's ``devices`` from the CLI's string: ``auto``, a count, or a list ``0,2``."""
    if devices == "auto" or devices.lstrip("-").isdigit():
        return devices if devices == "auto" else int(devices)
    return [int(d) for d in devices.strip("[]").split(",") if d.strip()]


def split_logits(net: torch.nn.Module, loaders: dict, device: torch.device, splits=("test", "val")) -> dict:
    """``{split: (logits, labels)}`` of ``net`` for the non-empty ``splits``: one pass each, which the scores
    (:func:`scored`), the calibration and the error analysis of a run share."""
    from transferkit.evaluation.metrics import predict_logits

    return {s: predict_logits(net, loaders[s], device) for s in splits if len(loaders[s].dataset)}


def scored(outputs: dict, num_classes: int) -> dict:
    """``{split: evaluation.metrics.scores(...)}`` of :func:`split_logits`' outputs."""
    from transferkit.evaluation.metrics import scores

    return {s: scores(logits, labels, num_classes) for s, (logits, labels) in outputs.items()}


def evaluate_splits(net: torch.nn.Module, loaders: dict, num_classes: int, device: torch.device,
                    splits=("test", "val")) -> dict:
    """``{split: evaluate(...)}`` for the non-empty ``splits``."""
    return scored(split_logits(net, loaders, device, splits), num_classes)


def save_model(run: RunDir, model: torch.nn.Module, built: Built, cfg: FinetuneConfig, classes: list[str],
               strategy: str, temperature: float = 1.0) -> None:
    """``model.safetensors`` + ``model.json``: all ``predict`` needs (``temperature``: the fitted
    calibration temperature, predict's ``softmax(logits / T)``; absent in older runs = 1.0); and timm's
    ``config.json`` (:func:`write_timm_config`)."""
    from transferkit.backbones import describe_model
    from transferkit.rundir import save_weights, write_json

    save_weights(run.weights, model)
    write_json(run.model_json, {**describe_model(model), "norm": cfg.norm, "classes": classes,
                                "data_config": built.data_config, "strategy": strategy, "temperature": temperature,
                                "transferkit_format": 1})
    write_timm_config(run, model, classes, built.data_config, cfg.norm)


def write_timm_config(run: RunDir, model: torch.nn.Module, classes: list[str], data_config: dict,
                      norm: str = "batchnorm") -> bool:
    """timm's ``config.json`` beside ``model.safetensors`` (``backbones.timm_config``), so that
    ``timm.create_model("local-dir:RUN", pretrained=True)`` is the run's model, evaluated through the
    run's eval transform (``data.eval_data_config``); ``classes`` empty: a backbone (``num_classes`` 0).
    None for a model timm cannot rebuild from its name and arguments (``--norm groupnorm``: its
    BatchNorm layers were replaced). Returns whether it was written."""
    from transferkit.backbones import timm_config
    from transferkit.data import eval_data_config
    from transferkit.rundir import write_json

    if norm == "groupnorm":
        return False
    size = int(data_config["input_size"][-1])
    write_json(run.path / "config.json", timm_config(model, classes, eval_data_config(data_config, size)))
    return True


def write_card(run: RunDir, cfg, metrics: dict) -> bool:
    """The run's model card ``README.md`` (``report.card``), from its ``model.json`` (written by then),
    ``cfg`` and ``metrics``; a ``README.md`` of the user's is left as it is. Returns whether it was written."""
    import json

    from transferkit.report.card import model_card, write_model_card

    meta = json.loads(run.model_json.read_text(encoding="utf-8"))
    text = model_card(run.kind, meta, cfg.model_dump(mode="json"), metrics, run.path.name,
                      timm_loadable=(run.path / "config.json").is_file())
    return write_model_card(run.path / "README.md", text)


def write_run_report(run: RunDir, cfg: FinetuneConfig, metrics: dict, classes: list[str]) -> None:
    """Learning curve, confusion matrix, WiSE-FT curve, reliability diagram, ``report.md`` (per-class scores, the
    most confident mistakes and their gallery); ``metrics.json`` last
    (its presence means the run directory is complete)."""
    from transferkit.evaluation.metrics import per_class_table
    from transferkit.report import plot_confusion, plot_learning_curve, plot_reliability, plot_wise_curve, write_report
    from transferkit.report.gallery import mistakes_section
    from transferkit.report.markdown import calibration_lines
    from transferkit.rundir import write_json

    rows = run.merge_logs()
    plots = {}
    if rows:
        plots["Learning curve"] = plot_learning_curve(rows, run.path / "learning_curve.png").name
    if metrics.get("test_confusion"):
        plots["Confusion matrix (test)"] = plot_confusion(metrics["test_confusion"], classes,
                                                          run.path / "confusion_matrix.png").name
    if metrics.get("wise_curve"):
        plots["WiSE-FT alpha curve"] = plot_wise_curve(metrics["wise_curve"], run.path / "wise_curve.png").name
    if (metrics.get("calibration") or {}).get("reliability"):
        plots["Reliability diagram (temperature scaling)"] = plot_reliability(metrics["calibration"],
                                                                              run.path / "reliability.png").name
    sections = calibration_lines(metrics.get("calibration"))
    sections += per_class_table(metrics["test_per_class"]) if metrics.get("test_per_class") else []
    if metrics.get("test_mistakes") is not None:
        sections += mistakes_section(metrics["test_mistakes"], "test", metrics.get("gradcam_note"))
    write_report(run.report, cfg.model_dump(), metrics, plots, sections=sections)
    write_card(run, cfg, metrics)
    write_json(run.metrics_json, metrics)


def seconds_since(start: float) -> float:
    return time.perf_counter() - start
