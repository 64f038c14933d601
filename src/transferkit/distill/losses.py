"""Knowledge-distillation losses (plain PyTorch; the teacher's logits are given, computed under
``torch.no_grad`` by the caller).

One convention throughout transferkit: **alpha weights the distillation term** (as DeiT does;
torchdistill's alpha weights the hard cross-entropy instead), ``1 - alpha`` the ground truth.

* soft targets (Hinton et al. 2015)::

      L = (1 - alpha) * CE(s, y) + alpha * T^2 * KL( softmax(t / T) || softmax(s / T) )

  T^2 keeps the soft term's gradient scale independent of the temperature T.
* hard-label distillation (Touvron et al. 2021, DeiT)::

      L = (1 - alpha) * CE(s, y) + alpha * CE(s, argmax t)

* distillation token (DeiT): the class-token head learns y, the distillation-token head learns the
  teacher's labels; at inference the two heads' logits are averaged::

      L = (1 - alpha) * CE(s_cls, y) + alpha * CE(s_dist, argmax t)

Shapes: logits (B, C), targets (B,) int64. Each function returns a scalar (the batch mean).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")


def kd_divergence(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """The soft-target term alone: T^2 * KL( softmax(t / T) || softmax(s / T) ), batch mean."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    t = temperature
    return t * t * F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
                            reduction="batchmean", log_target=True)


def teacher_label_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The hard-label term alone: CE(s, argmax t), batch mean."""
    return F.cross_entropy(student, teacher.argmax(1))


def soft_kd_loss(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, *, alpha: float = 0.5,
                 temperature: float = 4.0) -> torch.Tensor:
    """Hinton's soft-target loss (see the module docstring); ``temperature`` > 0."""
    _check_alpha(alpha)
    return (1 - alpha) * F.cross_entropy(student, targets) + alpha * kd_divergence(student, teacher, temperature)


def hard_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, *,
                           alpha: float = 0.5) -> torch.Tensor:
    """DeiT's hard-label distillation: cross-entropy against the teacher's argmax."""
    _check_alpha(alpha)
    return (1 - alpha) * F.cross_entropy(student, targets) + alpha * teacher_label_loss(student, teacher)


def token_distillation_loss(cls_logits: torch.Tensor, dist_logits: torch.Tensor, teacher: torch.Tensor,
                            targets: torch.Tensor, *, alpha: float = 0.5) -> torch.Tensor:
    """DeiT's distillation-token loss: the class head on ``targets``, the distillation head on the
    teacher's argmax."""
    _check_alpha(alpha)
    return (1 - alpha) * F.cross_entropy(cls_logits, targets) + alpha * teacher_label_loss(dist_logits, teacher)


class FeatureHint(nn.Module):
    """FitNets-style hint (Romero et al. 2015): a learned projection of the student's features onto
    the teacher's, trained by mean squared error::

        L_hint = mean( (W f_s - f_t)^2 )

    Feature maps (B, C_s, H, W) -> (B, C_t, H, W) by a 1x1 convolution, resized to the teacher's
    H x W when they differ (bilinear); vectors (B, D_s) -> (B, D_t) by a linear layer. The teacher's
    features are detached.
    """

    def __init__(self, student_channels: int, teacher_channels: int, spatial: bool = True):
        super().__init__()
        self.project = (nn.Conv2d(student_channels, teacher_channels, 1, bias=False) if spatial
                        else nn.Linear(student_channels, teacher_channels, bias=False))

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        projected = self.project(student)
        if projected.ndim == 4 and projected.shape[-2:] != teacher.shape[-2:]:
            projected = F.interpolate(projected, size=teacher.shape[-2:], mode="bilinear", align_corners=False)
        return F.mse_loss(projected, teacher.detach())
