"""Lightning's CSV logs of a run: one ``logs/attempt_N/`` folder per (possibly interrupted) attempt,
merged into the run's ``metrics.csv``."""

from __future__ import annotations

import csv
from pathlib import Path

from transferkit.rundir.atomic import atomic_write


def next_attempt(logs: Path, writer: bool) -> str:
    """The name of the next attempt's log folder under ``logs`` (created by the ``writer`` only)."""
    if writer:
        logs.mkdir(parents=True, exist_ok=True)
    return f"attempt_{len(list(logs.glob('attempt_*')))}"


def merge_logs(logs: Path, out: Path) -> list[dict]:
    """Merge every attempt's CSV log under ``logs`` into ``out`` (``metrics.csv``); returns its rows.

    A resumed attempt restarts from the last checkpoint, so rows of earlier
    attempts at or after the resumed attempt's first step are dropped.
    """
    rows = _one_row_per_step(_attempts_rows(logs))
    keys = sorted({k for r in rows for k in r})

    def write(p: Path) -> None:
        with p.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
    atomic_write(out, write)
    return rows


def _attempts_rows(logs: Path) -> list[dict]:
    """The attempts' rows in order, each attempt replacing the rows from its first step on."""
    rows: list[dict] = []
    attempts = sorted(logs.glob("attempt_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    for f in attempts:
        with f.open(newline="") as fh:
            new = list(csv.DictReader(fh))
        if new:
            start = min(int(r["step"]) for r in new)
            rows = [r for r in rows if int(r["step"]) < start] + new
    return rows


def _one_row_per_step(rows: list[dict]) -> list[dict]:
    """Lightning logs train and val of an epoch on separate rows: one row per (epoch, step), non-empty
    values of the later rows over the earlier."""
    merged: dict[tuple[str, str], dict] = {}
    for r in rows:
        row = merged.setdefault((r.get("epoch", ""), r["step"]), {})
        row.update({k: v for k, v in r.items() if v not in (None, "")})
    return list(merged.values())
