"""CLI start-up: how long ``transferkit --help`` and each command's ``--help`` take.

DESIGN.md: heavy imports (torch, timm, lightning, matplotlib) happen inside the
commands that need them, so asking for help is instant. Each row is the median
wall time of N fresh processes (after one untimed warm-up run that fills the
disk cache), against a 1 s target. The commands are read from the typer app,
so a new command gets a row without editing this script. Rows for a bare
interpreter and for ``import transferkit`` / ``import transferkit.cli`` show
where the time goes.

The subprocesses import transferkit from this checkout's ``src/``.
Usage: python benchmarks/bench_startup.py [--repeats 5] [--target 1.0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))
CLI = [sys.executable, "-m", "transferkit.cli"]


def commands() -> list[str]:
    """The app's command names, as ``transferkit --help`` lists them."""
    sys.path.insert(0, str(SRC))
    import typer
    from transferkit.cli import app

    group = typer.main.get_command(app)
    return list(group.list_commands(group.make_context("transferkit", [], resilient_parsing=True)))


def wall_times(argv: list[str], repeats: int) -> tuple[list[float], int]:
    """Wall seconds of ``repeats`` runs (after one warm-up run) and the last exit code."""
    subprocess.run(argv, env=ENV, capture_output=True)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        done = subprocess.run(argv, env=ENV, capture_output=True)
        times.append(time.perf_counter() - t)
    return times, done.returncode


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--target", type=float, default=1.0, help="seconds")
    a = ap.parse_args()
    floor = statistics.median(wall_times([sys.executable, "-c", "pass"], a.repeats)[0])
    rows = [(f"python -c 'import {m}'", [sys.executable, "-c", f"import {m}"], False)
            for m in ("transferkit", "transferkit.cli")]
    rows.append(("transferkit --help", [*CLI, "--help"], True))
    rows += [(f"transferkit {c} --help", [*CLI, c, "--help"], True) for c in commands()]

    print(f"\nstart-up wall time, median of {a.repeats} fresh processes after a warm-up run "
          f"({os.cpu_count()} CPUs, Python {sys.version.split()[0]}); bare interpreter: {floor:.3f} s")
    print(f"| command | median s | min s | max s | × target | × bare python | target {a.target:g} s |")
    print("|---|---|---|---|---|---|---|")
    failed = []
    for label, argv, target in rows:
        times, code = wall_times(argv, a.repeats)
        med = statistics.median(times)
        verdict = "-" if not target else ("PASS" if med < a.target and code == 0 else "FAIL")
        if code != 0:
            verdict += f" (exit {code})"
        if verdict.startswith("FAIL"):
            failed.append(label)
        print(f"| `{label}` | {med:.3f} | {min(times):.3f} | {max(times):.3f} | {med / a.target:.2f} | "
              f"{med / floor:.1f} | {verdict} |")
    print(f"\n{len(rows) - 2 - len(failed)}/{len(rows) - 2} help commands under {a.target:g} s"
          + (f"; over: {', '.join(failed)}" if failed else ""))


if __name__ == "__main__":
    main()
