"""Everything a run checks before it touches the disk, and what ``--resume`` may change.

A failed start leaves nothing behind: the options, the data, Lightning's own settings,
LoRA targets and the run directory are all checked before the directory is created.
"""

from __future__ import annotations

import json

from transferkit.config import FinetuneConfig
from transferkit.errors import ConfigError, DataError, RunDirError
from transferkit.rundir import RunDir, is_global_zero

#: Options that change where or how fast a run executes (or, for ``epochs``, only how long), or where it
#: logs: ``--resume`` applies them and says so; any other difference is refused.
SAFE_ON_RESUME = ("epochs", "workers", "accelerator", "devices", "num_nodes", "dist", "logger", "experiment",
                  "mlflow_db")


def saved_config(run: RunDir, cls: type[FinetuneConfig] = FinetuneConfig, **overrides) -> FinetuneConfig:
    """The ``config.yaml`` of the run to resume as a ``cls`` (``overrides`` applied), or one actionable line."""
    if not run.config.is_file():
        raise RunDirError(f"cannot resume: {run.path} has no config.yaml; start a new run without --resume")
    return cls.load(run.config, **overrides)


def resumed_config(run: RunDir, cfg: FinetuneConfig) -> tuple[FinetuneConfig, dict]:
    """The saved config of ``run`` with the safe changes of ``cfg`` applied; refuses the others."""
    saved = saved_config(run, type(cfg))
    mine, theirs = cfg.model_dump(exclude={"out"}), saved.model_dump(exclude={"out"})
    changed = {k: {"saved": theirs[k], "now": v} for k, v in mine.items() if theirs.get(k) != v}
    unsafe = [k for k in changed if k not in SAFE_ON_RESUME]
    if unsafe:
        listed = ", ".join(f"--{k.replace('_', '-')} {changed[k]['now']} (saved: {changed[k]['saved']})"
                           for k in unsafe)
        raise ConfigError(f"--resume continues {run.path} with its saved settings; these differ: {listed}. "
                          "Drop them, or start a new run with another --out")
    if run.metrics_json.is_file() and "epochs" not in changed:
        raise RunDirError(f"{run.path} is already complete (metrics.json); nothing to resume")
    return saved.model_copy(update={k: c["now"] for k, c in changed.items()} | {"out": cfg.out}), changed


def check_run_options(cfg: FinetuneConfig, setup, data, run: RunDir, *, overwrite: bool, resume: bool) -> None:
    """Refuse, in one line and before any file is written, what cannot work."""
    from transferkit.engine.stages import world_size

    _check_source_eval(cfg, data)
    if not setup.recipe.cached_features:
        check_trainer(cfg)
        check_train_images(data.size("train"), cfg)
        if setup.recipe.name == "gradual" and world_size(cfg) > 1:
            raise ConfigError("gradual unfreezing runs on one device (DDP fixes the trainable parameters when it "
                              "wraps the model); use --devices 1 or --strategy full")
    check_device_and_run_dir(cfg, run, overwrite=overwrite, resume=resume)
    if resume:
        check_same_data(run, data.record())


def check_device_and_run_dir(cfg: FinetuneConfig, run: RunDir, *, overwrite: bool, resume: bool) -> None:
    """The device features and evaluation run on, ``--logger``'s package, and (global rank zero: the others
    write nothing) the run directory: ownership, and no output inside an input."""
    from transferkit.engine.loggers import check_logger
    from transferkit.engine.stages import device_of

    device_of(cfg)  # an accelerator transferkit cannot place features on is refused here too
    check_logger(cfg)
    if is_global_zero():
        run.check(overwrite=overwrite, resume=resume, inputs=run_inputs(cfg))


def run_inputs(cfg: FinetuneConfig) -> list[str]:
    """The data paths a run reads, and a run directory given as ``--weights``: its output may not be, or lie
    inside, one of them."""
    from pathlib import Path

    weights = [cfg.weights] if Path(cfg.weights).expanduser().is_dir() else []
    return [p for p in cfg.data_specs() if not p.startswith("builtin:")] + weights


def check_trainer(cfg: FinetuneConfig) -> None:
    """Lightning's accelerator, devices, strategy and precision, validated by Lightning itself
    (building a Trainer launches nothing)."""
    from transferkit.engine.stages import lightning_devices, quiet_lightning

    quiet_lightning()
    import lightning as L

    try:
        L.Trainer(accelerator=cfg.accelerator, devices=lightning_devices(cfg.devices), num_nodes=cfg.num_nodes,
                  strategy=cfg.dist, precision=cfg.precision, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False)
    except Exception as e:  # noqa: BLE001  (Lightning's MisconfigurationException, ValueError, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"invalid Lightning option (--accelerator {cfg.accelerator}, --devices {cfg.devices}, "
                          f"--dist {cfg.dist}, --precision {cfg.precision}): {first}") from None


def check_train_images(count: int, cfg: FinetuneConfig, what: str = "the training split",
                       hint: str = " (or lower --val-split/--test-split)") -> None:
    """A training loop needs 2 images or more per process: BatchNorm cannot normalise a batch of one
    (``stages.train_loader`` drops a last batch of one, which would leave nothing to train on)."""
    from transferkit.engine.stages import world_size

    world = world_size(cfg)
    if count <= world:
        shared = f" ({world} training processes share them)" if world > 1 else ""
        raise DataError(f"{what} holds {count} image(s){shared}; training needs at least {world + 1}: "
                        f"add images{hint}")


def _check_source_eval(cfg: FinetuneConfig, data) -> None:
    if not hasattr(cfg, "source_eval"):  # a command without forgetting options (adapt, distill)
        return
    source_eval = cfg.source_eval or cfg.source_data is not None
    if cfg.reg == "lwf" or source_eval:
        from transferkit.backbones.load import has_source_head

        if not has_source_head(cfg.weights):
            raise ConfigError(f"--reg lwf and --source-eval need pretrained weights with their source head; "
                              f"--weights {cfg.weights} has none")
    if cfg.source_labels and not cfg.source_data:
        raise ConfigError("--source-labels reads the class names of --source-data; give --source-data")
    if source_eval and cfg.source_data is None and data.size("test") == 0:
        raise ConfigError("--source-eval measures forgetting on the test split, which is empty here; "
                          "set --test-split or give --source-data")


def check_same_data(run: RunDir, now: dict) -> None:
    """Refuse ``--resume`` when the data differs from what the run started from (its ``data.json``): other
    classes, or images added, removed or replaced (each ``*fingerprint`` entry of ``now``, a
    ``content_fingerprint``), which would split the data differently. A run without such a record passes."""
    saved = _data_json(run)
    if saved is None:
        return
    if "classes" in saved and "classes" in now and saved["classes"] != now["classes"]:
        added, gone = (sorted(set(a) - set(b)) for a, b in ((now["classes"], saved["classes"]),
                                                            (saved["classes"], now["classes"])))
        raise DataError(f"the classes of {run.path}'s data changed since the run started (added: {added or '-'}, "
                        f"removed: {gone or '-'}); --resume needs the same classes — start a new run")
    for key in (k for k in now if k.endswith("fingerprint") and k in saved):
        was, new = saved[key], now[key]
        if was != new:
            which = "target" if key.startswith("target") else "data"
            count = (f"{was.get('images')} -> {new['images']} images" if was.get("images") != new["images"]
                     else f"still {new['images']} images, but not the same files")
            raise DataError(f"the images of {run.path}'s {which} changed since the run started ({count}); --resume "
                            "would split them differently: put them back as they were, or start a new run")


def _data_json(run: RunDir) -> dict | None:
    """The run's ``data.json`` (None when it has none), or one line when it is unreadable."""
    path = run.path / "data.json"
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = None
    if not isinstance(saved, dict):
        raise RunDirError(f"{path} is unreadable; the run cannot be resumed safely — start a new run")
    return saved
