"""Feature extraction in channels-last (NHWC) vs the default NCHW memory format.

``transferkit.evaluation.extract_features`` (the one extractor behind finetune's probe, rank,
compare, evaluation and predict) over real images through the eval transform: scikit-learn's
digits (1,797 images) at 64 px and 512 Fashion-MNIST test images at 224 px, packaged
EfficientNet-Lite0, the loader's batch size as ``finetune`` uses it. Each setting is timed
``--repeats`` times after a warm-up batch; the table shows the median and the ratio, and the
largest feature difference between the two formats.

Usage: python benchmarks/bench_extract.py [--repeats 3] [--batch-size 64]
"""

from __future__ import annotations

import argparse
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
    args = ap.parse_args()
    cases = [("digits", "builtin:digits", 64, None), ("fashion-mnist test", "builtin:fashion-mnist", 224, 512)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}")
    print("| images | px | NCHW s | NHWC s | NCHW / NHWC | max abs feature difference |\n|---|---|---|---|---|---|")
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


if __name__ == "__main__":
    main()
