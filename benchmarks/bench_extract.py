"""Feature extraction on a CPU: channels-last (NHWC) vs the default NCHW memory format, and the
batch size.

``transferkit.evaluation.extract_features`` (the one extractor behind finetune's probe, rank,
compare, evaluation and predict) over real images through the eval transform: scikit-learn's
digits (1,797 images) at 64 px and 512 Fashion-MNIST test images at 224 px, packaged
EfficientNet-Lite0, the loader's batch size as ``finetune`` uses it. Each setting is timed
``--repeats`` times after a warm-up batch; the table shows the median and the ratio, and the
largest feature difference between the two formats; then NHWC at each of ``--batch-sizes``.

The CLI runs with ``THP_MEM_ALLOC_ENABLE=1`` (PyTorch's CPU allocator backs buffers of 2 MB and
more with transparent huge pages); torch reads it when it loads, so compare by running the script
with the variable at 0 and at 1.

Usage: THP_MEM_ALLOC_ENABLE=0|1 python benchmarks/bench_extract.py [--repeats 3] [--batch-size 64]
       [--batch-sizes 64,32,16,8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from transferkit.backbones import load_backbone
from transferkit.data import TransformedSubset, build_transform, data_config_for, load_source
from transferkit.evaluation import extract_features


def timed(model, loader, channels_last: bool, repeats: int) -> tuple[float, torch.Tensor]:
    """Median seconds over ``repeats`` extractions, and the features."""
    extract_features(model, [next(iter(loader))], progress=False, channels_last=channels_last)   # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        feats, _ = extract_features(model, loader, progress=False, channels_last=channels_last)
        times.append(time.perf_counter() - start)
    return statistics.median(times), feats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batch-sizes", default="64,32,16,8")
    args = ap.parse_args()
    cases = [("digits", "builtin:digits", 64, None), ("fashion-mnist test", "builtin:fashion-mnist", 224, 512)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}")
    print("| images | px | NCHW s | NHWC s | NCHW / NHWC | max abs feature difference |\n|---|---|---|---|---|---|")
    batches = []
    for name, spec, size, count in cases:
        source = load_source(spec)
        images = source.test if count else source.train
        indices = np.arange(count or len(images.targets))
        model = load_backbone("efficientnet_lite0", weights="packaged", num_classes=10, image_size=size)
        tf = build_transform(data_config_for(model, size), size, train=False)
        loader = DataLoader(TransformedSubset(images, indices, tf), batch_size=args.batch_size)
        nchw, a = timed(model, loader, False, args.repeats)
        nhwc, b = timed(model, loader, True, args.repeats)
        print(f"| {name} ({len(indices)}) | {size} | {nchw:.2f} | {nhwc:.2f} | {nchw / nhwc:.2f}x | "
              f"{(a - b).abs().max().item():.1e} |")
        batches.append((f"{name} ({len(indices)})", size, model, images, indices, tf))
    print("\nNHWC by batch size (seconds, and the time at the first batch size / this one)")
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    print("| images | px | " + " | ".join(f"batch {b}" for b in sizes) + " |\n|---|---|" + "---|" * len(sizes))
    for name, size, model, images, indices, tf in batches:
        times = [timed(model, DataLoader(TransformedSubset(images, indices, tf), batch_size=b), True,
                       args.repeats)[0] for b in sizes]
        print(f"| {name} | {size} | " + " | ".join(f"{t:.2f} ({times[0] / t:.2f}x)" for t in times) + " |")


if __name__ == "__main__":
    main()
