"""Plots of a run, as PNG files.

No global state is touched: each plot is a bare :class:`matplotlib.figure.Figure`
drawn by its own Agg canvas, so neither pyplot nor ``matplotlib.use`` is
involved and a caller's backend (an interactive session, a notebook) is left
as it was. matplotlib and numpy are imported inside the functions, so
``import transferkit.report`` costs nothing until something is plotted. Every
PNG is written atomically (:func:`transferkit.rundir.atomic_write`).
"""

from __future__ import annotations

from pathlib import Path

from transferkit.rundir import atomic_write


def new_figure(**kwargs):
    """A bare ``Figure`` with its own Agg canvas (no pyplot, no backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: Path, dpi: int = 100, rect: tuple = (0, 0, 1, 1)) -> Path:
    """Lay out ``fig`` (its axes inside ``rect``, figure fractions) and write it to ``path`` as PNG, atomically."""
    fig.tight_layout(rect=rect)
    return atomic_write(Path(path), lambda p: fig.savefig(p, format="png", dpi=dpi))


def _column(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(int(float(r["epoch"])), float(r[key])) for r in rows if r.get(key) not in (None, "")]
    return [e + 1 for e, _ in pts], [v for _, v in pts]


def plot_learning_curve(rows: list[dict], path: Path) -> Path:
    """Loss (left) and accuracy (right) per epoch from the merged CSV log rows."""
    fig = new_figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    plot_epoch_columns(rows, (("train_loss", ax_loss), ("val_loss", ax_loss), ("train_acc", ax_acc),
                              ("val_acc", ax_acc)))
    finish_epoch_axes(((ax_loss, "loss"), (ax_acc, "accuracy")))
    return save_png(fig, path)


def plot_epoch_columns(rows: list[dict], columns) -> None:
    """Each ``(log column, axes)``: the column per epoch, as a labelled line (absent columns skipped)."""
    for key, ax in columns:
        x, y = _column(rows, key)
        if x:
            ax.plot(x, y, marker="o", label=key.replace("_", " "))


def finish_epoch_axes(axes) -> None:
    """Each ``(axes, title)``: epoch on x, the title, a light grid, a legend when something is labelled."""
    for ax, title in axes:
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()


def plot_confusion(confusion: list[list[int]], classes: list[str], path: Path, title: str = "test") -> Path:
    """Row-normalised confusion matrix with counts in the cells."""
    import numpy as np

    cm = np.asarray(confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.5 * len(classes) + 2)
    fig = new_figure(figsize=(size, size))
    ax = fig.subplots()
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
    return save_png(fig, path)


def plot_wise_curve(curve: list[dict], path: Path) -> Path:
    """WiSE-FT: target test accuracy (and source agreement, when measured) against alpha."""
    fig = new_figure(figsize=(5.5, 4))
    ax = fig.subplots()
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
    return save_png(fig, path)


def plot_reliability(calibration: dict, path: Path) -> Path:
    """Reliability diagram before (T = 1) and after temperature scaling: per confidence bin, accuracy
    (bars) against the diagonal ``accuracy = confidence``; the title gives each side's ECE."""
    rel, t = calibration["reliability"], calibration["temperature"]
    split = rel["split"]
    fig = new_figure(figsize=(9, 4))
    for ax, key, title in zip(fig.subplots(1, 2), ("before", "after"), ("T = 1", f"T = {t:.3g}")):
        bins = rel[key]
        edges, width = bins["edges"][:-1], bins["edges"][1] - bins["edges"][0]
        acc = [a if n else 0.0 for a, n in zip(bins["accuracy"], bins["count"])]
        ax.bar(edges, acc, width=width, align="edge", edgecolor="black", alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
               title=f"{split}, {title}, ECE {calibration[f'{split}_ece_{key}']:.3f}")
        ax.legend(loc="upper left")
    return save_png(fig, path)
