"""Why ``bench_main_job.py --perturb nodnn`` is not part of the main job's grid: one training step of
the main job's network (EfficientNet-Lite0, 96 px, channels-last as the engine runs it) with oneDNN
on and off, and channels-first with oneDNN off.

    python benchmarks/bench_onednn_off.py [--batch 16] [--threads 1] [--steps 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from transferkit.backbones import load_backbone


def step_seconds(model, x, y, steps: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for _ in range(steps + 1):  # the first step warms up
        t = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return min(times[1:])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    x, y = torch.randn(a.batch, 3, 96, 96), torch.randint(0, 10, (a.batch,))
    rows = []
    for label, dnn, fmt in (("oneDNN on, channels-last", True, torch.channels_last),
                            ("oneDNN off, channels-last", False, torch.channels_last),
                            ("oneDNN off, channels-first", False, torch.contiguous_format)):
        torch.backends.mkldnn.enabled = dnn
        torch.manual_seed(0)
        model = load_backbone("efficientnet_lite0", "packaged", num_classes=10).train().to(memory_format=fmt)
        rows.append((label, step_seconds(model, x.contiguous(memory_format=fmt), y, a.steps)))
    print(f"\n| EfficientNet-Lite0, 96 px, batch {a.batch}, {a.threads} thread(s) | s per training step | x oneDNN on |")
    print("|---|---|---|")
    for label, s in rows:
        print(f"| {label} | {s:.2f} | {s / rows[0][1]:.1f} |")


if __name__ == "__main__":
    main()
