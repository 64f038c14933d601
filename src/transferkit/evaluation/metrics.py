"""Classification metrics (torchmetrics) over a data loader."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from transferkit.evaluation.features import map_batches


def predict_logits(net: nn.Module, loader: DataLoader, device: torch.device | str | None = None,
                   progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (N, C), labels (N,))`` of ``net`` in eval mode over ``loader``.

    ``device`` ``None``: where ``net`` is (:func:`~transferkit.evaluation.features.map_batches`).
    """
    got = map_batches(net, loader, lambda m, x: {"logits": m(x)}, device=device, progress=progress,
                      desc="predict")
    return got["logits"], got["labels"]


def evaluate(net: nn.Module, loader: DataLoader, num_classes: int, device: torch.device | str = "cpu") -> dict:
    """Accuracy, macro-F1, cross-entropy and the confusion matrix (rows = true class)."""
    logits, labels = predict_logits(net, loader, device)
    return {
        "accuracy": MulticlassAccuracy(num_classes, average="micro")(logits, labels).item(),
        "macro_f1": MulticlassF1Score(num_classes, average="macro")(logits, labels).item(),
        "loss": nn.functional.cross_entropy(logits, labels).item(),
        "confusion": MulticlassConfusionMatrix(num_classes)(logits, labels).tolist(),
        "n": len(labels),
    }
