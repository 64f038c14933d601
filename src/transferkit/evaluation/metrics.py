"""Classification metrics over a data loader.

Held-out predictions are scored once, after training, with scikit-learn's metrics rather than
torchmetrics (which the Lightning module uses for its per-step metrics): ``import torchmetrics``
loads its text, image and audio metrics too (transformers, scipy.signal), 1.7-2.6 s on the
project's 2-core CPU, and the paths that never start Lightning -- the linear probe, ``rank``,
``predict``, ``tta`` -- would pay it for three numbers. scikit-learn is loaded by every one of
those paths already (splits, baselines). The figures are the same definitions: micro accuracy,
macro-F1 over the classes present in the labels or the predictions, confusion rows = true class
(``tests/test_metrics.py`` checks them against torchmetrics).
"""

from __future__ import annotations

import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from torch import nn
from torch.utils.data import DataLoader

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
    return scores(logits, labels, num_classes)


def scores(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """:func:`evaluate`'s figures from ``logits (N, C)`` and ``labels (N,)``."""
    y, pred = labels.cpu().numpy(), logits.argmax(1).cpu().numpy()
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
        "loss": nn.functional.cross_entropy(logits.float(), labels).item(),
        "confusion": confusion_matrix(y, pred, labels=list(range(num_classes))).tolist(),
        "n": len(labels),
    }
