"""The naive linear probe the Engine 2 issue measured against: a plain script.

A frozen EfficientNet-Lite0 (packaged ImageNet weights, eval mode) on scikit-learn's digits at
64 px (the ``finetune`` splits, seed 0) and an ``nn.Linear`` head trained for 20 epochs with
AdamW (lr 1e-2, batch 64); prints the test accuracy. No cache, no selection, no report.

Two ways to write it: by default the frozen backbone runs inside the loop, every batch of every
epoch, as a plain PyTorch training script does; ``--features-once`` extracts the features once and
trains the head on those tensors (what a careful script does). Same head, same accuracy up to
the order of the batches; ``bench_probe_process.py`` times both as whole processes.

Usage: python benchmarks/naive_probe_loop.py [--features-once] [--epochs 20]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader

from transferkit.backbones import load_backbone
from transferkit.data import TransformedSubset, build_transform, data_config_for, load_source, make_splits


def main(size: int = 64, epochs: int = 20, features_once: bool = False) -> None:
    torch.manual_seed(0)
    source = load_source("builtin:digits")
    s = make_splits(source.train.targets, val_split=0.15, test_split=0.2, seed=0, has_test=False,
                    per_class=None, classes=source.classes)
    model = load_backbone("efficientnet_lite0", weights="packaged", num_classes=10, image_size=size).eval()
    tf = build_transform(data_config_for(model, size), size, train=False)

    def feats(idx):
        xs, ys = [], []
        with torch.no_grad():
            for x, y in DataLoader(TransformedSubset(source.train, idx, tf), batch_size=128):
                xs.append(model.forward_head(model.forward_features(x), pre_logits=True))
                ys.append(y)
        return torch.cat(xs), torch.cat(ys)

    head = nn.Linear(model.num_features, 10)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad()
        nn.functional.cross_entropy(head(x), y).backward()
        opt.step()

    if features_once:
        x, y = feats(s.train)
        for _ in range(epochs):
            for idx in torch.randperm(len(x)).split(64):
                step(x[idx], y[idx])
    else:
        train = DataLoader(TransformedSubset(source.train, s.train, tf), batch_size=64, shuffle=True)
        for _ in range(epochs):
            for images, labels in train:
                with torch.no_grad():
                    x = model.forward_head(model.forward_features(images), pre_logits=True)
                step(x, labels)
    xt, yt = feats(s.test)
    with torch.no_grad():
        print(f"test accuracy {(head(xt).argmax(1) == yt).float().mean().item():.4f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--features-once", action="store_true", help="extract the features once, then train the head")
    ap.add_argument("--epochs", type=int, default=20)
    a = ap.parse_args()
    main(epochs=a.epochs, features_once=a.features_once)
