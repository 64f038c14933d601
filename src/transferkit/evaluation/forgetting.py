"""Catastrophic forgetting, measured (Q4): how far the source behaviour drifted.

A pretrained model comes with a *source head* (ImageNet's 1000 classes). After
fine-tuning, put that head back on top of the fine-tuned backbone
(:class:`SourceView`) and compare its predictions with the pretrained model's on
held-out images:

* ``source_agreement``: fraction of images whose source top-1 class is unchanged
  (1.0 = no drift; needs no labels, so any images will do);
* ``source_kl``: mean KL(pretrained ‖ fine-tuned) of the source softmax;
* ``source_accuracy`` / ``source_accuracy_pretrained``: top-1 accuracy on a
  *labelled* source set (labels are source-class indices), before and after.

``forgetting = 1 − source_agreement`` is what ``transferkit compare`` tabulates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from transferkit.evaluation.features import pre_logits
from transferkit.evaluation.metrics import predict_logits


class SourceView(nn.Module):
    """A fine-tuned timm ``model`` seen through the pretrained ``source_head``: ``x -> source logits``."""

    def __init__(self, model: nn.Module, source_head: nn.Module):
        super().__init__()
        self.model, self.source_head = model, source_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.source_head(pre_logits(self.model, x))


def source_drift(pretrained: nn.Module, finetuned: nn.Module, loader: DataLoader,
                 label_map: list[int] | None = None) -> dict:
    """Agreement (and accuracy when labelled) of ``finetuned`` with ``pretrained``.

    Both map images to source logits (``finetuned`` is usually a
    :class:`SourceView`). ``loader`` yields ``(images, labels)``; labels are
    used only with ``label_map``, which gives the source-class index of each
    label (e.g. folder ``207`` -> ImageNet class 207).
    """
    before, labels = predict_logits(pretrained, loader)
    after, _ = predict_logits(finetuned, loader)
    if before.shape != after.shape:
        raise ValueError(f"source logits differ in shape: {tuple(before.shape)} vs {tuple(after.shape)}")
    out = {
        "source_agreement": (before.argmax(1) == after.argmax(1)).float().mean().item(),
        "source_kl": F.kl_div(F.log_softmax(after, 1), F.log_softmax(before, 1), log_target=True,
                              reduction="batchmean").item(),
        "source_images": len(labels),
    }
    if label_map is not None:
        labels = torch.as_tensor(label_map)[labels]
        out["source_accuracy"] = (after.argmax(1) == labels).float().mean().item()
        out["source_accuracy_pretrained"] = (before.argmax(1) == labels).float().mean().item()
    return out
