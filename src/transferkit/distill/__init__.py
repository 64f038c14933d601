"""Knowledge distillation blocks: soft targets, hard labels, the DeiT distillation token and
FitNets feature hints (:mod:`transferkit.distill.losses`), and the frozen teacher that sees the
student's batch at its own input size and normalisation (:mod:`transferkit.distill.teacher`).

Each loss is registered on :data:`transferkit.registry.DISTILL` (``distill --loss``):
``build(ctx) -> Term | None`` (a loss term of :mod:`transferkit.terms` weighted ``alpha``; None: the
student alone); ``ctx``: ``cfg``, ``net`` (the student), ``teacher`` (a TeacherView), ``alpha``,
``temperature``, ``image_size``, ``options``; ``check(ctx)`` refuses a student it cannot train.
:mod:`transferkit.distill.terms` has the terms of the losses above."""

from transferkit.distill.losses import (FeatureHint, hard_distillation_loss, kd_divergence, soft_kd_loss,
                                        teacher_label_loss, token_distillation_loss)
from transferkit.distill.teacher import TeacherView
from transferkit.distill import terms  # noqa: F401  (the baseline and the classic losses first in every line-up)
from transferkit.registry import import_submodules

import_submodules(__name__, __path__)  # each module registers its losses: a new loss is one module

__all__ = ["FeatureHint", "TeacherView", "hard_distillation_loss", "kd_divergence", "soft_kd_loss",
           "teacher_label_loss", "token_distillation_loss"]
