"""The whole-process linear probe against the naive 20-epoch loop (issue "Engine 2").

Every row is one fresh process, timed from its start to its exit, on digits at 64 px with the
packaged EfficientNet-Lite0 (the same splits, seed 0):

* ``naive loop``: ``benchmarks/naive_probe_loop.py`` -- a plain PyTorch script, the frozen
  backbone inside the loop, 20 epochs of AdamW on a linear head (what the issue timed);
* ``naive, features once``: the same script extracting the features once (``--features-once``);
* ``transferkit, fresh cache``: ``transferkit finetune --strategy linear-probe`` with an empty
  feature cache (it extracts, fits the converged probe, evaluates, scores the raw-pixel
  baseline, saves the model and writes the report);
* ``transferkit, cached``: the same command again, a new ``--out``, the cache now filled.

Ratios are against the naive loop. The rows run one after another, so they share the machine's
conditions; run it on a quiet machine. Usage: python benchmarks/bench_probe_process.py [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROBE = ["finetune", "--data", "builtin:digits", "--strategy", "linear-probe", "--image-size", "64",
         "--epochs", "20", "--no-progress"]


def timed(argv: list[str], env: dict) -> tuple[float, str]:
    """Wall seconds of one process and its output; stops on a failure."""
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{done.stderr}")
    return seconds, done.stdout


def accuracy(out: str) -> str:
    found = re.search(r"test accuracy (\d\.\d+)", out)
    return found.group(1) if found else "?"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=1, help="runs per row (the table shows the median)")
    a = ap.parse_args()
    cli = [sys.executable, "-m", "transferkit.cli", *PROBE]
    naive = [sys.executable, str(HERE / "naive_probe_loop.py")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TRANSFERKIT_CACHE": str(Path(tmp) / "cache")}
        runs = [("naive loop (backbone in the loop, 20 epochs)", lambda i: naive, False),
                ("naive, features once", lambda i: [*naive, "--features-once"], False),
                ("transferkit linear-probe, fresh cache", lambda i: [*cli, "--out", f"{tmp}/fresh{i}"], True),
                ("transferkit linear-probe, cached features", lambda i: [*cli, "--out", f"{tmp}/cached{i}"], False)]
        for label, argv, fresh in runs:
            times, out = [], ""
            for i in range(a.repeats):
                if fresh:                                              # an empty cache for each run
                    env["TRANSFERKIT_CACHE"] = str(Path(tmp) / f"cache{i}")
                seconds, out = timed(argv(i), env)
                times.append(seconds)
            rows.append((label, sorted(times)[len(times) // 2], accuracy(out)))
    base = rows[0][1]
    print(f"\nwhole-process wall time, digits 64 px, median of {a.repeats} ({os.cpu_count()} CPUs)")
    print("| process | wall s | naive loop / this | test accuracy |\n|---|---|---|---|")
    for label, seconds, acc in rows:
        print(f"| {label} | {seconds:.1f} | {base / seconds:.1f}x | {acc} |")


if __name__ == "__main__":
    main()
