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


def per_class_scores(confusion, classes: list[str]) -> list[dict]:
    """Precision, recall, F1 and support of each class from a confusion matrix (rows = true class)::

        precision_c = C[c, c] / sum_i C[i, c]     recall_c = C[c, c] / sum_j C[c, j]
        F1_c = 2 precision_c recall_c / (precision_c + recall_c)      support_c = sum_j C[c, j]

    (0 where a denominator is 0, as scikit-learn's ``zero_division=0``); ``predicted``: sum_i C[i, c]."""
    import numpy as np

    c = np.asarray(confusion, dtype=np.float64)
    hits, predicted, support = np.diag(c), c.sum(0), c.sum(1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
    return [{"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(n),
             "predicted": int(k)} for name, p, r, f, n, k in zip(classes, precision, recall, f1, support, predicted)]


def worst_first(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """:func:`per_class_scores` rows worst F1 first, without the classes the images do not hold and the model
    never predicted (their 0 scores say nothing), and the names of those left out."""
    absent = [r["class"] for r in rows if r["support"] == 0 and not r.get("predicted")]
    shown = [r for r in rows if r["class"] not in set(absent)]
    return sorted(shown, key=lambda r: (r["f1"], r["class"])), absent


def per_class_table(rows: list[dict], split: str = "test") -> list[str]:
    """Markdown lines of :func:`per_class_scores` on ``split``, worst F1 first (where to look first)."""
    lines = ["", f"## Per class ({split})", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    shown, absent = worst_first(rows)
    for r in shown:
        lines.append(f"| {r['class']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |")
    return lines + ([] if not absent else ["", f"Not in these images and never predicted: {', '.join(absent)}."])


def labelled_scores(logits: torch.Tensor, labels: torch.Tensor, classes: list[str], temperature: float = 1.0) -> dict:
    """What a labelled set says of a model: ``{images, accuracy, macro_f1, ece, temperature, per_class}`` from
    ``logits (N, C)`` and ``labels (N,)``; ``ece``: the expected calibration error of the probabilities the
    model reports, ``softmax(logits / T)`` (evaluation/calibration.py), ``per_class``: :func:`per_class_scores`."""
    from transferkit.evaluation.calibration import calibrated_probs, expected_calibration_error

    got = scores(logits, labels, len(classes))
    return {"images": got["n"], "accuracy": got["accuracy"], "macro_f1": got["macro_f1"],
            "ece": expected_calibration_error(calibrated_probs(logits, temperature), labels),
            "temperature": float(temperature), "per_class": per_class_scores(got["confusion"], classes)}

