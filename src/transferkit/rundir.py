"""The run directory: one folder per run, readable by people and programs.

::

    runs/<name>/
      config.yaml        the FinetuneConfig that made the run
      metrics.json       final metrics (model, strategy, accuracies, timings, ...)
      metrics.csv        per-epoch training log (merged across resumed attempts)
      model.safetensors  final weights (whole timm model, new head included)
      model.json         how to rebuild the model and preprocess inputs
      report.md          config, metrics and PNG plots
      checkpoints/       Lightning checkpoints for --resume
      logs/attempt_N/    raw CSV logs of each (possibly interrupted) attempt

Every file is written atomically: to a temporary name, then ``os.replace``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from transferkit.errors import RunDirError


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` then atomically move ``tmp`` onto ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: Path, obj) -> Path:
    return atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=str) + "\n"))


def save_weights(path: Path, model: torch.nn.Module) -> Path:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda p: save_file(state, str(p)))


class RunDir:
    """Paths of one run directory."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml")
    metrics_json = property(lambda self: self.path / "metrics.json")
    metrics_csv = property(lambda self: self.path / "metrics.csv")
    weights = property(lambda self: self.path / "model.safetensors")
    model_json = property(lambda self: self.path / "model.json")
    report = property(lambda self: self.path / "report.md")
    checkpoints = property(lambda self: self.path / "checkpoints")
    last_checkpoint = property(lambda self: self.path / "checkpoints" / "last.ckpt")
    logs = property(lambda self: self.path / "logs")

    @classmethod
    def check(cls, path: Path | str, *, overwrite: bool = False, resume: bool = False) -> "RunDir":
        """Refuse to clobber an existing run unless told to; creates nothing."""
        run = cls(path)
        if resume and not run.config.is_file():
            raise RunDirError(f"cannot resume: {run.path} has no config.yaml; start a new run without --resume")
        if not resume and not overwrite and run.path.exists() and any(run.path.iterdir()):
            raise RunDirError(f"run directory {run.path} already exists; pass --overwrite to replace it "
                              "or --resume to continue it")
        return run

    def create(self, overwrite: bool = False) -> "RunDir":
        """Make the (empty) folder, removing an old run first when ``overwrite``."""
        if overwrite and self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def next_attempt(self) -> str:
        self.logs.mkdir(parents=True, exist_ok=True)
        return f"attempt_{len(list(self.logs.glob('attempt_*')))}"

    def merge_logs(self) -> list[dict]:
        """Merge every attempt's CSV log into ``metrics.csv``.

        A resumed attempt restarts from the last checkpoint, so rows of earlier
        attempts at or after the resumed attempt's first step are dropped.
        """
        rows: list[dict] = []
        attempts = sorted(self.logs.glob("attempt_*/metrics.csv"),
                          key=lambda p: int(p.parent.name.split("_")[1]))
        for f in attempts:
            with f.open(newline="") as fh:
                new = list(csv.DictReader(fh))
            if new:
                start = min(int(r["step"]) for r in new)
                rows = [r for r in rows if int(r["step"]) < start] + new
        merged: dict[tuple[str, str], dict] = {}  # Lightning logs train and val of an epoch on separate rows
        for r in rows:
            row = merged.setdefault((r.get("epoch", ""), r["step"]), {})
            row.update({k: v for k, v in r.items() if v not in (None, "")})
        rows = list(merged.values())
        keys = sorted({k for r in rows for k in r})
        def write(p: Path) -> None:
            with p.open("w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=keys)
                w.writeheader()
                w.writerows(rows)
        atomic_write(self.metrics_csv, write)
        return rows


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise RunDirError(f"{path} not found; is this a finished transferkit run directory?")
    return load_file(str(path))
