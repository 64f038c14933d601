"""The one run skeleton of the training commands (finetune, adapt, distill, pretrain).

:func:`run_command` owns the steps every command shares, in this order::

    run path -> RunDir -> command.prepare -> resume (saved config + what changed) -> seed
    -> command.load -> command.check (everything refused before the disk is touched; model built)
    -> open the run (ownership, lock, undo on failure) -> config.yaml + data.json
    -> command.before (rank zero) -> command.train (every rank; Lightning)
    -> rank guard -> command.evaluate (rank zero: metrics, model saved) -> resume changes
    -> final scores to --logger's TensorBoard/MLflow (engine.loggers) -> command.report

A command (:class:`Command`) supplies only what differs: its run label, how it loads its data, checks
and builds its model, trains, evaluates and reports. Its hooks share one ``state`` namespace.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from transferkit.engine.stages import record_run, seed_all
from transferkit.errors import Interrupted
from transferkit.rundir import RunDir, is_global_zero


class Command:
    """What one training command supplies to :func:`run_command` (each hook has a default but the
    data, training and evaluation ones)."""

    #: the run-directory kind, and the command a resume hint names
    kind: str = ""

    def label(self, cfg: Any) -> str:
        """The middle of the default run directory name, ``runs/<model>-<label>-<time>``."""
        return self.kind

    def prepare(self, cfg: Any, state: SimpleNamespace) -> Any:
        """``cfg`` with defaults that come from the inputs (before a resume compares configs)."""
        return cfg

    def load(self, cfg: Any, state: SimpleNamespace) -> None:
        raise NotImplementedError

    def check(self, cfg: Any, state: SimpleNamespace, run: RunDir, *, overwrite: bool, resume: bool) -> None:
        """Everything refused before the disk is touched; the model built (``state``)."""

    def record(self, cfg: Any, state: SimpleNamespace) -> dict:
        """The content of ``data.json``."""
        return state.data.record(data=cfg.data)

    def before(self, cfg: Any, state: SimpleNamespace) -> None:
        """Rank zero, before training (measurements of the starting point)."""

    def train(self, cfg: Any, state: SimpleNamespace, run: RunDir, resume: bool, progress: bool):
        raise NotImplementedError

    def evaluate(self, cfg: Any, state: SimpleNamespace, run: RunDir, trained) -> dict:
        raise NotImplementedError

    def report(self, run: RunDir, cfg: Any, metrics: dict, state: SimpleNamespace) -> None:
        """``report.md`` and its figures."""


def run_path(cfg, label: str | None = None) -> Path:
    """``--out``, or ``runs/<model>-<label, default the strategy>-<time>``: decided once, by the first process
    (processes that Lightning launches for DDP inherit it through the environment)."""
    if cfg.out:
        return Path(cfg.out)
    if "TRANSFERKIT_RUN_DIR" not in os.environ:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        os.environ["TRANSFERKIT_RUN_DIR"] = str(Path("runs") / f"{cfg.model}-{label or cfg.strategy}-{stamp}")
    return Path(os.environ["TRANSFERKIT_RUN_DIR"])


@contextmanager
def resume_hint(run: RunDir, command: str = "finetune"):
    """On SIGINT/SIGTERM: say what was kept and the exact command that continues."""
    try:
        yield
    except Interrupted as e:
        ckpt = run.last_checkpoint
        kept = f"last checkpoint {ckpt}" if ckpt.is_file() else "no epoch had finished (no checkpoint yet)"
        e.where = f"{kept}; continue with: transferkit {command} --out {run.path} --resume"
        raise


def build_entry(entry, ctx: SimpleNamespace, cfg):
    """``entry.build`` on ``ctx`` with the entry's own options (``cfg.options[entry.name]``, validated)."""
    from transferkit.registry import options_of

    return entry.build(SimpleNamespace(**vars(ctx), options=options_of(entry, cfg)))


def run_command(command: Command, cfg: Any, *, overwrite: bool = False, resume: bool = False,
                progress: bool = True) -> dict:
    """Run (or resume) one run of ``command``; its ``metrics.json`` content ({} on non-zero ranks)."""
    from transferkit.engine.checks import resumed_config, run_inputs

    cfg = cfg.model_copy(update={"out": str(run_path(cfg, command.label(cfg)))})
    run, changed, state = RunDir(cfg.out, kind=command.kind), {}, SimpleNamespace()
    cfg = command.prepare(cfg, state)
    if resume:
        cfg, changed = resumed_config(run, cfg)
    seed_all(cfg.seed)
    command.load(cfg, state)
    command.check(cfg, state, run, overwrite=overwrite, resume=resume)
    with run.open(overwrite=overwrite, resume=resume, inputs=run_inputs(cfg)) as run, resume_hint(run, command.kind):
        record_run(run, cfg, command.record(cfg, state), resume=resume, changed=changed)
        if is_global_zero():
            command.before(cfg, state)
        trained = command.train(cfg, state, run, resume, progress)
        if not trained.is_global_zero:
            return {}
        metrics = command.evaluate(cfg, state, run, trained)
        if changed:
            metrics["resume_changes"] = changed
        if cfg.logger != "csv":
            from transferkit.engine.loggers import log_results

            log_results(cfg, run, metrics)
        command.report(run, cfg, metrics, state)
    return metrics


__all__ = ["Command", "build_entry", "resume_hint", "run_command", "run_path"]
