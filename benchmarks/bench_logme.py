"""LogME speed: the vectorised implementation against a per-class loop.

    python benchmarks/bench_logme.py [--repeats 5]

Times ``transferkit.transferability.logme`` on 10,000 x 1,280 random features
with 10 classes (the size of cached EfficientNet-Lite0 features for a small
dataset), as float32 (what ``extract_features`` returns) and float64. On a
smaller problem it also times a straightforward reference — per class, the
paper's fixed point with the dense D x D posterior (solve, inverse and
log-determinant at every step, run on one BLAS thread, its fastest setting
for small matrices) — and prints the speed-up and the agreement.
Each time is the best of ``--repeats`` runs: wall clock, and the process's
CPU time (all threads), which moves less with other processes' load. The
machine's load is printed because wall times move with it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from transferkit.transferability import logme

# The slow reference is the one the tests check against (one implementation of the paper's loop).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_transferability import logme_ref as logme_loop  # noqa: E402


def best_time(fn, repeats: int) -> tuple[float, float, float]:
    """``(best wall seconds, best CPU seconds, result)`` over ``repeats`` calls."""
    wall, cpu, value = math.inf, math.inf, None
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        value = fn()
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return wall, cpu, value


def data(n: int, d: int, k: int, dtype, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random features with a weak class signal (so every class has a finite optimum)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    f = rng.standard_normal((n, d)) + 0.3 * rng.standard_normal((k, d))[y]
    return f.astype(dtype), y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    rows = []
    for dtype in (np.float32, np.float64):
        f, y = data(10_000, 1_280, 10, dtype)
        rows.append((f"logme ({np.dtype(dtype).name} input)", "10,000 x 1,280, K=10",
                     *best_time(lambda: logme(f, y), args.repeats)))
    f, y = data(2_000, 256, 10, np.float64)
    small = best_time(lambda: logme(f, y), args.repeats)
    with threadpool_limits(1, user_api="blas"):
        loop = best_time(lambda: logme_loop(f, y), max(1, args.repeats // 2))
    rows.append(("logme", "2,000 x 256, K=10", *small))
    rows.append(("per-class loop, dense D x D", "2,000 x 256, K=10", *loop))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cpus={os.cpu_count()}  load(1 min)={load:.2f}  best of {args.repeats}\n")
    print(f"| {'method':30s} | {'size':21s} | {'wall (s)':>8s} | {'cpu (s)':>7s} | {'LogME':>9s} |")
    print(f"|{'-' * 32}|{'-' * 23}|{'-' * 9}:|{'-' * 8}:|{'-' * 10}:|")
    for name, size, wall, cpu, value in rows:
        print(f"| {name:30s} | {size:21s} | {wall:8.3f} | {cpu:7.3f} | {value:9.6f} |")
    print(f"\nloop / logme on 2,000 x 256: {loop[0] / small[0]:.0f}x wall, {loop[1] / small[1]:.0f}x cpu; "
          f"|difference| {abs(loop[2] - small[2]):.1e}")


if __name__ == "__main__":
    main()
