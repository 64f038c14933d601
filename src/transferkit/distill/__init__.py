"""Knowledge distillation blocks: soft targets, hard labels, the DeiT distillation token and
FitNets feature hints (:mod:`transferkit.distill.losses`)."""

from transferkit.distill.losses import FeatureHint, hard_distillation_loss, soft_kd_loss, token_distillation_loss

__all__ = ["FeatureHint", "hard_distillation_loss", "soft_kd_loss", "token_distillation_loss"]
