"""CPU cost of one fine-tuning step of EfficientNet-Lite0 (batch 64): input size, memory
format and how many bottom layer groups stay frozen (no backward through them).

    python benchmarks/bench_train_step.py
Prints ms per step and images/s; the ratio column is relative to the first row.
"""

from __future__ import annotations

import argparse
import time

import torch

from transferkit.backbones import layer_groups, load_backbone


def step_ms(size: int, channels_last: bool, frozen_groups: int, steps: int = 4) -> float:
    model = load_backbone("efficientnet_lite0", "packaged", num_classes=10, image_size=size).train()
    groups = layer_groups(model)
    for _, params in groups[:frozen_groups]:
        for _, p in params:
            p.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-3)
    x, y = torch.randn(64, 3, size, size), torch.randint(0, 10, (64,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first step warms up
            times.append(time.perf_counter() - t)
    return 1000 * sorted(times)[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="64,96")
    p.add_argument("--frozen", default="0,3,5")
    a = p.parse_args()
    rows, base = [], None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| size | channels_last | frozen groups | ms / step | images / s | time vs first |")
    print("|---|---|---|---|---|---|")
    for size in map(int, a.sizes.split(",")):
        for frozen in map(int, a.frozen.split(",")):
            for cl in (False, True):
                ms = step_ms(size, cl, frozen)
                base = base or ms
                print(f"| {size} | {cl} | {frozen} | {ms:.0f} | {64000 / ms:.0f} | {ms / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
