"""Evaluation: metrics, frozen features and their cache, the converged linear probe."""

from transferkit.evaluation.features import FeatureCache, extract_features
from transferkit.evaluation.linear_probe import ProbeFit, fit_linear_probe, load_into
from transferkit.evaluation.metrics import evaluate, predict_logits

__all__ = ["FeatureCache", "ProbeFit", "evaluate", "extract_features", "fit_linear_probe", "load_into",
           "predict_logits"]
