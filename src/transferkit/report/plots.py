"""Plots of a run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _column(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(int(float(r["epoch"])), float(r[key])) for r in rows if r.get(key) not in (None, "")]
    return [e + 1 for e, _ in pts], [v for _, v in pts]


def plot_learning_curve(rows: list[dict], path: Path) -> Path:
    """Loss (left) and accuracy (right) per epoch from the merged CSV log rows."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("train_loss", ax_loss), ("val_loss", ax_loss), ("train_acc", ax_acc), ("val_acc", ax_acc)):
        x, y = _column(rows, key)
        if x:
            ax.plot(x, y, marker="o", label=key.replace("_", " "))
    for ax, title in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion(confusion: list[list[int]], classes: list[str], path: Path, title: str = "test") -> Path:
    """Row-normalised confusion matrix with counts in the cells."""
    cm = np.asarray(confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.5 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, classes, rotation=45, ha="right")
    ax.set_yticks(ticks, classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix ({title})")
    if len(classes) <= 30:
        for i in range(len(classes)):
            for j in range(len(classes)):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_wise_curve(curve: list[dict], path: Path) -> Path:
    """WiSE-FT: target test accuracy (and source agreement, when measured) against alpha."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    alphas = [r["alpha"] for r in curve]
    ax.plot(alphas, [r["test_accuracy"] for r in curve], marker="o", label="target test accuracy")
    if all("source_agreement" in r for r in curve):
        ax.plot(alphas, [r["source_agreement"] for r in curve], marker="s",
                label="source agreement (1 - forgetting)")
    ax.set_xlabel("alpha (0 = pretrained backbone, 1 = fine-tuned)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("WiSE-FT weight interpolation")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
