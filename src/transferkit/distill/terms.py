"""The distillation losses as loss terms (:mod:`transferkit.terms`), registered on
:data:`transferkit.registry.DISTILL` (``distill --loss``). With ``alpha`` weighting the term and
``1 - alpha`` the labels' cross-entropy (the engine's task weight)::

    D = T^2 KL(t/T || s/T)          soft     (Hinton et al. 2015)
        CE(s, argmax t)             hard     (DeiT)
        CE(s_dist, argmax t)        token    (DeiT's distillation head; the labels train the class head)
        MSE(W f_s, f_t)             feature  (FitNets hint, W learned)
        none                        the student alone (the baseline: no term, task weight 1)

The teacher (a frozen :class:`~transferkit.distill.teacher.TeacherView`) is a submodule of the term,
never checkpointed (rebuilt from its run on resume); its logits of a batch are the batch's cached ones
(``step.extra["teacher_logits"]``, training without augmentation) or computed on the step's images.
"""

from __future__ import annotations

import torch
from torch import nn

from transferkit.distill.losses import FeatureHint, kd_divergence, teacher_label_loss
from transferkit.distill.teacher import TeacherView
from transferkit.errors import ConfigError
from transferkit.registry import DISTILL, Method
from transferkit.terms import Step, Term


class TeacherTerm(Term):
    """A distillation term: ``weight * fn(step, teacher logits)``; ``self.teacher`` is rebuilt, not checkpointed."""

    rebuilt = ("teacher",)

    def __init__(self, teacher: TeacherView, weight: float, fn):
        super().__init__("distill", weight)
        self.teacher, self.fn = teacher, fn

    def teacher_logits(self, step: Step) -> torch.Tensor:
        cached = step.extra.get("teacher_logits")
        return cached if cached is not None else self.teacher(step.x)

    def loss(self, step: Step):
        return self.fn(step, self.teacher_logits(step))


class HintTerm(TeacherTerm):
    """FitNets: the student's last feature map (pooled features, for a ViT or a mismatch of kinds)
    projected onto the teacher's; the projection trains at the head LR."""

    def __init__(self, teacher: TeacherView, weight: float, hint: FeatureHint):
        super().__init__(teacher, weight, None)
        self.hint = hint

    def loss(self, step: Step) -> torch.Tensor:
        f_s, f_t = step.maps[: step.n], self.teacher.features(step.x)
        if self.hint.project.weight.ndim == 2:  # pooled features: a linear projection
            f_s = step.net.forward_head(f_s, pre_logits=True)
            f_t = self.teacher.teacher.forward_head(f_t, pre_logits=True)
        return self.hint(f_s, f_t)


def feature_hint(net: nn.Module, teacher: TeacherView, image_size: int) -> FeatureHint:
    """A hint from the student's last feature map to the teacher's (1x1 conv) when both are maps
    (B, C, H, W), else from pooled features to pooled features (linear)."""
    with torch.no_grad():
        x = torch.zeros(1, 3, image_size, image_size)
        was = net.training
        f_s = net.eval().forward_features(x)
        net.train(was)
        f_t = teacher.features(x)
    if f_s.ndim == 4 and f_t.ndim == 4:
        return FeatureHint(f_s.shape[1], f_t.shape[1], spatial=True)
    return FeatureHint(net.num_features, teacher.teacher.num_features, spatial=False)


def _token(ctx) -> TeacherTerm:
    ctx.net.set_distilled_training(True)  # training forward returns (class head, distillation head)
    return TeacherTerm(ctx.teacher, ctx.alpha, lambda step, t: teacher_label_loss(step.aux_logits, t))


def _check_token(ctx) -> None:
    if not hasattr(ctx.net, "set_distilled_training"):
        raise ConfigError(f"--loss token needs a student with a distillation token, e.g. --student "
                          f"deit_tiny_distilled_patch16_224 (with --student-args to shrink it); {ctx.cfg.model} has "
                          "none — use --loss soft or hard")


NONE = DISTILL.register(Method(name="none", summary="the student alone: cross-entropy on the labels (the baseline)",
                               build=lambda ctx: None))
SOFT = DISTILL.register(Method(
    name="soft", summary="soft targets: (1-a) CE + a T² KL(teacher/T ‖ student/T) (Hinton et al. 2015)",
    build=lambda ctx: TeacherTerm(ctx.teacher, ctx.alpha, lambda step, t: kd_divergence(step.logits, t, ctx.temperature))))
HARD = DISTILL.register(Method(
    name="hard", summary="hard labels: (1-a) CE + a CE(student, teacher argmax) (DeiT)",
    build=lambda ctx: TeacherTerm(ctx.teacher, ctx.alpha, lambda step, t: teacher_label_loss(step.logits, t))))
TOKEN = DISTILL.register(Method(
    name="token", summary="distillation token: the class head learns the labels, the distillation head the "
    "teacher's argmax; heads averaged at inference (DeiT; a distilled ViT student)", build=_token, check=_check_token))
FEATURE = DISTILL.register(Method(
    name="feature", summary="FitNets hint: (1-a) CE + a MSE(projected student features, teacher features)",
    build=lambda ctx: HintTerm(ctx.teacher, ctx.alpha, feature_hint(ctx.net, ctx.teacher, ctx.image_size))))
