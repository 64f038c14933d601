"""Co-tuning (You et al., NeurIPS 2020): keep the pretrained *source* head and train it alongside the new
target head, on soft source labels derived from each image's target label.

1. The category relationship ``R[c, s] = p(y_source = s | y_target = c)``, estimated directly as the
   mean source-head softmax over the target training images of class ``c``::

       R[c] = (1 / |{i : y_i = c}|) * sum_{i : y_i = c} softmax(h_source(f(x_i)))

   Each row is a probability distribution over the source classes (a class without images gets the
   mean over all images).
2. Training adds, to the target cross-entropy, ``lambda`` times the cross-entropy of the source head
   against the relationship row of each image's label::

       L = CE(h_target(f(x)), y) + lambda * mean_i [ - sum_s R[y_i, s] * log softmax(h_source(f(x_i)))_s ]

   Both heads sit on the shared backbone ``f``; the source head trains too, and only the target head
   is kept. (The paper's "reverse" estimate, a calibrated p(y_target | y_source) inverted by Bayes'
   rule, is not implemented: the direct one is the paper's default for supervised pretraining.)
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from transferkit.errors import ConfigError
from transferkit.registry import REGULARIZERS, Method
from transferkit.terms import Step, Term


def category_relationship(source_probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``R`` (num_classes, S): row ``c`` is the mean of ``source_probs`` (N, S) over the rows labelled ``c``."""
    if source_probs.ndim != 2 or len(source_probs) != len(labels):
        raise ValueError(f"source_probs must be (N, S) with N = len(labels), got {tuple(source_probs.shape)} "
                         f"and {len(labels)} labels")
    probs, labels = source_probs.double(), torch.as_tensor(labels).long()
    sums = torch.zeros(num_classes, probs.shape[1], dtype=torch.float64).index_add_(0, labels, probs)
    counts = torch.bincount(labels, minlength=num_classes).double()
    rows = sums / counts.clamp(min=1)[:, None]
    rows[counts == 0] = probs.mean(0)
    return (rows / rows.sum(1, keepdim=True)).float()


class CoTuning(nn.Module):
    """``lambda * CE(source_head(features), R[y])``: called ``reg(model, x=..., features=..., y=...)``
    with the pre-logits features the target head saw. ``source_head`` is copied and trains;
    ``relationship`` is a buffer (recomputed from the pretrained model on resume)."""

    uses_features = True

    def __init__(self, source_head: nn.Module, relationship: torch.Tensor, weight: float = 2.3):
        super().__init__()
        self.source_head = copy.deepcopy(source_head).requires_grad_(True)
        self.register_buffer("relationship", relationship.float())
        self.weight = float(weight)

    def forward(self, model: nn.Module, *, x: torch.Tensor | None = None, features: torch.Tensor,
                y: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(self.source_head(features), dim=1)
        return self.weight * -(self.relationship[y] * log_p).sum(1).mean()


class CoTuningTerm(Term):
    """Co-tuning as a loss term: the source head on the features the target head saw (``--strategy co-tuning``).
    The source head trains and is checkpointed; the relationship is recomputed on resume."""

    rebuilt = ("block",)

    def __init__(self, source_head: nn.Module, relationship: torch.Tensor, weight: float = 2.3):
        super().__init__("reg", weight)
        self.block = CoTuning(source_head, relationship, 1.0)

    def loss(self, step: Step) -> torch.Tensor:
        labelled = step.labelled
        return self.block(step.net, features=step.features[labelled], y=step.y[labelled])


def _build(ctx) -> CoTuningTerm:
    """The source head of the pretrained model and the category relationship its softmax gives on the
    training images (``ctx.source_outputs()``: (probabilities, labels))."""
    probs, labels = ctx.source_outputs()
    return CoTuningTerm(ctx.source_model().get_classifier(), category_relationship(probs, labels, ctx.num_classes),
                        ctx.cfg.co_tuning_weight)


def _check(ctx) -> None:
    from transferkit.backbones.load import has_source_head

    if not has_source_head(ctx.cfg.weights):
        raise ConfigError(f"co-tuning keeps the pretrained source head; --weights {ctx.cfg.weights} has none (use "
                          "packaged, imagenet or a file with its classifier)")


METHOD = REGULARIZERS.register(Method(
    name="co-tuning", summary="the pretrained source head trained on each class's source-class relationship "
    "(Co-Tuning; --co-tuning-weight)", build=_build, check=_check, defaults={"co_tuning_weight": 2.3},
    traits={"needs_backbone": True}))
