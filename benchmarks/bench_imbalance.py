"""Imbalanced training data: ``--class-weights auto`` and ``--sampler balanced`` against plain shuffling.

Fashion-MNIST written as a CSV dataset whose training split is long-tailed (classes 0-4: ``--head``
images each, classes 5-9: ``--tail`` each, from the official training images) and whose test split is
balanced (``--test`` per class, official test images). Each setting fine-tunes ``full`` at 96 px for 6
epochs (Fashion-MNIST 100/class's recipe) over seeds; the table gives validation accuracy (an
imbalanced split, like the training one), test accuracy and macro-F1 (balanced), and the mean recall
of the tail classes on test.

    python benchmarks/bench_imbalance.py --seeds 0,1,2 --parallel 2 --out benchmarks/imbalance
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
from pathlib import Path

import numpy as np

SETTINGS = {"shuffle": {}, "class-weights auto": {"class_weights": "auto"}, "sampler balanced": {"sampler": "balanced"}}
TAIL = range(5, 10)


def write_dataset(root: Path, head: int, tail: int, test: int, seed: int = 0) -> Path:
    """``root/data.csv`` (path,label,split) with PNGs under ``root/images``; returns the CSV's path."""
    from PIL import Image

    from transferkit.data.sources import FASHION_MNIST_CLASSES, _fashion_mnist_arrays

    rng, rows = np.random.default_rng(seed), ["path,label,split"]
    (root / "images").mkdir(parents=True, exist_ok=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = _fashion_mnist_arrays(prefix)
        for c, name in enumerate(FASHION_MNIST_CLASSES):
            n = test if split == "test" else head if c not in TAIL else tail
            for i in rng.choice(np.flatnonzero(labels == c), n, replace=False):
                rel = f"images/{split}-{i}.png"
                Image.fromarray(images[i]).save(root / rel)
                rows.append(f"{rel},{name},{split}")
    (root / "data.csv").write_text("\n".join(rows) + "\n")
    return root / "data.csv"


def run_one(job: tuple[str, str, int, str]) -> dict:
    import torch

    torch.set_num_threads(1)
    from transferkit import FinetuneConfig, finetune

    csv, name, seed, out = job
    cfg = FinetuneConfig(data=csv, strategy="full", image_size=96, seed=seed, out=f"{out}/runs/{name.replace(' ', '-')}-s{seed}",
                         **SETTINGS[name])
    m = finetune(cfg, overwrite=True, progress=False)
    from transferkit.data.sources import FASHION_MNIST_CLASSES

    tail_names = {FASHION_MNIST_CLASSES[c] for c in TAIL}  # the CSV's classes are sorted by name: match names
    tail = [r["recall"] for r in m["test_per_class"] if r["class"] in tail_names]
    return {"setting": name, "seed": seed, "val_accuracy": m["val_accuracy"], "test_accuracy": m["test_accuracy"],
            "test_macro_f1": m["test_macro_f1"], "tail_recall": float(np.mean(tail)), "train_seconds": m["train_seconds"]}


def table(rows: list[dict]) -> str:
    lines = ["| setting | seeds | val accuracy % | test accuracy % | test macro-F1 % | tail-class recall % |",
             "|---|---|---|---|---|---|"]
    for name in SETTINGS:
        rs = [r for r in rows if r["setting"] == name]
        if not rs:
            continue
        cell = lambda k: f"{100 * statistics.mean(r[k] for r in rs):.1f} ± {100 * (statistics.stdev(r[k] for r in rs) if len(rs) > 1 else 0):.1f}"  # noqa: E731
        lines.append(f"| {name} | {len(rs)} | {cell('val_accuracy')} | {cell('test_accuracy')} | "
                     f"{cell('test_macro_f1')} | {cell('tail_recall')} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--head", type=int, default=200)
    p.add_argument("--tail", type=int, default=20)
    p.add_argument("--test", type=int, default=300)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--out", default="imbalance")
    a = p.parse_args()
    out = Path(a.out)
    csv = write_dataset(out / "data", a.head, a.tail, a.test)
    jobs = [(str(csv), name, int(s), str(out)) for s in a.seeds.split(",") for name in SETTINGS]
    rows = []
    with mp.get_context("spawn").Pool(a.parallel) as pool:
        for r in pool.imap_unordered(run_one, jobs):
            rows.append(r)
            print(json.dumps(r), flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
