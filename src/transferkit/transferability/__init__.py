"""Transferability before training: scores and probe accuracies on cached features.

Which backbone will transfer best to a target task, without fine-tuning each
one: compute its features once (:func:`transferkit.evaluation.extract_features`)
and score them. Scores (:mod:`.scores`) are closed-form or a few fixed-point
steps; probes (:mod:`.probes`) train a tiny classifier on the cached features.
Every function takes NumPy arrays or torch tensors and returns a ``float``;
higher means more transferable.
"""

from transferkit.transferability.probes import cross_val_probe, knn_accuracy, linear_probe_accuracy
from transferkit.transferability.scores import h_score, leep, logme, nce

__all__ = ["cross_val_probe", "h_score", "knn_accuracy", "leep", "linear_probe_accuracy", "logme", "nce"]
