"""The kNN monitor of self-supervised training (as lightly's benchmarks and Wu et al. 2018 do):
classify held-out images by a similarity-weighted vote of their k nearest labelled training images
in the backbone's feature space, without training anything.

    s_j = cos(f(x), f(x_j)) over the bank;  score_c = sum over the k most similar j with y_j = c of exp(s_j / t)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from transferkit.evaluation.features import map_batches


def knn_bank(backbone: nn.Module, loader, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features (D, N), labels (N,))``: the L2-normalised features of the labelled bank images."""
    out = map_batches(backbone, loader, lambda m, x: {"f": F.normalize(m(x), dim=1)}, device=device,
                      progress=False, desc="kNN bank")
    return out["f"].T.contiguous(), out["labels"]


def knn_accuracy(backbone: nn.Module, bank_loader, query_loader, num_classes: int, k: int = 20, t: float = 0.1,
                 device=None) -> float:
    """Top-1 accuracy of the weighted kNN vote on ``query_loader`` with ``bank_loader`` as the labelled bank."""
    from lightly.utils.benchmarking.knn import knn_predict  # here: lightly's benchmarking package imports Lightning

    bank, labels = knn_bank(backbone, bank_loader, device)
    query = map_batches(backbone, query_loader, lambda m, x: {"f": F.normalize(m(x), dim=1)}, device=device,
                        progress=False, desc="kNN query")
    pred = knn_predict(query["f"], bank, labels, num_classes, knn_k=min(k, labels.numel()), knn_t=t)[:, 0]
    return float((pred == query["labels"]).float().mean())
