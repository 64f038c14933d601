"""``distill``: train a student from a finished run (the teacher), a short sequence of named stages.

    open the run -> load the teacher -> load_data (the teacher's data by default) -> choose the recipe
    -> build the student -> train (labels + teacher; Lightning) -> evaluate student and teacher
    (accuracy, parameters, images/s) -> the student alone (``--baseline``) -> save -> report

The teacher is any run ``predict`` reads (finetune, adapt, distill); its classes must be the data's.
It sees the student's (augmented) batch at its own input size and normalisation
(:class:`~transferkit.distill.TeacherView`); without augmentation its logits are computed once.
``--unlabelled N`` adds N seeded training images outside every split, used without their labels.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from types import SimpleNamespace

import numpy as np
import torch
import yaml

from transferkit.config import DistillConfig
from transferkit.engine.analysis import MISTAKES_PNG
from transferkit.engine.export import EXPORTED
from transferkit.engine.finetune import Setup, choose_recipe
from transferkit.engine.run import Command, build_entry, run_command
from transferkit.engine.stages import (Built, Data, Trained, build_model, device_of, load_data, loader, save_model,
                                       scored, split_logits, train_lightning, train_loader, write_card)
from transferkit.errors import ConfigError, DataError, RunDirError
from transferkit.registry import DISTILL
from transferkit.rundir import RunDir, declare_model_run, write_json

#: The student's LR multiplier on its backbone when unset: a student from scratch has nothing to
#: protect (1.0); a pretrained one is fine-tuned as ``full`` does (0.1).
BACKBONE_LR_MULT = {"none": 1.0, "pretrained": 0.1}
#: Epochs when unset for a student from scratch (``--student-weights none``); a pretrained student
#: takes its recipe's (``full``: 6). Chosen on validation (benchmarks/RESULTS.md, "distill at small
#: label counts"): EfficientNet-Lite0 from scratch at 32 px on digits, 10/30/100 labels per class, 3
#: seeds: 20 epochs beat 6 on every seed, distilled and alone (10/class: chance at 6 epochs, 50% at 20;
#: 30/class: 50% -> 90%); longer budgets not measured.
SCRATCH_EPOCHS = 20
#: Throughput is measured on this many images per forward pass (eval mode, this machine's threads).
THROUGHPUT_BATCH = 32
BASELINE_DIR = "student-alone"
#: what a distill run writes besides a model run's files (rundir.layout): plots, the student-alone run
DISTILL_RUN = declare_model_run("distill", "learning_curve.png", "confusion_matrix.png", "distill.png",
                                "reliability.png", MISTAKES_PNG, f"{BASELINE_DIR}/", *EXPORTED)


@dataclass
class Teacher:
    """The teacher run: its model (eval mode, CPU), ``model.json`` and ``config.yaml``."""

    model: torch.nn.Module
    meta: dict
    config: dict

    @property
    def image_size(self) -> int:
        return int(self.meta["data_config"]["input_size"][-1])


class Distill(Command):
    """``distill`` in the run skeleton (:mod:`transferkit.engine.run`)."""

    kind = "distill"

    def label(self, cfg: DistillConfig) -> str:
        return f"distill-{cfg.loss}"

    def prepare(self, cfg: DistillConfig, state) -> DistillConfig:
        state.teacher = load_teacher(cfg.teacher)
        return with_defaults(cfg, state.teacher)  # as saved: a resume compares like with like

    def load(self, cfg: DistillConfig, state) -> None:
        state.data, teacher = load_data(cfg), state.teacher
        if state.data.classes != teacher.meta["classes"]:
            raise DataError(f"the teacher {cfg.teacher} predicts {len(teacher.meta['classes'])} classes "
                            f"({', '.join(teacher.meta['classes'][:5])}...) but {cfg.data} has "
                            f"{len(state.data.classes)} ({', '.join(state.data.classes[:5])}...); distil on the data "
                            "the teacher was trained for")
        state.setup = choose_recipe(cfg, state.data)

    def check(self, cfg: DistillConfig, state, run: RunDir, *, overwrite: bool, resume: bool) -> None:
        from transferkit.engine.checks import check_run_options

        check_run_options(cfg, state.setup, state.data, run, overwrite=overwrite, resume=resume)
        state.baseline_run = read_baseline_run(cfg)
        if cfg.unlabelled:
            unlabelled_indices(state.data, cfg.unlabelled, cfg.seed)  # refuses too many before the folder exists
        state.built = build_model(cfg, len(state.data.classes), state.setup.image_size)
        check_student(cfg, state.built.model)

    def train(self, cfg: DistillConfig, state, run: RunDir, resume: bool, progress: bool) -> Trained:
        trained = train(cfg, state.setup, state.data, state.built, state.teacher, run, resume, progress)
        state.alone = state.baseline_run if cfg.baseline_run else student_alone(cfg, run)
        return trained

    def evaluate(self, cfg: DistillConfig, state, run: RunDir, trained: Trained) -> dict:
        metrics = evaluate_and_save(cfg, state.setup, state.data, state.built, state.teacher, run, trained)
        metrics["student_alone_accuracy"] = state.alone["test"]
        metrics["student_alone_val_accuracy"] = state.alone["val"]
        metrics["baseline_verdict"] = alone_verdict(metrics)
        return metrics

    def report(self, run: RunDir, cfg: DistillConfig, metrics: dict, state) -> None:
        write_distill_report(run, cfg, metrics, state.data.classes)


def distill(cfg: DistillConfig, *, overwrite: bool = False, resume: bool = False, progress: bool = True) -> dict:
    """Run (or resume) a distillation run; returns its ``metrics.json`` content ({} on non-zero ranks).

    In the example, the run ``runs/digits`` that ``tk.finetune``'s example writes teaches a small ResNet from scratch
    for one epoch.

    Example::

        >>> import transferkit as tk
        >>> cfg = tk.DistillConfig(teacher="runs/digits", model="resnet10t", loss="soft", per_class=10,
        ...                        epochs=1, image_size=32, out="runs/student")
        >>> metrics = tk.distill(cfg, progress=False)
        >>> metrics["teacher_model"], metrics["model"], metrics["weights"]
        ('efficientnet_lite0', 'resnet10t', 'none')
        >>> 0.0 <= metrics["student_accuracy"] <= 1.0
        True
    """
    return run_command(Distill(), cfg, overwrite=overwrite, resume=resume, progress=progress)


# ----------------------------------------------------------------------------- setup
def load_teacher(path: str) -> Teacher:
    """The teacher run's model and records; one line when it is not a finished run."""
    from transferkit.predict import load_run_model

    model, meta = load_run_model(path, "cpu")
    try:
        config = yaml.safe_load(RunDir(path).config.read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    return Teacher(model, meta, config if isinstance(config, dict) else {})


def with_defaults(cfg: DistillConfig, teacher: Teacher) -> DistillConfig:
    """The teacher's data and input size where ``cfg`` leaves them unset; the backbone LR multiplier
    for a student from scratch or a pretrained one; a student from scratch's epochs (``SCRATCH_EPOCHS``)."""
    update = {}
    if cfg.data is None:
        if not teacher.config.get("data"):
            raise ConfigError(f"the teacher {cfg.teacher} records no data (config.yaml); give --data")
        update["data"] = teacher.config["data"]
    if cfg.image_size is None:
        update["image_size"] = teacher.image_size
    if cfg.backbone_lr_mult is None:
        update["backbone_lr_mult"] = BACKBONE_LR_MULT["none" if cfg.weights == "none" else "pretrained"]
    if cfg.epochs is None and cfg.weights == "none":
        update["epochs"] = SCRATCH_EPOCHS
    return cfg.model_copy(update=update)


def check_student(cfg: DistillConfig, model: torch.nn.Module) -> None:
    """The loss's own check of the student (``token`` needs a distillation token)."""
    entry = DISTILL[cfg.loss]
    if entry.check is not None:
        entry.check(SimpleNamespace(cfg=cfg, net=model))


# ----------------------------------------------------------------------------- data
class Unlabelled(torch.utils.data.Dataset):
    """A labelled dataset's images with label -1: trained on the teacher's outputs only."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.dataset[i][0], -1


class WithTeacher(torch.utils.data.Dataset):
    """``(x, y, teacher logits)``: the teacher's outputs computed once (training without augmentation)."""

    def __init__(self, dataset, logits: torch.Tensor):
        self.dataset, self.logits = dataset, logits

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        x, y = self.dataset[i]
        return x, y, self.logits[i]


def unlabelled_indices(data: Data, count: int, seed: int) -> np.ndarray:
    """``count`` seeded training images in none of the splits (the labelled pool's remainder)."""
    base = data.subsets["train"][0]
    used = np.concatenate([idx for b, idx in data.subsets.values() if b is base])
    pool = np.setdiff1d(np.arange(len(base), dtype=np.int64), used)
    if count > len(pool):
        raise DataError(f"--unlabelled {count}: only {len(pool)} training images are outside the labelled "
                        "splits; lower it (or --per-class, which leaves the rest of the training images outside)")
    return np.sort(np.random.default_rng(seed).choice(pool, count, replace=False))


def train_set(cfg: DistillConfig, data: Data, built: Built, view) -> torch.utils.data.Dataset:
    """The labelled training split (+ the unlabelled images), through the training transform (the
    eval transform without ``--augment``, then with the teacher's logits cached)."""
    from transferkit.data import TransformedSubset

    tf = built.train_tf if cfg.augment else built.eval_tf
    parts = [data.images("train", tf)]
    if cfg.unlabelled:
        parts.append(Unlabelled(TransformedSubset(data.subsets["train"][0],
                                                  unlabelled_indices(data, cfg.unlabelled, cfg.seed), tf)))
    dataset = torch.utils.data.ConcatDataset(parts)
    if cfg.augment or cfg.loss == "none":
        return dataset
    from transferkit.evaluation.features import map_batches

    logits = map_batches(view, loader(dataset, cfg), lambda m, x: {"logits": m(x)}, desc="teacher",
                         progress=False, device=device_of(cfg))["logits"]
    return WithTeacher(dataset, logits.cpu())


# ----------------------------------------------------------------------------- train
def teacher_view(teacher: Teacher, built: Built):
    from transferkit.distill import TeacherView

    t_cfg, s_cfg = teacher.meta["data_config"], built.data_config
    return TeacherView(teacher.model, (s_cfg["mean"], s_cfg["std"]), (t_cfg["mean"], t_cfg["std"]),
                       teacher.image_size)


def train(cfg: DistillConfig, setup: Setup, data: Data, built: Built, teacher: Teacher, run: RunDir,
          resume: bool, progress: bool) -> Trained:
    """The recipe's plan for the student under Lightning: ``(1 - alpha)`` CE on the labels plus the loss's
    distillation term (:data:`transferkit.registry.DISTILL`; none: the labels alone)."""
    from transferkit.engine.module import TransferModule

    start, recipe = time.perf_counter(), setup.recipe
    net = recipe.prepare(built.model, cfg)
    plan = recipe.plan(net, cfg.model_copy(update={"freeze_groups": setup.freeze_groups}), setup.freeze_bn)
    view = teacher_view(teacher, built)
    term = build_entry(DISTILL[cfg.loss], SimpleNamespace(cfg=cfg, net=net, teacher=view, alpha=cfg.alpha,
                                                          temperature=cfg.temperature, image_size=setup.image_size), cfg)
    module = TransferModule(net, len(data.classes), plan, setup.optim, [term] if term else [],
                            task_weight=1 - cfg.alpha if term else 1.0, stop_hint="lower --lr or --temperature")
    loaders = {"train": train_loader(train_set(cfg, data, built, view), cfg),
               "val": loader(data.images("val", built.eval_tf), cfg)}
    resume_from = run.last_checkpoint if resume and run.last_checkpoint.is_file() else None
    return train_lightning(module, cfg, run, loaders, setup.epochs, callbacks=recipe.callbacks(cfg),
                           resume_from=resume_from, prep_seconds=time.perf_counter() - start, progress=progress)


def read_baseline_run(cfg: DistillConfig) -> dict | None:
    """``--baseline-run``'s ``{"test": accuracy, "val": accuracy}`` (its student's, or a finetune run's), read
    before anything is written; one line when it is not a finished run. None without ``--baseline-run``."""
    import json

    if not cfg.baseline_run:
        return None
    path = RunDir(cfg.baseline_run).metrics_json
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        metrics = None
    if not isinstance(metrics, dict):
        raise RunDirError(f"--baseline-run {cfg.baseline_run} has no readable metrics.json; give a finished "
                          "distill or finetune run") from None
    return {"test": metrics.get("student_accuracy", metrics.get("test_accuracy")),
            "val": metrics.get("student_val_accuracy", metrics.get("val_accuracy"))}


def student_alone(cfg: DistillConfig, run: RunDir) -> dict:
    """``{"test": accuracy, "val": accuracy}`` of the same student and budget without a teacher
    (``--baseline``: trained in ``student-alone/``, reused when finished, logged into this run's MLflow store and
    experiment); None values without it."""
    from transferkit.engine.compare import run_or_reuse
    from transferkit.engine.loggers import experiment_name, logging_into, mlflow_db

    if not cfg.baseline or cfg.loss == "none":
        return {"test": None, "val": None}
    alone = cfg.model_copy(update={"loss": "none", "baseline": False, "out": str(run.path / BASELINE_DIR)})
    alone = logging_into(alone, mlflow_db(cfg, run), experiment_name(cfg))
    metrics = run_or_reuse(alone, distill)
    return {"test": metrics.get("student_accuracy"), "val": metrics.get("student_val_accuracy")}


def alone_verdict(metrics: dict) -> str | None:
    """The baseline verdict: the distilled student against the student alone on test accuracy, the
    same comparison on validation alongside (``evaluation.baselines.verdict``)."""
    from transferkit.evaluation.baselines import compared, verdict

    return verdict(f"{metrics['loss']} distillation", metrics["student_accuracy"], "the student alone",
                   metrics["student_alone_accuracy"],
                   detail=compared("validation", metrics["student_val_accuracy"],
                                   metrics["student_alone_val_accuracy"]))


# ----------------------------------------------------------------------------- evaluate
def images_per_second(model: torch.nn.Module, image_size: int) -> float:
    """Eval-mode forward throughput on a batch of ``THROUGHPUT_BATCH`` (CPU, this machine's threads)."""
    from transferkit.export.onnx_export import latency_ms

    x = torch.randn(THROUGHPUT_BATCH, 3, image_size, image_size)
    return round(1000 * THROUGHPUT_BATCH / latency_ms(model.eval().cpu(), x, repeats=5), 1)


def evaluate_and_save(cfg: DistillConfig, setup: Setup, data: Data, built: Built, teacher: Teacher, run: RunDir,
                      trained: Trained) -> dict:
    """Rank zero: the student's test/val scores, the teacher's on the same test images (through its own
    transform), sizes and throughput of both, the student's per-class scores, calibration (temperature fitted
    on validation, saved in model.json) and most confident test mistakes (``engine.analysis``); saves it."""
    from transferkit.engine.analysis import error_analysis
    from transferkit.evaluation import evaluate
    from transferkit.evaluation.calibration import calibrate_logits
    from transferkit.evaluation.metrics import per_class_scores
    from transferkit.predict import eval_transform
    from transferkit.surgery.heads import count_parameters

    model, _ = setup.recipe.finish(trained.net, built.model, run.path)
    if hasattr(model, "set_distilled_training"):
        model.set_distilled_training(False)
    device, n = device_of(cfg), len(data.classes)
    loaders = {"test": loader(data.images("test", built.eval_tf), cfg), "val": loader(data.images("val", built.eval_tf), cfg)}
    outputs = split_logits(model, loaders, device)  # one pass per split: scores, calibration, mistakes
    scores = scored(outputs, n)
    t_test = evaluate(teacher.model, loader(data.images("test", eval_transform(teacher.meta)), cfg), n, device)
    test = scores.get("test")
    calibration = calibrate_logits(outputs.get("val"), outputs.get("test"))
    errors = (error_analysis(model, loaders["test"].dataset, data.classes, run.path, logits=outputs["test"][0])
              if test else {"mistakes": None, "note": None})
    save_model(run, model, built, cfg, data.classes, f"distill-{cfg.loss}",
               calibration["temperature"] if calibration else 1.0)
    return {
        "loss": cfg.loss, "alpha": cfg.alpha, "temperature": cfg.temperature, "strategy": setup.recipe.name,
        "teacher": cfg.teacher, "teacher_model": teacher.meta["architecture"], "teacher_image_size": teacher.image_size,
        "teacher_accuracy": t_test["accuracy"], "model": cfg.model, "weights": cfg.weights,
        "model_args": cfg.model_args, "image_size": setup.image_size, "epochs": setup.epochs,
        "student_accuracy": test["accuracy"] if test else None, "test_accuracy": test["accuracy"] if test else None,
        "student_macro_f1": test["macro_f1"] if test else None,
        "student_val_accuracy": scores["val"]["accuracy"] if "val" in scores else None,
        "student_params": count_parameters(model), "teacher_params": count_parameters(teacher.model),
        "student_images_per_second": images_per_second(model, setup.image_size),
        "teacher_images_per_second": images_per_second(teacher.model, teacher.image_size),
        "train_seconds": round(trained.train_seconds, 2), "resumed": trained.resumed, "seed": cfg.seed,
        "train_images": data.size("train"), "unlabelled_images": cfg.unlabelled, "augment": cfg.augment,
        "val_images": data.size("val"), "test_images": data.size("test"), "run_dir": run.path.name,
        "optim": asdict(setup.optim), "test_confusion": test["confusion"] if test else None,
        "test_per_class": per_class_scores(test["confusion"], data.classes) if test else None,
        "calibration": calibration, "test_mistakes": errors["mistakes"], "gradcam_note": errors["note"],
    }


def write_distill_report(run: RunDir, cfg: DistillConfig, metrics: dict, classes: list[str]) -> None:
    """Learning curve, confusion matrix, teacher/student chart, reliability diagram, ``report.md`` (with the
    student's per-class scores and most confident mistakes); ``metrics.json`` last."""
    from transferkit.report import plot_confusion, plot_learning_curve, plot_reliability
    from transferkit.report.distill import DISTILL_SHOWN, distill_sections, plot_distill
    from transferkit.report.markdown import write_report

    plots = {"Teacher and student": plot_distill(metrics, run.path / "distill.png").name}
    if rows := run.merge_logs():
        plots["Learning curve"] = plot_learning_curve(rows, run.path / "learning_curve.png").name
    if metrics["test_confusion"]:
        plots["Confusion matrix (student, test)"] = plot_confusion(metrics["test_confusion"], classes,
                                                                   run.path / "confusion_matrix.png").name
    if (metrics.get("calibration") or {}).get("reliability"):
        plots["Reliability diagram (student, temperature scaling)"] = plot_reliability(
            metrics["calibration"], run.path / "reliability.png").name
    write_report(run.report, cfg.model_dump(), metrics, plots, shown=DISTILL_SHOWN,
                 title=f"transferkit distill: {metrics['teacher_model']} -> {cfg.model} / {cfg.loss}",
                 sections=distill_sections(metrics))
    write_card(run, cfg, metrics)
    write_json(run.metrics_json, metrics)


__all__ = ["distill", "load_teacher", "unlabelled_indices", "with_defaults"]
