"""Learning without Forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2017): keep the source task's outputs.

Fine-tuning on a new task moves the shared backbone, and the pretrained model's
own task (e.g. the 1000 ImageNet classes) degrades — catastrophic forgetting (Q4).
LwF keeps the *source head* (the classifier the backbone was pretrained with)
next to the new one and, while training on target images only, distils the
pretrained model's source-head outputs on those same images into the
fine-tuned backbone + source head:

    loss = task_loss + λ · T² · KL( softmax(z_teacher / T) ‖ softmax(z_student / T) )

* ``z_teacher``: source logits of the frozen pretrained model on the batch;
* ``z_student``: the frozen source head applied to the fine-tuned model's
  pre-logit features of the same batch.

No source data is needed. Li & Hoiem use T = 2 and λ = 1. Unlike the original,
the source head is kept frozen here, so the penalty constrains the shared
backbone alone and ``--source-eval`` measures the drift against a fixed head.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from transferkit.registry import REGULARIZERS, Method
from transferkit.terms import Step, Term


def soft_target_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                   temperature: float = 2.0) -> torch.Tensor:
    r"""Hinton-style distillation loss :math:`T^2\,\mathrm{KL}(p_T \Vert q_T)`, batch mean.

    ``student_logits`` and ``teacher_logits``: ``(B, C)``. ``p_T`` and ``q_T`` are the
    teacher's and student's softmax at temperature ``T``; the ``T²`` factor keeps the
    gradient scale independent of ``T``. Zero exactly when the logits agree up to a
    per-row constant.
    """
    t = temperature
    log_q = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean") * t * t


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` in eval mode with no trainable parameters."""
    out = copy.deepcopy(module).eval()
    for p in out.parameters():
        p.requires_grad_(False)
    return out


class LwF(nn.Module):
    """The LwF penalty for a timm model that fine-tunes ``source_model``'s backbone.

    ``source_model``: the pretrained model *with its original head* (e.g.
    ``load_backbone(name, "packaged")``, 1000 classes). A frozen copy is kept as
    the teacher; its classifier, frozen, is the source head. Call as
    ``lwf(model, x=images, features=pre_logits)`` where ``features`` are the
    fine-tuned ``model``'s pre-logit features of ``images`` (shape ``(B, D)``),
    as the new head sees them; returns ``weight · soft_target_kl(...)``. The
    teacher always runs in eval mode (its BatchNorm statistics do not move).
    """

    uses_features = True

    def __init__(self, source_model: nn.Module, weight: float = 1.0, temperature: float = 2.0):
        super().__init__()
        self.weight, self.temperature = weight, temperature
        self.teacher = frozen_copy(source_model)
        head = self.teacher.get_classifier()
        if not isinstance(head, nn.Module) or not any(True for _ in head.parameters()):
            raise ValueError("LwF needs the source model's own classifier head (load it with num_classes=None)")
        self.source_head = head  # shared with the teacher, frozen

    def train(self, mode: bool = True) -> "LwF":
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, model: nn.Module, *, x: torch.Tensor, features: torch.Tensor, y=None) -> torch.Tensor:
        if self.teacher.training:  # whatever a training loop did to module modes
            self.teacher.eval()
        with torch.no_grad():
            teacher = self.teacher(x)
        return self.weight * soft_target_kl(self.source_head(features), teacher, self.temperature)

    def extra_repr(self) -> str:
        return f"weight={self.weight}, temperature={self.temperature}"


class LwFTerm(Term):
    """LwF as a loss term (``--reg lwf``): the penalty on the features the new head saw."""

    rebuilt = ("block",)

    def __init__(self, source_model: nn.Module, weight: float = 1.0, temperature: float = 2.0):
        super().__init__("reg", weight)
        self.block = LwF(source_model, 1.0, temperature)

    def loss(self, step: Step) -> torch.Tensor:
        return self.block(step.net, x=step.x, features=step.features)


METHOD = REGULARIZERS.register(Method(
    name="lwf", summary="Learning without Forgetting: keep the source head's outputs on the target images "
    "(--lwf-weight, --lwf-temperature)", build=lambda ctx: LwFTerm(ctx.source_model(), ctx.cfg.lwf_weight,
                                                                 ctx.cfg.lwf_temperature),
    defaults={"lwf_weight": 1.0, "lwf_temperature": 2.0}, traits={"needs_backbone": True}))
