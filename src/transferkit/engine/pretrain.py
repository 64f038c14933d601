"""``pretrain``: self-supervised pretraining of a backbone on the user's images, a short sequence of
named stages.

    open the run -> load the images (labels only for the kNN monitor) -> build the backbone and the
    method (lightly's heads and losses) -> train (Lightning; kNN accuracy each epoch) -> save the
    backbone -> report

The result is a run directory whose ``model.safetensors`` is the backbone alone: ``finetune``,
``compare``, ``rank`` and ``distill`` take it as ``--weights RUN_DIR``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from transferkit.config import PretrainConfig
from transferkit.engine.run import Command, run_command
from transferkit.engine.stages import (device_of, load_data, loader, train_lightning, train_loader, write_card,
                                       write_timm_config)
from transferkit.errors import ConfigError
from transferkit.optim import OptimSettings
from transferkit.rundir import RunDir, declare_model_run, write_json

#: Input size when ``--image-size`` is unset (CNNs pool globally: fine-tuning may use another).
IMAGE_SIZE = 64
#: what a pretrain run writes besides a model run's files (rundir.layout); not exported (no classifier)
PRETRAIN_RUN = declare_model_run("pretrain", "pretrain_curves.png")


@dataclass
class Images:
    """The images stage: the pretraining images ``train = (images, indices)``, and the kNN monitor's labelled
    ``bank`` and ``query`` (or ``None``)."""

    train: tuple
    bank: tuple | None
    query: tuple | None
    classes: list[str]

    def record(self, cfg: PretrainConfig) -> dict:
        """``data.json``: the classes and the content of the images the training split is drawn from."""
        from transferkit.data import content_fingerprint

        return {"classes": self.classes, "data": cfg.data, "fingerprint": content_fingerprint(self.train[0])}


class Pretrain(Command):
    """``pretrain`` in the run skeleton (:mod:`transferkit.engine.run`)."""

    kind = "pretrain"

    def label(self, cfg: PretrainConfig) -> str:
        return f"pretrain-{cfg.method}"

    def load(self, cfg: PretrainConfig, state) -> None:
        state.images = load_images(cfg)

    def check(self, cfg: PretrainConfig, state, run: RunDir, *, overwrite: bool, resume: bool) -> None:
        from transferkit.engine.checks import check_device_and_run_dir, check_same_data, check_train_images, check_trainer

        check_trainer(cfg)
        check_train_images(len(state.images.train[1]), cfg, f"the pretraining set of {cfg.data}",
                           "" if not state.images.classes else " (or lower --val-split/--test-split)")
        check_device_and_run_dir(cfg, run, overwrite=overwrite, resume=resume)
        if resume:
            check_same_data(run, state.images.record(cfg))
        state.method, state.data_cfg = build(cfg)  # refuses a method that does not fit the backbone

    def record(self, cfg: PretrainConfig, state) -> dict:
        return state.images.record(cfg)

    def before(self, cfg: PretrainConfig, state) -> None:
        state.before = monitor_accuracy(cfg, state.method.backbone, state.images, state.data_cfg)

    def train(self, cfg: PretrainConfig, state, run: RunDir, resume: bool, progress: bool):
        trained, state.views = train(cfg, state.method, state.images, state.data_cfg, run, resume, progress)
        return trained

    def evaluate(self, cfg: PretrainConfig, state, run: RunDir, trained) -> dict:
        state.rows = run.merge_logs()
        return finish(cfg, trained, state.images, state.data_cfg, run, state.before, state.views, state.rows)

    def report(self, run: RunDir, cfg: PretrainConfig, metrics: dict, state) -> None:
        write_pretrain_report(run, cfg, metrics, state.rows)


def pretrain(cfg: PretrainConfig, *, overwrite: bool = False, resume: bool = False, progress: bool = True) -> dict:
    """Run (or resume) a pretraining run; returns its ``metrics.json`` content ({} on non-zero ranks).

    The example runs SimCLR on 128 digits for one epoch at 32 px; ``data`` may be any folder of images
    (labels are not needed).

    Example::

        >>> import transferkit as tk
        >>> cfg = tk.PretrainConfig(data="builtin:digits", method="simclr", images=128, epochs=1, image_size=32,
        ...                         out="runs/ssl")
        >>> metrics = tk.pretrain(cfg, progress=False)
        >>> metrics["method"], metrics["train_images"]
        ('simclr', 128)
        >>> metrics["next"]          # the backbone is the weights of a finetune run
        'transferkit finetune --weights runs/ssl --model efficientnet_lite0 --data DATA'

    In Python: ``tk.finetune(tk.FinetuneConfig(data="my_labelled/", weights="runs/ssl", out="runs/ft"))``.
    """
    return run_command(Pretrain(), cfg, overwrite=overwrite, resume=resume, progress=progress)


# ----------------------------------------------------------------------------- images
def load_images(cfg: PretrainConfig) -> Images:
    """The pretraining images: a labelled source's training split (validation and test held out; at most
    ``--images``, seeded), or every image of an unlabelled folder; the kNN monitor's bank (training images)
    and queries (validation images), at most ``--monitor-images`` each."""
    from transferkit.data import load_source

    source = load_source(cfg.data, skip_bad_images=cfg.skip_bad_images, allow_unlabelled=True)
    rng = np.random.default_rng(cfg.seed)
    if not source.labelled:
        return Images((source.train, _at_most(np.arange(len(source.train)), cfg.images, rng)), None, None, [])
    data = load_data(cfg, source)
    base, idx = data.subsets["train"]
    train = (base, _at_most(idx, cfg.images, rng))
    if not cfg.monitor or data.size("val") == 0:
        return Images(train, None, None, data.classes)
    bank = (base, _at_most(idx, cfg.monitor_images, rng))
    val_base, val_idx = data.subsets["val"]
    return Images(train, bank, (val_base, _at_most(val_idx, cfg.monitor_images, rng)), data.classes)


def image_size(cfg: PretrainConfig) -> int:
    return cfg.image_size or IMAGE_SIZE


def _at_most(idx: np.ndarray, n: int | None, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(idx, size=n, replace=False)) if n and n < len(idx) else np.asarray(idx)


# ----------------------------------------------------------------------------- model
def build(cfg: PretrainConfig):
    """The backbone (``num_classes=0``: pooled features) inside the method; its data config (normalisation)."""
    from transferkit.backbones import load_backbone
    from transferkit.data import data_config_for
    from transferkit.selfsup import build_method

    size = image_size(cfg)
    backbone = load_backbone(cfg.model, cfg.weights, num_classes=0, image_size=size, **cfg.model_args)
    if cfg.norm == "groupnorm":
        raise ConfigError("pretrain keeps the backbone's normalisation layers; drop --norm groupnorm")
    method = build_method(cfg.method, backbone, pretrained=cfg.weights != "none", options=cfg.options.get(cfg.method),
                          model_name=cfg.model)  # the method's check first (MAE: ViTs only)
    return method, data_config_for(backbone, size)


# ----------------------------------------------------------------------------- train
def train(cfg: PretrainConfig, method, images: Images, data_cfg: dict, run: RunDir, resume: bool, progress: bool):
    """Lightning fit of the method on the views of the training images; the kNN monitor as validation."""
    from transferkit.data import TransformedSubset, build_transform
    from transferkit.engine.pretrain_module import PretrainModule
    from transferkit.registry import SELFSUP
    from transferkit.selfsup import is_grayscale, method_views

    start = time.perf_counter()
    size = image_size(cfg)
    base, idx = images.train
    grey = is_grayscale(base.subset(idx), seed=cfg.seed)
    transform = method_views(cfg.method, size, data_cfg["mean"], data_cfg["std"], grey, cfg.hflip,
                             backbone=method.backbone)
    defaults = SELFSUP[cfg.method].defaults
    epochs = cfg.epochs or defaults["epochs"]
    optim = OptimSettings(lr=cfg.lr or defaults["lr"], weight_decay=cfg.weight_decay, optimizer=cfg.optimizer,
                          momentum=cfg.momentum, warmup_epochs=cfg.warmup_epochs)
    eval_tf = build_transform(data_cfg, size, train=False)
    monitored = images.bank is not None
    module = PretrainModule(method, optim, len(images.classes),
                            loader(TransformedSubset(*images.bank, eval_tf), cfg) if monitored else None, cfg.knn_k)
    loaders = {"train": train_loader(TransformedSubset(base, idx, transform), cfg, drop_last=len(idx) > cfg.batch_size),
               "val": loader(TransformedSubset(*(images.query if monitored else (base, idx[:0])), eval_tf), cfg)}
    resume_from = run.last_checkpoint if resume and run.last_checkpoint.is_file() else None
    trained = train_lightning(module, cfg, run, loaders, epochs, callbacks=[], resume_from=resume_from,
                              prep_seconds=time.perf_counter() - start, progress=progress)
    return trained, {"grayscale": grey, "views": len(transform(base[int(idx[0])][0])), "lr": optim.lr,
                     "epochs": epochs}


def monitor_accuracy(cfg: PretrainConfig, backbone, images: Images, data_cfg: dict) -> float | None:
    """kNN accuracy of ``backbone``'s features (bank -> queries), or None without a monitor."""
    if images.bank is None:
        return None
    from transferkit.data import TransformedSubset, build_transform
    from transferkit.selfsup import knn_accuracy

    tf = build_transform(data_cfg, image_size(cfg), train=False)
    return knn_accuracy(backbone, loader(TransformedSubset(*images.bank, tf), cfg),
                        loader(TransformedSubset(*images.query, tf), cfg), len(images.classes), cfg.knn_k,
                        device=device_of(cfg))


# ----------------------------------------------------------------------------- save, report
def finish(cfg: PretrainConfig, trained, images: Images, data_cfg: dict, run: RunDir, before, views: dict,
           rows: list[dict]) -> dict:
    """Save the backbone (what ``--weights RUN_DIR`` loads) and the metrics (``rows``: the merged epoch logs)."""
    from transferkit.backbones import describe_model
    from transferkit.rundir import save_weights
    from transferkit.surgery.heads import count_parameters

    backbone = trained.net.backbone
    after = monitor_accuracy(cfg, backbone, images, data_cfg)
    save_weights(run.weights, backbone)
    write_json(run.model_json, {**describe_model(backbone), "kind": "pretrain", "method": cfg.method,
                                "classes": [], "data_config": data_cfg, "strategy": f"pretrain-{cfg.method}",
                                "transferkit_format": 1})
    write_timm_config(run, backbone, [], data_cfg)
    curve = [{"epoch": int(float(r["epoch"])) + 1, "knn_acc": float(r["knn_acc"])} for r in rows
             if r.get("knn_acc") not in (None, "")]
    losses = [float(r["train_loss"]) for r in rows if r.get("train_loss") not in (None, "")]
    return {
        "method": cfg.method, "model": cfg.model, "weights": cfg.weights, "data": cfg.data, "run_dir": run.path.name,
        "image_size": image_size(cfg), "batch_size": cfg.batch_size, **views,
        "train_images": int(len(images.train[1])), "monitor_bank_images": _count(images.bank),
        "monitor_query_images": _count(images.query), "knn_k": cfg.knn_k,
        "knn_accuracy_before": before, "knn_accuracy": after, **start_verdict(cfg.method, after, before),
        "knn_curve": curve,
        "final_train_loss": losses[-1] if losses else None,
        "train_seconds": round(trained.train_seconds, 2), "resumed": trained.resumed,
        "backbone_params": count_parameters(backbone), "seed": cfg.seed,
        "next": f"transferkit finetune --weights {_shown(run.path)} --model {cfg.model} --data DATA",
    }


def start_verdict(method: str, after: float | None, before: float | None) -> dict:
    """``baseline_verdict``: the pretrained backbone's kNN validation accuracy against its starting
    weights' (``evaluation.baselines.verdict``); ``baseline_note`` when no labels feed the monitor."""
    from transferkit.evaluation.baselines import verdict

    if before is None:
        return {"baseline_verdict": None, "baseline_note": "no baseline verdict: no labelled validation images, so no "
                                                           "kNN monitor to compare the starting weights with"}
    return {"baseline_verdict": verdict(f"{method} pretraining", after, "its starting weights", before,
                                        measure="kNN validation accuracy"), "baseline_note": None}


def _shown(path) -> str:
    """``path`` relative to the working directory when it lies below it (no absolute paths in outputs), else its name."""
    import os

    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else path.name


def _count(part) -> int:
    return 0 if part is None else int(len(part[1]))


def write_pretrain_report(run: RunDir, cfg: PretrainConfig, metrics: dict, rows: list[dict]) -> None:
    """Loss and kNN curves, ``report.md``; ``metrics.json`` last (its presence means the run is complete)."""
    from transferkit.report.pretrain import write_pretrain_report as write

    write(run.report, cfg.model_dump(), metrics, rows, run.path / "pretrain_curves.png")
    write_card(run, cfg, metrics)
    write_json(run.metrics_json, metrics)


__all__ = ["pretrain"]
