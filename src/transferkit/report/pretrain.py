"""The report of a ``pretrain`` run: loss and kNN-accuracy curves, and what to run next."""

from __future__ import annotations

from pathlib import Path

from transferkit.report.markdown import write_report
from transferkit.report.plots import finish_epoch_axes, new_figure, plot_epoch_columns, save_png

SHOWN = ("method", "model", "weights", "train_images", "image_size", "views", "grayscale", "epochs", "lr",
         "final_train_loss", "knn_accuracy_before", "knn_accuracy", "train_seconds", "backbone_params")


def plot_pretrain_curves(rows: list[dict], path: Path, before: float | None = None) -> Path:
    """Self-supervised loss (left) and kNN monitor accuracy (right) per epoch; ``before``: the kNN
    accuracy of the starting weights, drawn as a dashed line."""
    fig = new_figure(figsize=(10, 4))
    ax_loss, ax_knn = fig.subplots(1, 2)
    plot_epoch_columns(rows, (("train_loss", ax_loss), ("knn_acc", ax_knn)))
    if before is not None:
        ax_knn.axhline(before, ls="--", color="grey", label="starting weights")
    finish_epoch_axes(((ax_loss, "self-supervised loss"), (ax_knn, "kNN accuracy (validation)")))
    return save_png(fig, path)


def write_pretrain_report(path: Path, config: dict, metrics: dict, rows: list[dict], plot_path: Path) -> Path:
    """``report.md`` with the metrics, the curves (when the run logged any) and the fine-tuning hand-off."""
    plots = {"Loss and kNN accuracy": plot_pretrain_curves(rows, plot_path, metrics.get("knn_accuracy_before")).name
             } if rows else {}
    hand_off = ["", "## Next", "", "The backbone is in `model.safetensors`; fine-tune it with:", "",
                f"    {metrics['next']}"]
    return write_report(path, config, metrics, plots, shown=SHOWN, sections=hand_off,
                        title=f"transferkit pretrain: {metrics['method']} on {metrics['model']}")
