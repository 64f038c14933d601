"""Linear probe on cached features vs the same head training done naively.

Both train only the new head of the packaged EfficientNet-Lite0 on the same
split, same epochs, same optimizer and schedule, through the same engine:

* cached — the backbone runs once over the data (inference mode), the head
  trains on the cached tensors (``--strategy linear-probe``);
* naive  — the frozen backbone runs forward on every batch of every epoch.

Prints a table with accuracy and wall time, and the speed ratio.
Usage: python benchmarks/bench_linear_probe.py [--data builtin:fashion-mnist] [--per-class 50] [--epochs 10]
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from transferkit.backbones import load_backbone
from transferkit.data import TransformedSubset, build_transform, data_config_for, load_source, make_splits
from transferkit.engine.module import OptimSettings, TransferModule
from transferkit.evaluation import evaluate, extract_features
from transferkit.strategies import make_plan


def trainer(epochs: int) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="builtin:fashion-mnist")
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    source = load_source(args.data)
    splits = make_splits(source.train.targets, seed=0, has_test=source.test is not None, per_class=args.per_class)
    test = source.test.subset(range(0, len(source.test), 10)) if source.test is not None else source.train.subset(splits.test)
    n_cls = len(source.classes)
    results = {}
    for mode in ("cached", "naive"):
        L.seed_everything(0, verbose=False)
        model = load_backbone("efficientnet_lite0", "packaged", num_classes=n_cls, image_size=args.image_size)
        tf = build_transform(data_config_for(model, args.image_size), args.image_size, train=False)
        plan = make_plan("linear-probe" if mode == "cached" else "freeze", model)
        train_ds = TransformedSubset(source.train, splits.train, tf)
        test_ds = TransformedSubset(test, range(len(test)), tf)
        start = time.perf_counter()
        if mode == "cached":
            feats = extract_features(model, DataLoader(train_ds, batch_size=args.batch_size), progress=False)
            net, train_dl = model.get_classifier(), DataLoader(TensorDataset(*feats), args.batch_size, shuffle=True)
        else:
            net, train_dl = model, DataLoader(train_ds, args.batch_size, shuffle=True)
        trainer(args.epochs).fit(TransferModule(net, n_cls, plan, OptimSettings(lr=1e-3)), train_dl)
        seconds = time.perf_counter() - start
        acc = evaluate(model, DataLoader(test_ds, batch_size=128), n_cls)["accuracy"]
        results[mode] = (acc, seconds)

    print(f"\nlinear probe, {args.data} --per-class {args.per_class}, {args.image_size} px, {args.epochs} epochs, "
          f"{len(splits.train)} train / {len(test)} test images, {torch.get_num_threads()} threads")
    print(f"| path | test accuracy | train seconds |\n|---|---|---|")
    for mode, (acc, s) in results.items():
        print(f"| {mode} | {acc:.4f} | {s:.1f} |")
    (ca, cs), (na, ns) = results["cached"], results["naive"]
    print(f"\nspeed-up cached vs naive: {ns / cs:.1f}x; accuracy difference: {100 * (ca - na):+.2f} points")


if __name__ == "__main__":
    main()
