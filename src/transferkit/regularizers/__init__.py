"""Regularisers for fine-tuning, each an ``nn.Module`` loss added to the task loss (Q4, Q19).

* :class:`L2SP` — weight space: stay near the pretrained weights; called ``reg(model)``.
* :class:`LwF` — output space: keep the source head's predictions; it has
  ``uses_features = True`` and is called ``reg(model, x=images, features=pre_logits, y=labels)``.
* :class:`CoTuning` — the source head kept and trained on each label's learned source-category
  relationship (``--strategy co-tuning``); called like LwF.
"""

from transferkit.regularizers.co_tuning import CoTuning, category_relationship
from transferkit.regularizers.l2sp import L2SP
from transferkit.regularizers.lwf import LwF, soft_target_kl

REGULARIZERS = ("none", "l2sp", "lwf")

__all__ = ["CoTuning", "L2SP", "LwF", "REGULARIZERS", "category_relationship", "soft_target_kl"]
