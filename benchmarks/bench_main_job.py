"""The README's main command, as a user runs it, on several seeds: test accuracy, the raw-pixel
baseline, training time and whole-process wall time (start-up included).

    python benchmarks/bench_main_job.py --seeds 0,1,2,3,4 [--out runs/main-job] [-- extra finetune options]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--data", default="builtin:digits")
    p.add_argument("--out", default="runs/main-job")
    a, extra = p.parse_known_args()
    extra = [e for e in extra if e != "--"]
    rows = []
    for seed in map(int, a.seeds.split(",")):
        out = Path(a.out) / f"seed{seed}"
        cmd = [str(Path(sys.executable).parent / "transferkit"), "finetune", "--data", a.data, "--seed", str(seed),
               "--out", str(out), "--overwrite", "--no-progress", *extra]
        t = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if done.returncode:
            sys.exit(f"seed {seed} failed: {done.stderr.strip()}")
        m = json.loads((out / "metrics.json").read_text())
        rows.append((seed, m["strategy"], m["test_accuracy"], m["val_accuracy"], m["pixel_baseline_accuracy"],
                     m["train_seconds"], wall))
        print(f"seed {seed}: {m['strategy']} test {m['test_accuracy']:.4f} (pixels {m['pixel_baseline_accuracy']:.4f}) "
              f"train {m['train_seconds']:.0f} s, wall {wall:.0f} s — {m['strategy_reason']}", flush=True)
    print("\n| seed | strategy | test accuracy | val accuracy | raw-pixel baseline | train s | wall s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.4f} | {r[3]:.4f} | {r[4]:.4f} | {r[5]:.0f} | {r[6]:.0f} |")
    col = lambda i: [r[i] for r in rows]  # noqa: E731
    sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
    print(f"| mean ± std | | {statistics.mean(col(2)):.4f} ± {sd(col(2)):.4f} | {statistics.mean(col(3)):.4f} | "
          f"{statistics.mean(col(4)):.4f} | {statistics.mean(col(5)):.0f} | {statistics.mean(col(6)):.0f} ± {sd(col(6)):.0f} |")
    print(f"\nmin test {min(col(2)):.4f}; max wall {max(col(6)):.0f} s; beats pixels on every seed: "
          f"{all(r[2] > r[4] for r in rows)}")


if __name__ == "__main__":
    main()
