"""The teacher of a distillation: a frozen network that sees the student's batch as it was trained to.

The student and the teacher usually differ in input size and normalisation (a 96 px ImageNet-normalised
EfficientNet teacher, a 32 px student). :class:`TeacherView` maps the student's normalised batch back
to pixels and forward into the teacher's input::

    x_pixels  = x_student * std_s + mean_s                    (per channel)
    x_teacher = (resize(x_pixels, S_t) - mean_t) / std_t      (bilinear, antialiased when shrinking)

so the teacher sees the same (augmented) crop as the student, at its own resolution. It is frozen
(``requires_grad=False``), stays in eval mode whatever ``train()`` is called with (its BatchNorm
statistics never move), and runs under ``torch.no_grad``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TeacherView(nn.Module):
    """``teacher(student batch)`` -> the teacher's logits (B, C); see the module docstring.

    ``student_norm`` and ``teacher_norm`` are ``(mean, std)`` triples (timm data configs' ``mean``
    and ``std``); ``teacher_size`` the teacher's input side in pixels.
    """

    def __init__(self, teacher: nn.Module, student_norm: tuple, teacher_norm: tuple, teacher_size: int):
        super().__init__()
        self.teacher = teacher.eval().requires_grad_(False)
        self.teacher_size = int(teacher_size)
        for name, (mean, std) in (("student", student_norm), ("teacher", teacher_norm)):
            self.register_buffer(f"{name}_mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
            self.register_buffer(f"{name}_std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> TeacherView:
        super().train(mode)
        self.teacher.eval()
        return self

    def teacher_input(self, x: torch.Tensor) -> torch.Tensor:
        pixels = x * self.student_std + self.student_mean
        if pixels.shape[-1] != self.teacher_size or pixels.shape[-2] != self.teacher_size:
            pixels = F.interpolate(pixels, size=(self.teacher_size, self.teacher_size), mode="bilinear",
                                   align_corners=False, antialias=pixels.shape[-1] > self.teacher_size)
        return (pixels - self.teacher_mean) / self.teacher_std

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(self.teacher_input(x))

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's last feature map (``forward_features``), for feature hints."""
        return self.teacher.forward_features(self.teacher_input(x))
