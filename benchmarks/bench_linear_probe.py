"""Converged linear probe (L-BFGS, C chosen on val/CV) vs a naive AdamW head loop, on cached features.

Both fit a 10-class linear head on the same frozen EfficientNet-Lite0 (packaged
ImageNet weights) pre-logits features, extracted once with
``transferkit.evaluation.extract_features`` and kept in a ``FeatureCache``
(a rerun extracts nothing):

* lbfgs — ``fit_linear_probe``: multinomial logistic regression, full-batch
  L-BFGS to ``max |grad| <= 1e-6``, ``C`` chosen on the validation split
  (or by CV when it is tiny), trained on the training split only;
* adamw — ``nn.Linear`` on the raw features, AdamW lr 1e-2 (weight decay
  0.01), batch 64, 20 epochs, no selection.

Data: sklearn digits (the ``finetune`` splits: 15% val, 20% test, each seed) at
64 px; Fashion-MNIST, 10 training images per class (val: 20 per class; test:
the official 10,000 images, whose features are shared by every seed) at
224, 160 and 64 px, seeds 0, 1, 2. Nothing is chosen on a test split (224 px
was added because it raised the mean validation accuracy from 0.737 to 0.787).

Usage: OMP_NUM_THREADS=1 nice python benchmarks/bench_linear_probe.py [--cache-dir DIR]
       [--sizes 224,160,64] [--seeds 0,1,2] [--views K]
(K > 1: also fit on the eval view + K random-crop views of each training image, grouped in CV.)
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from transferkit.backbones import load_backbone
from transferkit.data import TransformedSubset, build_transform, data_config_for, load_source, make_splits
from transferkit.evaluation.features import FeatureCache, extract_features, feature_key, weights_identity
from transferkit.evaluation.linear_probe import fit_linear_probe

MODEL, WEIGHTS = "efficientnet_lite0", "packaged"
_models: dict[int, nn.Module] = {}


def features(cache: FeatureCache, images, indices, size: int, view: int | None = None, hflip: float = 0.0):
    """Cached ``(features, labels)`` of ``images[indices]`` at ``size`` px (``view``: a random-crop view)."""
    subset = images.subset(indices)
    key = feature_key(model=MODEL, weights=weights_identity(MODEL, WEIGHTS), image_size=size,
                      data=subset.fingerprint(), view=view, **({"hflip": hflip} if hflip else {}))

    def compute() -> dict[str, torch.Tensor]:
        if size not in _models:
            _models[size] = load_backbone(MODEL, weights=WEIGHTS, num_classes=10, image_size=size)
        model = _models[size]
        transform = build_transform(data_config_for(model, size), size, train=view is not None, hflip=hflip)
        if view is not None:
            random.seed(1000 + view)                                 # the view's random crops (timm uses random)
            torch.manual_seed(1000 + view)
        loader = DataLoader(TransformedSubset(images, indices, transform), batch_size=128)
        x, y = extract_features(model, loader, desc=f"{subset.name} {len(subset)} @ {size}px view {view}")
        return {"features": x, "labels": y}

    got = cache.cached(key, compute)
    return got["features"], got["labels"]


def adamw(train, test, epochs: int = 20, lr: float = 1e-2, batch: int = 64, seed: int = 0):
    """Test accuracy and seconds of a naive head loop on raw features."""
    (x, y), (xt, yt) = train, test
    torch.manual_seed(seed)
    start = time.perf_counter()
    head = nn.Linear(x.shape[1], 10)
    opt = torch.optim.AdamW(head.parameters(), lr=lr)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(batch):
            opt.zero_grad()
            nn.functional.cross_entropy(head(x[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        acc = (head(xt).argmax(1) == yt).float().mean().item()
    return acc, time.perf_counter() - start


def lbfgs(train, val, test, seed: int = 0, groups=None):
    """Test accuracy and seconds of the converged probe, and the fit."""
    fit = fit_linear_probe(*train, *val, num_classes=10, groups=groups, seed=seed)
    return fit.accuracy(*test), fit.seconds, fit


def _row(what: str, method: str, results: list[tuple[float, float]], note: str = "") -> tuple:
    """``(what, method, "mean ± std" accuracy, mean seconds, note)`` over seeds."""
    acc, sec = np.array(results).T
    shown = f"{acc.mean():.4f}" + (f" ± {acc.std():.4f}" if len(acc) > 1 else "")
    return what, method, shown, f"{sec.mean():.2f}", note


def digits(cache: FeatureCache, seeds: list[int], size: int = 64) -> list[tuple]:
    """The probe and the AdamW loop on each seed's ``finetune`` splits (features of all 1,797 images
    extracted once); the loop's init seed is the split seed."""
    source = load_source("builtin:digits")
    x, y = features(cache, source.train, np.arange(len(source.train.targets)), size)
    probe, loop, notes = [], [], []
    for seed in seeds:
        s = make_splits(source.train.targets, val_split=0.15, test_split=0.2, seed=seed, has_test=False,
                        per_class=None, classes=source.classes)
        train, val, test = ((x[idx], y[idx]) for idx in (s.train, s.val, s.test))
        acc, sec, fit = lbfgs(train, val, test)
        probe.append((acc, sec))
        loop.append(adamw(train, test, seed=seed))
        notes.append(f"{acc:.3f} vs {loop[-1][0]:.3f} (C={fit.c:.2g}, val {fit.val_accuracy:.3f})")
    what = f"digits {size} px ({len(s.train)} train / {len(s.val)} val / {len(s.test)} test)"
    return [_row(what, "lbfgs", probe, "per seed, probe vs loop: " + "; ".join(notes)),
            _row(what, "adamw 20 ep", loop, f"seeds {seeds}")]


def fashion(cache: FeatureCache, size: int, seeds: list[int], views: int = 1) -> list[tuple]:
    source = load_source("builtin:fashion-mnist")
    test = features(cache, source.test, np.arange(len(source.test)), size)
    out: dict[str, list] = {"lbfgs": [], "adamw 20 ep": [], f"lbfgs + {views} crop views": []}
    notes: dict[str, list] = {k: [] for k in out}
    for seed in seeds:
        s = make_splits(source.train.targets, val_split=0.15, test_split=0.2, seed=seed, has_test=True,
                        per_class=10, classes=source.classes)
        train, val = features(cache, source.train, s.train, size), features(cache, source.train, s.val, size)
        acc, sec, fit = lbfgs(train, val, test, seed)
        out["lbfgs"].append((acc, sec))
        notes["lbfgs"].append(f"{acc:.3f} (C={fit.c:.2g}, val {fit.val_accuracy:.3f})")
        out["adamw 20 ep"].append(adamw(train, test, seed=seed))
        if views > 1:                                                # eval view + K random-crop views
            stacked = [train[0]] + [features(cache, source.train, s.train, size, view=k)[0] for k in range(views)]
            groups = np.tile(np.arange(len(train[1])), views + 1)
            acc, sec, fit = lbfgs((torch.cat(stacked), train[1].repeat(views + 1)), val, test, seed, groups)
            out[f"lbfgs + {views} crop views"].append((acc, sec))
            notes[f"lbfgs + {views} crop views"].append(f"{acc:.3f} (val {fit.val_accuracy:.3f})")
    what = f"fashion-mnist 10/class {size} px (100 train / 200 val / 10,000 test)"
    return [_row(what, k, v, "per seed: " + "; ".join(notes[k]) if notes[k] else f"seeds {seeds}")
            for k, v in out.items() if v]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache-dir", default=None, help="feature cache (default: $TRANSFERKIT_CACHE/features)")
    ap.add_argument("--sizes", default="224,160,64")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--views", type=int, default=1)
    args = ap.parse_args()
    cache = FeatureCache(args.cache_dir)
    seeds = [int(v) for v in args.seeds.split(",")]
    rows = digits(cache, seeds)
    for size in (int(v) for v in args.sizes.split(",")) if args.sizes else ():
        rows += fashion(cache, size, seeds, args.views)
    print(f"\nlinear probe on cached EfficientNet-Lite0 features ({torch.get_num_threads()} torch threads)")
    print("| data | head | test accuracy (mean ± std over seeds) | fit seconds | notes |\n|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
