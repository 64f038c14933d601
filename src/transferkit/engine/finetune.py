"""``finetune``: the main job, end to end.

data source -> seeded splits -> pretrained backbone with a new head -> strategy
plan -> Lightning training (cached features when the backbone is frozen and
nothing is augmented) -> evaluation -> run directory (weights, metrics, report).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from transferkit.backbones import describe_model, load_backbone
from transferkit.config import FinetuneConfig
from transferkit.data import (TransformedSubset, build_transform, cap_per_class, data_config_for, load_source,
                              make_splits)
from transferkit.engine.callbacks import AtomicCheckpoint, TrainTimer
from transferkit.engine.gradual import GradualUnfreezing
from transferkit.engine.module import OptimSettings, TransferModule
from transferkit.rundir import RunDir, save_weights, write_json
from transferkit.errors import ConfigError, TrainingError
from transferkit.evaluation import evaluate, extract_features
from transferkit.evaluation.forgetting import SourceView, source_drift
from transferkit.evaluation.baselines import pixel_baseline
from transferkit.regularizers import L2SP, LwF
from transferkit.report import plot_confusion, plot_learning_curve, plot_wise_curve, write_report
from transferkit.strategies import AUTO_PROBE_BELOW, make_plan, resolve_auto, split_head
from transferkit.strategies.lp_ft import fit_linear_probe
from transferkit.surgery.freezing import resolve_bn_policy
from transferkit.surgery.heads import count_parameters, head_parameters
from transferkit.surgery.lora import apply_lora, merge_lora
from transferkit.surgery.norm import batchnorm_to_groupnorm
from transferkit.surgery.wise_ft import wise_ft

#: Per-strategy defaults, chosen by measurement (benchmarks/RESULTS.md).
#: A frozen backbone is run once, so it can afford a larger input; a trained one
#: pays for every pixel on every epoch (64 px trains ~15x faster than 224 px).
DEFAULTS = {
    "linear-probe": {"image_size": 160, "epochs": 30, "lr": 1e-3},
    "freeze": {"image_size": 96, "epochs": 10, "lr": 1e-3},
    "full": {"image_size": 64, "epochs": 6, "lr": 1e-2},
    "gradual": {"image_size": 64, "epochs": 6, "lr": 1e-2},  # as full (not tuned separately)
    "l2sp": {"image_size": 64, "epochs": 6, "lr": 1e-2},  # as full (not tuned separately)
    # lora: digits, 20/class, 6 epochs, rank 8: lr 1e-2 collapses to chance, 3e-3 -> 0.783, 1e-3 -> 0.678
    # test accuracy (full at its default: 0.678); one data set, one seed
    "lora": {"image_size": 64, "epochs": 6, "lr": 3e-3},
    # LP-FT fine-tunes from a fitted head with a 10x smaller LR than full: at 1e-2 one epoch on
    # digits (20/class) fell to 0.08 test accuracy, at 1e-3 it reached 0.67.
    "lp-ft": {"image_size": 64, "epochs": 6, "lr": 1e-3},
}

#: With frozen BatchNorm nothing renormalises the activations as the weights move, and the
#: default LR of full/gradual/l2sp (1e-2 head, 1e-3 backbone) collapses: digits, 20/class,
#: 4 epochs, BN frozen: 1e-2 -> 0.10 test accuracy (chance), 1e-3 -> 0.38 (BN training at
#: 1e-2: 0.47). So their default LR is scaled by this when ``--bn`` freezes BN (``auto``: batch < 16).
FROZEN_BN_LR_SCALE = 0.1


def default_out(cfg: FinetuneConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.model}-{cfg.strategy}-{stamp}"


def check_options(cfg: FinetuneConfig, strategy: str, reason: str = "") -> None:
    """Refuse option combinations that cannot work with ``strategy`` (a resolved name, not ``auto``)."""
    why = f" ({reason})" if reason else ""
    use_l2sp, use_lwf = strategy == "l2sp" or cfg.reg == "l2sp", cfg.reg == "lwf"
    if use_l2sp and strategy in ("linear-probe", "freeze", "lora"):
        raise ConfigError(f"--reg l2sp needs a backbone that trains, not {strategy}{why}; "
                          "use --strategy full, gradual or l2sp")
    if (cfg.wise_alpha is not None or cfg.wise_curve) and strategy in ("linear-probe", "freeze", "lora"):
        raise ConfigError(f"--wise-alpha/--wise-curve interpolate a fine-tuned backbone; strategy {strategy}{why} "
                          "leaves it frozen — use full, lp-ft, gradual or l2sp")
    if use_lwf and strategy not in ("full", "lp-ft", "gradual"):
        raise ConfigError(f"--reg lwf distils into a backbone that trains: use --strategy full, lp-ft or gradual "
                          f"(not {strategy}{'; l2sp is a regulariser of its own' if strategy == 'l2sp' else why})")
    if (use_lwf or cfg.source_eval or cfg.source_data) and cfg.weights == "none":
        raise ConfigError("--reg lwf and --source-eval need pretrained weights with their source head, "
                          "not --weights none")
    if cfg.source_labels and not cfg.source_data:
        raise ConfigError("--source-labels reads the class names of --source-data; give --source-data")


def _source_loader(cfg: FinetuneConfig, eval_tf, target_test, source_model) -> tuple[DataLoader, list | None]:
    """Images for ``--source-eval`` and, with ``--source-labels``, the source-class index of each class.

    Default: the target's held-out test images (agreement only). ``--source-data``:
    any data source (its train split). With ``--source-labels`` its class names are
    source-class indices (ImageNet folder ``281/`` = tabby cat) and source accuracy
    is reported too.
    """
    if cfg.source_data is None:
        return _loader(target_test, cfg, False), None
    images = load_source(cfg.source_data, skip_bad_images=cfg.skip_bad_images).train
    label_map = None
    if cfg.source_labels:
        bad = [c for c in images.classes if not c.isdigit() or int(c) >= source_model.num_classes]
        if bad:
            raise ConfigError(f"--source-labels: class '{bad[0]}' of {cfg.source_data} is not a source-class index "
                              f"(0..{source_model.num_classes - 1})")
        label_map = [int(c) for c in images.classes]
    return _loader(TransformedSubset(images, range(len(images)), eval_tf), cfg, False), label_map


def _loader(dataset, cfg: FinetuneConfig, shuffle: bool) -> DataLoader:
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=shuffle, num_workers=cfg.workers,
                      persistent_workers=cfg.workers > 0)


def finetune(cfg: FinetuneConfig, *, overwrite: bool = False, resume: bool = False,
             progress: bool = True) -> dict:
    """Run (or resume) a fine-tuning run; returns its ``metrics.json`` content."""
    out = Path(cfg.out) if cfg.out else default_out(cfg)
    run = RunDir.check(out, overwrite=overwrite, resume=resume)
    cfg = FinetuneConfig.load(run.config) if resume else cfg.model_copy(update={"out": str(out)})
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    source = load_source(cfg.data, skip_bad_images=cfg.skip_bad_images)
    classes = source.classes
    splits = make_splits(source.train.targets, val_split=cfg.val_split, test_split=cfg.test_split,
                         seed=cfg.seed, has_test=source.test is not None, per_class=cfg.per_class,
                         classes=classes)
    test_set = source.test if source.test is not None else source.train
    test_idx = splits.test if source.test is None else np.arange(len(test_set))
    if cfg.test_per_class:
        test_idx = cap_per_class(test_idx, test_set.targets, cfg.test_per_class, cfg.seed)
    subsets = {"train": (source.train, splits.train), "val": (source.train, splits.val),
               "test": (test_set, test_idx)}

    per_class = len(splits.train) / len(classes)
    strategy, reason = cfg.strategy, f"chosen by the user (--strategy {cfg.strategy})"
    if strategy == "auto":
        strategy = resolve_auto(per_class)
        reason = (f"auto: {per_class:.0f} training images per class -> {strategy} "
                  f"(linear-probe below {AUTO_PROBE_BELOW} per class, full fine-tuning from there)")
    d = DEFAULTS[strategy]
    image_size = cfg.image_size or d["image_size"]
    epochs = cfg.epochs or d["epochs"]
    freeze_bn = resolve_bn_policy(cfg.bn, cfg.batch_size)
    scale_lr = freeze_bn and cfg.norm == "batchnorm" and strategy in ("full", "gradual", "l2sp")
    default_lr = d["lr"] * (FROZEN_BN_LR_SCALE if scale_lr else 1.0)
    optim = OptimSettings(lr=cfg.lr or default_lr, weight_decay=cfg.weight_decay, optimizer=cfg.optimizer,
                          momentum=cfg.momentum, warmup_epochs=cfg.warmup_epochs,
                          label_smoothing=cfg.label_smoothing)

    check_options(cfg, strategy, reason)
    use_l2sp, use_lwf = strategy == "l2sp" or cfg.reg == "l2sp", cfg.reg == "lwf"
    use_wise = cfg.wise_alpha is not None or bool(cfg.wise_curve)
    source_eval = cfg.source_eval or cfg.source_data is not None
    if source_eval and cfg.source_data is None and len(test_idx) == 0:
        raise ConfigError("--source-eval measures forgetting on the test split, which is empty here; "
                          "set --test-split or give --source-data")
    # the pretrained model with its own (source) head: LwF's teacher and the forgetting reference
    source_model = (load_backbone(cfg.model, cfg.weights, image_size=image_size).eval()
                    if use_lwf or source_eval else None)
    if source_model is not None and not any(True for _ in head_parameters(source_model)):
        raise ConfigError(f"weights '{cfg.weights}' have no classifier head to measure or keep the source task "
                          "with; drop --source-eval / --reg lwf")
    model = load_backbone(cfg.model, cfg.weights, num_classes=len(classes), image_size=image_size)
    if cfg.norm == "groupnorm":
        batchnorm_to_groupnorm(model)
    data_cfg = data_config_for(model, image_size)
    eval_tf = build_transform(data_cfg, image_size, train=False)
    train_tf = build_transform(data_cfg, image_size, train=True, hflip=cfg.hflip)

    def images(split: str, train: bool = False) -> TransformedSubset:
        base, idx = subsets[split]
        return TransformedSubset(base, idx, train_tf if train else eval_tf)

    source_loader = _source_loader(cfg, eval_tf, images("test"), source_model) if source_eval else None
    if not resume:  # inputs are valid: only now touch the run directory
        run.create(overwrite)
        cfg.save(run.config)
    resuming_from = run.last_checkpoint if resume and run.last_checkpoint.is_file() else None
    # train_seconds counts what training needs: LP-FT's probe, cached train/val features, the fit (TrainTimer)
    start, not_training = time.perf_counter(), 0.0
    if strategy == "lp-ft" and resuming_from is None:  # stage one; a checkpoint already holds the head
        fit_linear_probe(model, _loader(images("train"), cfg, False), len(classes),
                         epochs=DEFAULTS["linear-probe"]["epochs"], progress=progress)
    # lora: train a PEFT wrapper (LoRA matrices + head); merged back into ``model`` before saving
    lora_net = apply_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets) if strategy == "lora" else None
    plan = make_plan(strategy, model if lora_net is None else lora_net, cfg.backbone_lr_mult, cfg.lr_decay,
                     freeze_bn)
    regularizer = (L2SP(model, cfg.reg_alpha, cfg.reg_beta) if use_l2sp  # snapshot: pretrained
                   else LwF(source_model, cfg.lwf_weight, cfg.lwf_temperature) if use_lwf else None)
    pretrained = {k: v.detach().clone() for k, v in model.state_dict().items()} if use_wise else None

    if plan.cached_features:
        cached = {s: extract_features(model, _loader(images(s), cfg, False), f"features ({s})", progress)
                  for s in ("train", "val")}
        t = time.perf_counter()
        cached["test"] = extract_features(model, _loader(images("test"), cfg, False), "features (test)", progress)
        not_training = time.perf_counter() - t
        net = model.get_classifier()
        loaders = {s: _loader(TensorDataset(*cached[s]), cfg, s == "train") for s in cached}
    else:
        net = model if lora_net is None else lora_net
        loaders = {"train": _loader(images("train", train=True), cfg, True),
                   "val": _loader(images("val"), cfg, False), "test": _loader(images("test"), cfg, False)}

    module = TransferModule(net, len(classes), plan, optim, regularizer)
    timer = TrainTimer(prep_seconds=time.perf_counter() - start - not_training)
    callbacks = [AtomicCheckpoint(run.checkpoints), timer] + ([RichProgressBar(leave=True)] if progress else [])
    if strategy == "gradual":
        callbacks.append(GradualUnfreezing(cfg.unfreeze_every))
    trainer = L.Trainer(
        max_epochs=epochs, accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
        strategy=cfg.dist, precision=cfg.precision, callbacks=callbacks,
        logger=CSVLogger(run.logs, name="", version=run.next_attempt()),
        enable_progress_bar=progress, enable_model_summary=False, enable_checkpointing=False,
        log_every_n_steps=1, num_sanity_val_steps=0, deterministic=False,
    )
    try:
        trainer.fit(module, loaders["train"], loaders["val"] if len(splits.val) else None,
                    ckpt_path=str(resuming_from) if resuming_from else None)
    except TrainingError as e:
        kept = (f"last good checkpoint: {run.last_checkpoint}" if run.last_checkpoint.is_file()
                else "no epoch had finished, so there is no checkpoint")
        raise TrainingError(f"{e} ({kept})") from None
    train_seconds = timer.seconds
    if not trainer.is_global_zero:
        return {}

    net.cpu()
    has_test = len(loaders["test"].dataset) > 0

    def drift() -> dict:  # forgetting of ``model`` as it is now (LoRA merged / WiSE-FT applied)
        if source_loader is None:
            return {}
        loader, label_map = source_loader
        return source_drift(source_model, SourceView(model, source_model.get_classifier()), loader, label_map)

    wise_metrics = {}
    if pretrained is not None:  # WiSE-FT: score the fine-tuned model, the alpha curve, the chosen alpha
        finetuned = {k: v.detach().clone() for k, v in model.state_dict().items()}
        head = {n for n, _ in split_head(model)[1]}
        curve = []
        for alpha in cfg.wise_curve or []:
            model.load_state_dict(wise_ft(pretrained, finetuned, alpha, keep=head))
            acc = evaluate(net, loaders["test"], len(classes))["accuracy"] if has_test else None
            curve.append({"alpha": alpha, "test_accuracy": acc, **drift()})
        model.load_state_dict(finetuned)
        wise_metrics = {"wise_curve": curve} if curve else {}
        if cfg.wise_alpha is not None:
            ft_test = evaluate(net, loaders["test"], len(classes)) if has_test else None
            model.load_state_dict(wise_ft(pretrained, finetuned, cfg.wise_alpha, keep=head))
            wise_metrics.update(wise_alpha=cfg.wise_alpha,
                                test_accuracy_before_wise=ft_test["accuracy"] if ft_test else None)
    test = evaluate(net, loaders["test"], len(classes)) if has_test else None
    val = evaluate(net, loaders["val"], len(classes)) if len(splits.val) else None
    lora_metrics = {}
    if lora_net is not None:  # the adapter alone (PEFT format), then plain timm weights for predict
        trainable = count_parameters(lora_net, trainable_only=True)
        lora_net.save_pretrained(str(run.path / "adapter"))
        model = merge_lora(lora_net)
        lora_metrics = {"trainable_params": trainable,
                        "trainable_fraction": round(trainable / count_parameters(model), 6),
                        "adapter_bytes": sum(f.stat().st_size for f in (run.path / "adapter").rglob("*")
                                             if f.is_file()),
                        "lora": {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha or 2 * cfg.lora_rank,
                                 "targets": sorted(lora_net.peft_config["default"].target_modules)}}
    forgetting = drift()
    save_weights(run.weights, model)
    write_json(run.model_json, {**describe_model(model), "norm": cfg.norm, "classes": classes,
                                "data_config": data_cfg, "strategy": strategy, "transferkit_format": 1})
    # The baseline transfer must beat: logistic regression on raw pixels, same splits.
    baseline = (pixel_baseline(subsets["train"][0].subset(splits.train),
                               subsets["test"][0].subset(list(subsets["test"][1])), seed=cfg.seed)
                if test and cfg.baseline else None)
    metrics = {
        "model": cfg.model, "weights": cfg.weights, "strategy": strategy, "strategy_reason": reason,
        "data": cfg.data, "run_dir": str(run.path), "image_size": image_size, "epochs": epochs,
        "batchnorm": ("groupnorm" if cfg.norm == "groupnorm" else
                      "frozen" if freeze_bn or strategy in ("linear-probe", "freeze") else "train"),
        "test_accuracy": test["accuracy"] if test else None,
        "pixel_baseline_accuracy": baseline,
        "test_macro_f1": test["macro_f1"] if test else None,
        "val_accuracy": val["accuracy"] if val else None,
        "train_seconds": round(train_seconds, 2), "resumed": resuming_from is not None,
        "trainable_params": count_parameters(model, trainable_only=True),
        "total_params": count_parameters(model),
        "train_images": len(splits.train), "val_images": len(splits.val),
        "test_images": len(loaders["test"].dataset), "skipped_images": len(source.skipped),
        "classes": classes, "seed": cfg.seed, "optim": asdict(optim),
        "test_confusion": test["confusion"] if test else None,
        **lora_metrics, **wise_metrics, **forgetting,
    }
    rows = run.merge_logs()
    plots = {"Learning curve": plot_learning_curve(rows, run.path / "learning_curve.png").name}
    if test:
        plots["Confusion matrix (test)"] = plot_confusion(test["confusion"], classes,
                                                          run.path / "confusion_matrix.png").name
    if wise_metrics.get("wise_curve"):
        plots["WiSE-FT alpha curve"] = plot_wise_curve(wise_metrics["wise_curve"], run.path / "wise_curve.png").name
    write_report(run.report, cfg.model_dump(), metrics, plots)
    write_json(run.metrics_json, metrics)  # last: its presence means the run directory is complete
    return metrics
