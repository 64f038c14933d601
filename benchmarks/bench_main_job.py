"""The README's main command, as a user runs it, on several seeds and float-order perturbations:
test accuracy, the raw-pixel baseline, training time and whole-process wall time (start-up included).

    python benchmarks/bench_main_job.py --seeds 0,1,2,3,4 [--perturb threads2,threads1,avx2]
        [--candidates] [--out runs/main-job] [-- extra finetune options]

Without ``--perturb`` each seed runs the ``transferkit`` command itself. With it, each cell runs
``benchmarks/main_job_cell.py`` (the same CLI, in one process, after setting the perturbation: thread
count, an AVX2-only CPU, channels-first, oneDNN off) — one machine standing in for another CPU's float order.
``--candidates`` also records, per cell, what other endings of the same trajectory score (EMA
weights, epoch averages, each epoch) into ``candidates.json`` beside the run; the summary then
prints each candidate's validation mean (the choosing figure) and its test range.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_cell(seed: int, perturb: str | None, a, extra: list[str]) -> dict:
    out = Path(a.out) / (f"seed{seed}-{perturb}" if perturb else f"seed{seed}")
    args = ["finetune", "--data", a.data, "--seed", str(seed), "--out", str(out), "--overwrite", "--no-progress", *extra]
    if perturb:
        cmd = [sys.executable, str(HERE / "main_job_cell.py"), "--perturb", perturb]
        cmd += ["--candidates", str(out.parent / f"{out.name}.candidates.json")] if a.candidates else []
        cmd += ["--", *args]
    else:
        cmd = [str(Path(sys.executable).parent / "transferkit"), *args]
    t = time.perf_counter()
    done = subprocess.run(["true"] if a.report_only else cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if a.report_only:  # the wall time of a finished cell is not recorded: its training time stands in
        wall = json.loads((out / "metrics.json").read_text())["train_seconds"]
    if done.returncode:
        sys.exit(f"seed {seed} {perturb or ''} failed: {done.stderr.strip()[-2000:]}")
    m = json.loads((out / "metrics.json").read_text())
    row = dict(seed=seed, perturb=perturb or "-", strategy=m["strategy"], test=m["test_accuracy"],
               val=m["val_accuracy"], pixels=m["pixel_baseline_accuracy"], train=m["train_seconds"], wall=wall)
    cand = out.parent / f"{out.name}.candidates.json"
    if a.candidates and cand.is_file():
        row["candidates"] = json.loads(cand.read_text())
    print(f"seed {seed} {perturb or ''}: {m['strategy']} test {row['test']:.4f} val {row['val']:.4f} "
          f"(pixels {row['pixels']:.4f}) train {row['train']:.0f} s, wall {wall:.0f} s", flush=True)
    return row


def table(rows: list[dict]) -> None:
    print("\n| seed | perturbation | strategy | test accuracy | val accuracy | raw-pixel baseline | train s | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['perturb']} | {r['strategy']} | {r['test']:.4f} | {r['val']:.4f} | "
              f"{r['pixels']:.4f} | {r['train']:.0f} | {r['wall']:.0f} |")
    col = lambda k: [r[k] for r in rows]  # noqa: E731
    sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
    print(f"| mean ± std | | | {statistics.mean(col('test')):.4f} ± {sd(col('test')):.4f} | "
          f"{statistics.mean(col('val')):.4f} | {statistics.mean(col('pixels')):.4f} | "
          f"{statistics.mean(col('train')):.0f} | {statistics.median(col('wall')):.0f} (median) |")
    print(f"\ncells {len(rows)}; test min {min(col('test')):.4f} mean {statistics.mean(col('test')):.4f} "
          f"max {max(col('test')):.4f}; wall median {statistics.median(col('wall')):.0f} s, slowest "
          f"{max(col('wall')):.0f} s; above pixels in every cell: {all(r['test'] > r['pixels'] for r in rows)}")


def candidates_table(rows: list[dict]) -> None:
    """Each candidate ending, with auto's rule applied (kept only if it beats the probe on validation,
    else the probe's own test score is unknown here: such cells are counted, not scored)."""
    have = [r for r in rows if "candidates" in r]
    if not have:
        return
    for r in have:  # the best-validation epoch (ties: the later one), chosen on validation alone
        c = r["candidates"]["candidates"]
        epochs = [v for k, v in c.items() if k.startswith("epoch")]
        c["best-val-epoch"] = [v for v in epochs if v["val"] == max(e["val"] for e in epochs)][-1]
    names = list(have[0]["candidates"]["candidates"])
    print("\n| ending | val mean | val min | val moved by float order | test mean ± std | test min | cells under probe on val |")
    print("|---|---|---|---|---|---|---|")
    for n in names:
        v = [r["candidates"]["candidates"][n]["val"] for r in have]
        t = [r["candidates"]["candidates"][n]["test"] for r in have]
        lose = sum(r["candidates"]["candidates"][n]["val"] < (r["candidates"]["probe_val_accuracy"] or 0) for r in have)
        print(f"| {n} | {statistics.mean(v):.4f} | {min(v):.4f} | {_float_order_shift(have, n):.4f} | {statistics.mean(t):.4f} ± "
              f"{statistics.stdev(t) if len(t) > 1 else 0:.4f} | {min(t):.4f} | {lose} |")


def _float_order_shift(rows: list[dict], name: str) -> float:
    """Mean over seeds of the range (max - min) of ending ``name``'s validation accuracy across the
    perturbations run for that seed: how far float order alone moves it (0 with one perturbation)."""
    by_seed: dict[int, list[float]] = {}
    for r in rows:
        by_seed.setdefault(r["seed"], []).append(r["candidates"]["candidates"][name]["val"])
    return statistics.mean(max(v) - min(v) for v in by_seed.values())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--perturb", default="", help="comma-separated: threads2, threads1, avx2, nchw, nodnn")
    p.add_argument("--candidates", action="store_true")
    p.add_argument("--report-only", action="store_true", help="tabulate finished cells under --out, run nothing")
    p.add_argument("--data", default="builtin:digits")
    p.add_argument("--out", default="runs/main-job")
    a, extra = p.parse_known_args()
    extra = [e for e in extra if e != "--"]
    perturbs = [x for x in a.perturb.split(",") if x] or [None]
    rows = [run_cell(seed, pt, a, extra) for seed in map(int, a.seeds.split(",")) for pt in perturbs]
    table(rows)
    candidates_table(rows)


if __name__ == "__main__":
    main()
