"""Regularisers for fine-tuning, each an ``nn.Module`` loss added to the task loss (Q4, Q19), registered
on :data:`transferkit.registry.REGULARIZERS` (``--reg``) with a loss term (:mod:`transferkit.terms`):
``build(ctx) -> Term``; ``ctx``: ``cfg``, ``model`` (pretrained weights, before training), ``options``,
``num_classes``, ``features_dim``, ``source_model()`` (the pretrained model with its source head),
``source_outputs()`` (its softmax and the labels on the training images).

* :class:`L2SP` — weight space: stay near the pretrained weights; called ``reg(model)``.
* :class:`LwF` — output space: keep the source head's predictions; it has
  ``uses_features = True`` and is called ``reg(model, x=images, features=pre_logits, y=labels)``.
* :class:`CoTuning` — the source head kept and trained on each label's learned source-category
  relationship (``--strategy co-tuning``); called like LwF.
"""

from transferkit.regularizers.co_tuning import CoTuning, category_relationship
from transferkit.regularizers.l2sp import L2SP
from transferkit.regularizers.lwf import LwF, soft_target_kl

from transferkit.registry import REGULARIZERS, import_submodules

import_submodules(__name__, __path__)  # each module registers its regulariser: a new one is one module

__all__ = ["CoTuning", "L2SP", "LwF", "REGULARIZERS", "category_relationship", "soft_target_kl"]
