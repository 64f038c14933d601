"""Regularisers for fine-tuning, each an ``nn.Module`` loss added to the task loss (Q4, Q19)."""

from transferkit.regularizers.l2sp import L2SP

REGULARIZERS = ("none", "l2sp")

__all__ = ["L2SP", "REGULARIZERS"]
