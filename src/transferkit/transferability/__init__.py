"""Transferability before training: scores and probe accuracies on cached features.

Which backbone will transfer best to a target task, without fine-tuning each
one: compute its features once (:func:`transferkit.evaluation.extract_features`)
and score them. Scores (:mod:`.scores`) are closed-form or a few fixed-point
steps; probes (:mod:`.probes`) train a tiny classifier on the cached features.
Every function takes NumPy arrays or torch tensors and returns a ``float``;
higher means more transferable. :func:`rank_candidates` (:mod:`.rank`) runs it
all end to end: extract (and cache) features of candidate backbones on a data
source, score them, and recommend a backbone and freeze-or-fine-tune.
"""

from importlib import import_module

from transferkit.transferability.probes import cross_val_probe, knn_accuracy, linear_probe_accuracy
from transferkit.transferability.scores import h_score, leep, logme, nce

#: Imported on first use: ``rank`` needs timm and the data pipeline, the scores do not.
_LAZY = {"RankResult": "transferkit.transferability.rank", "freeze_or_finetune": "transferkit.transferability.rank",
         "rank_candidates": "transferkit.transferability.rank"}

__all__ = ["RankResult", "cross_val_probe", "freeze_or_finetune", "h_score", "knn_accuracy", "leep",
           "linear_probe_accuracy", "logme", "nce", "rank_candidates"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'transferkit.transferability' has no attribute {name!r}")
