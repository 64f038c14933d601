"""The naive linear probe the Engine 2 issue measured against: a plain script.

Frozen EfficientNet-Lite0 (packaged ImageNet weights) features of scikit-learn's digits at
64 px (the ``finetune`` splits, seed 0), then an ``nn.Linear`` head trained for 20 epochs with
AdamW (lr 1e-2, batch 64) on those features; prints the test accuracy. No cache, no selection,
no report: the whole process is the reference ``bench_probe_process.py`` times.

Usage: python benchmarks/naive_probe_loop.py
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from transferkit.backbones import load_backbone
from transferkit.data import TransformedSubset, build_transform, data_config_for, load_source, make_splits


def main(size: int = 64, epochs: int = 20) -> None:
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

    (x, y), (xt, yt) = feats(s.train), feats(s.test)
    head = nn.Linear(x.shape[1], 10)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(head(x[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        print(f"test accuracy {(head(xt).argmax(1) == yt).float().mean().item():.4f}")


if __name__ == "__main__":
    main()
