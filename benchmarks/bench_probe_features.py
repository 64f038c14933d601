"""Which features lift the Fashion-MNIST 10/class linear probe? Chosen on validation only.

The converged probe (``fit_linear_probe``, defaults) on 224 px features, five split seeds (the
``finetune`` splits: 10 training and 20 validation images per class), for:

* ``lite0``: the packaged EfficientNet-Lite0's pre-logits (what ``linear-probe`` uses);
* ``lite0 flip-avg``: the mean of the features of each image and of its mirror image (train, val
  and test alike: a deterministic test-time augmentation);
* ``lite0 stages``: the global average of every stage's output (``forward_intermediates``)
  concatenated, per-feature standardisation (the stages' scales differ), and the same appended to
  the pre-logits;
* ``lite1`` / ``lite2``: the larger packaged backbones at the same 224 px.

Prints validation accuracy and cross-entropy (mean over seeds); ``--test`` also scores the
official 10,000 test images (for the record, after a choice). Features go through the shared
``FeatureCache``.

Usage: python benchmarks/bench_probe_features.py [--seeds 0,1,2,3,4] [--test]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from transferkit.backbones import load_backbone
from transferkit.data import TransformedSubset, build_transform, data_config_for, load_source, make_splits
from transferkit.evaluation.features import FeatureCache, feature_key, map_batches, pre_logits, weights_identity
from transferkit.evaluation.linear_probe import fit_linear_probe

SIZE = 224
_models: dict[str, torch.nn.Module] = {}


def _pre_logits(model, x):
    return {"features": pre_logits(model, x)}


def _flipped(model, x):
    return {"features": pre_logits(model, torch.flip(x, dims=[-1]))}


def _stages(model, x):
    return {"features": torch.cat([t.mean((2, 3)) for t in model.forward_intermediates(x)[1]], 1)}


def features(cache: FeatureCache, model: str, images, indices, kind: str, fn) -> tuple[torch.Tensor, torch.Tensor]:
    subset = images.subset(indices)
    key = feature_key(model=model, weights=weights_identity(model, "packaged"), image_size=SIZE,
                      data=subset.fingerprint(), **({"bench_kind": kind} if kind != "pre_logits" else {}))

    def compute() -> dict:
        if model not in _models:
            _models[model] = load_backbone(model, weights="packaged", num_classes=10, image_size=SIZE)
        net = _models[model]
        tf = build_transform(data_config_for(net, SIZE), SIZE, train=False)
        got = map_batches(net, DataLoader(TransformedSubset(images, indices, tf), batch_size=128), fn,
                          desc=f"{model} {kind} {len(subset)}")
        return {"features": got["features"], "labels": got["labels"]}

    got = cache.cached(key, compute)
    return got["features"], got["labels"]


def variants(cache: FeatureCache, images, idx) -> dict[str, tuple[tuple[torch.Tensor, torch.Tensor], str]]:
    """Every candidate's ``((features, labels), standardize)`` for ``images[idx]``."""
    plain = features(cache, "efficientnet_lite0", images, idx, "pre_logits", _pre_logits)
    flip = features(cache, "efficientnet_lite0", images, idx, "hflip", _flipped)
    stages = features(cache, "efficientnet_lite0", images, idx, "stages", _stages)
    return {
        "lite0": (plain, "global"),
        "lite0 flip-avg": (((plain[0] + flip[0]) / 2, plain[1]), "global"),
        "lite0 stages": (stages, "feature"),
        "lite0 pre-logits + stages": ((torch.cat([plain[0], stages[0]], 1), plain[1]), "feature"),
        "lite1": (features(cache, "efficientnet_lite1", images, idx, "pre_logits", _pre_logits), "global"),
        "lite2": (features(cache, "efficientnet_lite2", images, idx, "pre_logits", _pre_logits), "global"),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--test", action="store_true", help="also score the official test set")
    args = ap.parse_args()
    cache, source = FeatureCache(), load_source("builtin:fashion-mnist")
    test = variants(cache, source.test, np.arange(len(source.test))) if args.test else None
    rows: dict[str, list] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        s = make_splits(source.train.targets, val_split=0.15, test_split=0.2, seed=seed, has_test=True,
                        per_class=10, classes=source.classes)
        train, val = variants(cache, source.train, s.train), variants(cache, source.train, s.val)
        for name, ((x, y), std) in train.items():
            (xv, yv), _ = val[name]
            fit = fit_linear_probe(x, y, xv, yv, num_classes=10, seed=seed, standardize=std)
            row = [fit.val_accuracy, F.cross_entropy(fit.logits(xv), yv).item()]
            rows.setdefault(name, []).append(row + ([fit.accuracy(*test[name][0])] if test else []))
    print(f"\nFashion-MNIST 10/class, {SIZE} px, seeds {args.seeds}: the probe on each feature set")
    print("| features | val accuracy | val cross-entropy |" + (" test accuracy |" if test else "")
          + "\n|---|---|---|" + ("---|" if test else ""))
    for name, got in rows.items():
        a = np.array(got)
        cells = [f"{a[:, 0].mean():.4f} ± {a[:, 0].std():.4f}", f"{a[:, 1].mean():.4f}"]
        cells += [f"{a[:, 2].mean():.4f} ± {a[:, 2].std():.4f}"] if test else []
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
