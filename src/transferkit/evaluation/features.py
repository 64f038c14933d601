"""Cached features: run a frozen backbone once over a dataset.

When nothing before the head trains and no random augmentation is used, the
head's inputs never change, so they are computed once (under
``torch.inference_mode``) and the head trains on the cached tensors — the fast
path for linear probing, LogME and kNN.
"""

from __future__ import annotations

import torch
from rich.progress import Progress
from torch import nn
from torch.utils.data import DataLoader


def pre_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The head's input for a timm model: pooled features, shape ``(B, D)``."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


@torch.inference_mode()
def extract_features(model: nn.Module, loader: DataLoader, desc: str = "features",
                     progress: bool = True, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``(features (N, D) float32, labels (N,) int64)`` of ``model``'s pre-logits over ``loader``."""
    was_training = model.training
    model.eval().to(device)
    feats, labels = [], []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(desc, total=len(loader))
        for x, y in loader:
            feats.append(pre_logits(model, x.to(device)).float().cpu())
            labels.append(torch.as_tensor(y))
            bar.advance(task)
    model.train(was_training)
    if not feats:  # an empty split (e.g. --val-split 0)
        return torch.empty(0, model.num_features), torch.empty(0, dtype=torch.long)
    return torch.cat(feats), torch.cat(labels).long()
