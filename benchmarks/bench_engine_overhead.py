"""Engine overhead: a `full` fine-tuning epoch in transferkit's Lightning engine vs
a bare PyTorch loop doing the same work (same model, data, optimizer groups,
schedule, loss, metrics update).

Times the training epochs only (no validation, no checkpointing, no logger)
after a warm-up epoch, and prints a table and the ratio.
Usage: python benchmarks/bench_engine_overhead.py [--images 640] [--image-size 64] [--epochs 3]
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy

from transferkit.backbones import load_backbone
from transferkit.data import TransformedSubset, build_transform, data_config_for, load_source
from transferkit.engine.module import OptimSettings, TransferModule
from transferkit.optim import build_optimizer, param_groups, warmup_cosine_scheduler
from transferkit.strategies import make_plan


class EpochTimer(L.Callback):
    def __init__(self):
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, module):
        self._t = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.times.append(time.perf_counter() - self._t)


def setup(n_images: int, size: int):
    L.seed_everything(0, verbose=False)
    source = load_source("builtin:fashion-mnist")
    model = load_backbone("efficientnet_lite0", "packaged", num_classes=10, image_size=size)
    tf = build_transform(data_config_for(model, size), size, train=True)
    ds = TransformedSubset(source.train, range(n_images), tf)
    return model, make_plan("full", model), DataLoader(ds, batch_size=64, shuffle=True)


def engine_epochs(n_images: int, size: int, epochs: int) -> list[float]:
    model, plan, dl = setup(n_images, size)
    timer = EpochTimer()
    L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, callbacks=[timer]
              ).fit(TransferModule(model, 10, plan, OptimSettings()), dl)
    return timer.times


def bare_epochs(n_images: int, size: int, epochs: int) -> list[float]:
    model, plan, dl = setup(n_images, size)
    o = OptimSettings()
    opt = build_optimizer(param_groups(plan.groups, o.lr, o.weight_decay), o.optimizer, o.lr)
    sched = warmup_cosine_scheduler(opt, epochs * len(dl), len(dl))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=o.label_smoothing)
    acc = MulticlassAccuracy(10, average="micro")
    times = []
    model.train()
    for _ in range(epochs):
        t = time.perf_counter()
        for x, y in dl:
            logits = model(x)
            loss = loss_fn(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            acc.update(logits.detach(), y)
        acc.compute()
        acc.reset()
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=640)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args()
    bare = bare_epochs(a.images, a.image_size, a.epochs)[1:]
    engine = engine_epochs(a.images, a.image_size, a.epochs)[1:]
    b, e = sum(bare) / len(bare), sum(engine) / len(engine)
    print(f"\nfull fine-tuning epoch, EfficientNet-Lite0, {a.images} images at {a.image_size} px, batch 64, "
          f"{torch.get_num_threads()} threads (mean of {len(bare)} epochs after a warm-up epoch)")
    print("| loop | seconds / epoch | images / s |\n|---|---|---|")
    print(f"| bare PyTorch | {b:.2f} | {a.images / b:.1f} |")
    print(f"| transferkit engine (Lightning) | {e:.2f} | {a.images / e:.1f} |")
    print(f"\nengine overhead: {100 * (e / b - 1):+.1f}% (target <= +10%)")


if __name__ == "__main__":
    main()
