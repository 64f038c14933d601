"""Evaluation: metrics, cached features."""

from transferkit.evaluation.features import extract_features
from transferkit.evaluation.metrics import evaluate, predict_logits

__all__ = ["evaluate", "extract_features", "predict_logits"]
