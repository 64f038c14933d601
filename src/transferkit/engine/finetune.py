"""``finetune``: the main job, a short sequence of named stages.

    open the run -> load_data -> choose the recipe -> build_model -> train (cached-feature
    probe, or Lightning) -> evaluate (+ WiSE-FT, forgetting, raw-pixel baseline) -> save -> report

Every stage but ``open`` runs on every rank under DDP; only global rank zero creates or
writes the run directory, and only it evaluates and saves (the others only train).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from types import SimpleNamespace

import torch

from transferkit.config import FinetuneConfig
from transferkit.engine.analysis import MISTAKES_PNG
from transferkit.engine.export import EXPORTED
from transferkit.engine.forgetting import Drift
from transferkit.engine.stages import (Built, Data, Trained, build_model, device_of, load_data, loader, save_model,
                                       scored, source_model, split_logits, train_lightning, train_loader,
                                       write_run_report)
from transferkit.engine.run import Command, build_entry, run_command
from transferkit.optim import OptimSettings
from transferkit.rundir import RunDir, declare_model_run, is_global_zero
from transferkit.strategies import Recipe, get_recipe

#: what a finetune run writes besides a model run's files (rundir.layout); a new plot adds its name here
FINETUNE_RUN = declare_model_run("finetune", "learning_curve.png", "confusion_matrix.png", "wise_curve.png",
                                 "reliability.png", MISTAKES_PNG, *EXPORTED)


@dataclass
class Setup:
    """The recipe stage: which recipe, why, and the settings it resolves to."""

    recipe: Recipe
    reason: str
    image_size: int
    epochs: int
    freeze_bn: bool
    optim: OptimSettings
    freeze_groups: int = 0


def choose_recipe(cfg: FinetuneConfig, data: Data | None = None) -> Setup:
    """Resolve ``auto`` (needs ``data``) and the recipe's defaults; check the options against it."""
    from transferkit.surgery.freezing import resolve_bn_policy

    recipe, reason = get_recipe(cfg.strategy), f"chosen by the user (--strategy {cfg.strategy})"
    defaults = recipe.defaults
    if recipe.name == "auto" and data is not None:  # without data (compare's up-front check) auto stays auto
        name, reason = recipe.resolve(data.train_per_class)
        recipe, defaults = get_recipe(name), recipe.defaults_for(name)
    recipe.check(cfg, reason)
    freeze_bn = resolve_bn_policy(cfg.bn, cfg.batch_size) and cfg.norm == "batchnorm"
    optim = OptimSettings(lr=cfg.lr or recipe.default_lr(freeze_bn), weight_decay=cfg.weight_decay,
                          optimizer=cfg.optimizer, momentum=cfg.momentum, warmup_epochs=cfg.warmup_epochs,
                          label_smoothing=cfg.label_smoothing)
    groups = cfg.freeze_groups if cfg.freeze_groups is not None else defaults.freeze_groups
    return Setup(recipe, reason, cfg.image_size or defaults.image_size,
                 cfg.epochs or defaults.epochs, freeze_bn, optim, groups)


class Finetune(Command):
    """``finetune`` in the run skeleton (:mod:`transferkit.engine.run`)."""

    kind = "finetune"

    def label(self, cfg: FinetuneConfig) -> str:
        return cfg.strategy

    def load(self, cfg: FinetuneConfig, state) -> None:
        state.data = load_data(cfg)
        state.setup = choose_recipe(cfg, state.data)

    def check(self, cfg: FinetuneConfig, state, run: RunDir, *, overwrite: bool, resume: bool) -> None:
        from transferkit.engine.checks import check_run_options

        check_run_options(cfg, state.setup, state.data, run, overwrite=overwrite, resume=resume)
        state.built = build_model(cfg, len(state.data.classes), state.setup.image_size, cfg.augment)
        state.setup.recipe.check_model(state.built.model, cfg)
        _settle_freeze_groups(cfg, state.setup, state.data, state.built.model)
        state.drift = Drift(cfg, state.setup.image_size, state.built, state.data) if is_global_zero() else None

    def train(self, cfg: FinetuneConfig, state, run: RunDir, resume: bool, progress: bool) -> Trained:
        trained, state.extra = train(cfg, state.setup, state.data, state.built, run, resume, progress)
        return trained

    def evaluate(self, cfg: FinetuneConfig, state, run: RunDir, trained: Trained) -> dict:
        return evaluate_and_save(cfg, state.setup, state.data, state.built, run, trained, state.extra, state.drift)

    def report(self, run: RunDir, cfg: FinetuneConfig, metrics: dict, state) -> None:
        write_run_report(run, cfg, metrics, state.data.classes)


def finetune(cfg: FinetuneConfig, *, overwrite: bool = False, resume: bool = False,
             progress: bool = True) -> dict:
    """Run (or resume) a fine-tuning run; returns its ``metrics.json`` content ({} on non-zero ranks).

    The example writes ``runs/digits``, the run the examples of ``load``, ``predict``, ``export``, ``tta``
    and ``distill`` use (``progress=False``: no progress bars).

    Example::

        >>> import transferkit as tk
        >>> cfg = tk.FinetuneConfig(data="builtin:digits", per_class=10, strategy="linear-probe",
        ...                         image_size=32, out="runs/digits")
        >>> metrics = tk.finetune(cfg, progress=False)
        >>> metrics["strategy"], metrics["train_images"]
        ('linear-probe', 100)
        >>> metrics["classes"]
        ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']
        >>> 0.0 <= metrics["test_accuracy"] <= 1.0
        True
    """
    return run_command(Finetune(), cfg, overwrite=overwrite, resume=resume, progress=progress)


def _settle_freeze_groups(cfg: FinetuneConfig, setup: Setup, data: Data, model: torch.nn.Module) -> None:
    """``setup.freeze_groups``: ``--freeze-groups``, else what ``auto`` keeps pretrained for the
    recipe it chose (it depends on the model's depth), else the recipe's; ``auto``'s reason then
    states the groups really frozen."""
    if cfg.strategy != "auto" or setup.recipe.name == "linear-probe":
        return
    if cfg.freeze_groups is None:
        from transferkit.backbones.groups import layer_groups

        setup.freeze_groups = get_recipe("auto").freeze_groups_for(setup.recipe.name, len(layer_groups(model)))
    setup.reason = get_recipe("auto").resolve(data.train_per_class, setup.freeze_groups)[1]


def train(cfg: FinetuneConfig, setup: Setup, data: Data, built: Built, run: RunDir, resume: bool,
          progress: bool) -> tuple[Trained, dict]:
    """The train stage: the converged probe on cached features, or the recipe under Lightning."""
    from transferkit.engine import probe
    from transferkit.engine.callbacks import early_stopping

    start, model, recipe = time.perf_counter(), built.model, setup.recipe
    if recipe.cached_features:  # no Lightning: nothing for other ranks to do
        if not is_global_zero():
            return Trained(model, 0.0, is_global_zero=False), {}
        return probe.train_probe(cfg, data, built, setup.image_size, progress), {}
    extra = {}
    if (recipe.probe_init or cfg.strategy == "auto") and is_global_zero():  # DDP broadcasts rank zero's weights
        extra = probe.init_head(cfg, data, built, setup.image_size, progress, keep_head=recipe.probe_init)
    extra["pretrained_state"] = ({k: v.detach().clone() for k, v in model.state_dict().items()}
                                 if cfg.wise_alpha is not None or cfg.wise_curve else None)
    net = recipe.prepare(model, cfg)
    plan = recipe.plan(net, cfg.model_copy(update={"freeze_groups": setup.freeze_groups}), setup.freeze_bn)
    module = _module(cfg, setup, net, plan, data, built)
    train_set = data.images("train", built.train_tf)
    loaders = {"train": train_loader(train_set, cfg, sampler=_sampler(cfg, train_set)),
               "val": loader(data.images("val", built.eval_tf), cfg)}
    resume_from = run.last_checkpoint if resume and run.last_checkpoint.is_file() else None
    stopping = [early_stopping(cfg.early_stopping)] if cfg.early_stopping else []
    trained = train_lightning(module, cfg, run, loaders, setup.epochs, callbacks=recipe.callbacks(cfg) + stopping,
                              resume_from=resume_from, prep_seconds=time.perf_counter() - start, progress=progress,
                              ema_decay=cfg.ema_decay)
    if stopping:  # the epoch it stopped after (1-based), or None when it ran every epoch
        trained.extra["early_stopped_epoch"] = stopping[0].stopped_epoch + 1 if stopping[0].stopped_epoch else None
    return trained, extra


def _sampler(cfg: FinetuneConfig, train_set):
    """``--sampler balanced``: each class drawn equally often (``data.balanced_sampler``); else None (shuffle)."""
    from transferkit.data import balanced_sampler

    return balanced_sampler(train_set.targets) if cfg.sampler == "balanced" else None


def _module(cfg: FinetuneConfig, setup: Setup, net, plan, data: Data, built: Built):
    """The LightningModule: the task loss plus the recipe's and ``--reg``'s regularisers, each a loss term
    built now (L2-SP snapshots the pretrained weights, co-tuning reads the training images)."""
    from transferkit.data import Mixing, inverse_frequency_weights
    from transferkit.engine.module import TransferModule
    from transferkit.registry import REGULARIZERS

    ctx = term_context(cfg, data, built, setup.image_size)
    terms = [build_entry(REGULARIZERS[name], ctx, cfg) for name in setup.recipe.regularizers(cfg)]
    weights = (inverse_frequency_weights(data.images("train", built.eval_tf).targets, len(data.classes))
               if cfg.class_weights == "auto" else None)
    return TransferModule(net, len(data.classes), plan, setup.optim, terms, class_weights=weights,
                          mixing=Mixing(cfg.mixup, cfg.cutmix))


def term_context(cfg: FinetuneConfig, data: Data, built: Built, image_size: int) -> SimpleNamespace:
    """What a regulariser's ``build`` may read (see :mod:`transferkit.regularizers`)."""
    def source_outputs():
        from transferkit.evaluation.features import map_batches

        source = source_model(cfg, image_size)
        out = map_batches(source, loader(data.images("train", built.eval_tf), cfg), lambda m, x: {"p": m(x).softmax(1)},
                          device=device_of(cfg), progress=False, desc="source")
        return out["p"], out["labels"]

    return SimpleNamespace(cfg=cfg, model=built.model, num_classes=len(data.classes),
                           features_dim=int(built.model.num_features),
                           source_model=lambda: source_model(cfg, image_size), source_outputs=source_outputs)


def evaluate_and_save(cfg: FinetuneConfig, setup: Setup, data: Data, built: Built, run: RunDir,
                      trained: Trained, extra: dict, drift) -> dict:
    """Rank zero: the trained model back into ``built.model`` (LoRA merged), auto's check against
    the probe, WiSE-FT, forgetting, test/val scores, the raw-pixel baseline, the most confident test
    mistakes (``engine.analysis``); saves the model."""
    from transferkit.engine import probe
    from transferkit.engine.analysis import error_analysis
    from transferkit.engine.forgetting import wise_metrics
    from transferkit.evaluation.baselines import verdict
    from transferkit.evaluation.calibration import calibrate_logits
    from transferkit.evaluation.metrics import per_class_scores
    from transferkit.surgery.heads import count_parameters
    from transferkit.transferability.pixels import cached_pixel_baseline

    device = device_of(cfg)
    model, recipe_metrics = setup.recipe.finish(trained.net, built.model, run.path)
    built.model = model
    reason, strategy, trained_net, known = setup.reason, setup.recipe.name, trained.net, {}
    if cfg.strategy == "auto" and extra.get("probe_state") is not None:
        reason, kept_probe, val = probe.keep_better(model, extra, data, built, cfg, device, reason)
        if kept_probe:
            strategy, trained_net = "linear-probe", model.get_classifier()
        elif val is not None and cfg.wise_alpha is None:             # the final model: scored already
            known["val"] = val
    loaders = probe.eval_loaders(cfg, data, built, trained)
    wise = wise_metrics(cfg, model, extra.get("pretrained_state"), loaders["test"], len(data.classes), device, drift)
    cached = setup.recipe.cached_features  # scored on cached features: the gallery needs the images' own pass
    outputs = split_logits(trained.net if cached else model, loaders, device)
    scores = known | {s: v for s, v in scored(outputs, len(data.classes)).items() if s not in known}
    test, val = scores.get("test"), scores.get("val")
    calibration = calibrate_logits(outputs.get("val"), outputs.get("test"))
    forgetting = drift(model)
    errors = (error_analysis(model, data.images("test", built.eval_tf), data.classes, run.path, device=device,
                             batch_size=cfg.batch_size, logits=None if cached else outputs["test"][0])
              if test else {"mistakes": None, "note": None})
    save_model(run, model, built, cfg, data.classes, strategy, calibration["temperature"] if calibration else 1.0)
    baseline = (cached_pixel_baseline(data.subsets["train"][0].subset(data.subsets["train"][1]),
                                      data.subsets["test"][0].subset(list(data.subsets["test"][1])), seed=cfg.seed)
                if test and cfg.baseline else None)
    return {
        "model": cfg.model, "weights": cfg.weights, "strategy": strategy, "strategy_reason": reason,
        "data": cfg.data, "run_dir": run.path.name, "image_size": setup.image_size,
        "epochs": None if setup.recipe.cached_features else setup.epochs, "freeze_groups": setup.freeze_groups,
        "ema_decay": None if setup.recipe.cached_features else cfg.ema_decay,
        "batchnorm": ("groupnorm" if cfg.norm == "groupnorm" else
                      "frozen" if setup.freeze_bn or not setup.recipe.trains_backbone else "train"),
        "test_accuracy": test["accuracy"] if test else None, "pixel_baseline_accuracy": baseline,
        "baseline_verdict": verdict(f"{strategy} ({cfg.model})", test["accuracy"] if test else None,
                                    "logistic regression on raw pixels", baseline),
        "test_macro_f1": test["macro_f1"] if test else None, "val_accuracy": val["accuracy"] if val else None,
        "train_seconds": round(trained.train_seconds, 2), "resumed": trained.resumed,
        "trainable_params": count_parameters(trained_net, trainable_only=True),
        "total_params": count_parameters(model),
        "train_images": data.size("train"), "val_images": data.size("val"), "test_images": data.size("test"),
        "skipped_images": len(data.source.skipped), "classes": data.classes, "seed": cfg.seed,
        "optim": asdict(setup.optim), "test_confusion": test["confusion"] if test else None,
        "test_per_class": per_class_scores(test["confusion"], data.classes) if test else None,
        "test_mistakes": errors["mistakes"], "gradcam_note": errors["note"],
        **{k: v for k, v in extra.items() if k.startswith("probe_") and k != "probe_state"},
        "calibration": calibration, **trained.extra, **recipe_metrics, **wise, **forgetting,
    }


__all__ = ["Finetune", "Setup", "choose_recipe", "finetune", "term_context"]
