"""Knowledge distillation blocks: soft targets, hard labels, the DeiT distillation token and
FitNets feature hints (:mod:`transferkit.distill.losses`), and the frozen teacher that sees the
student's batch at its own input size and normalisation (:mod:`transferkit.distill.teacher`)."""

from transferkit.distill.losses import (FeatureHint, hard_distillation_loss, kd_divergence, soft_kd_loss,
                                        teacher_label_loss, token_distillation_loss)
from transferkit.distill.teacher import TeacherView

__all__ = ["FeatureHint", "TeacherView", "hard_distillation_loss", "kd_divergence", "soft_kd_loss",
           "teacher_label_loss", "token_distillation_loss"]
