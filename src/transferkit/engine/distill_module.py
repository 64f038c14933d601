"""The LightningModule of ``distill``: a student trained on the labels and on a frozen teacher.

A training batch is ``(x, y)`` — the teacher's logits computed on the same (augmented) batch — or
``(x, y, t)`` with the teacher's logits cached once (training without augmentation). ``y = -1`` marks
an unlabelled image (``--unlabelled``): it gets the distillation term only. With ``alpha`` weighting
the distillation term throughout (:mod:`transferkit.distill.losses`)::

    loss = (1 - alpha) * CE_labelled(student, y) + alpha * D

    D = T^2 KL(t/T || s/T)          soft
        CE(s, argmax t)             hard
        CE(s_dist, argmax t)        token  (CE_labelled on the class-token head s_cls)
        MSE(W f_s, f_t)             feature (FitNets hint, W learned)
        0                           none   (the student alone)

Validation scores the student alone (a distilled ViT averages its two heads in eval mode).
"""

from __future__ import annotations

import torch
from torch import nn

from transferkit.distill import FeatureHint, TeacherView, kd_divergence, teacher_label_loss
from transferkit.engine.module import OptimSettings, TransferModule
from transferkit.errors import TrainingError
from transferkit.strategies import Plan


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


def pooled(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    return model.forward_head(features, pre_logits=True)


class DistillModule(TransferModule):
    """:class:`TransferModule` whose loss is the distillation loss above; the teacher is a frozen
    :class:`TeacherView` (not checkpointed: rebuilt from its run on resume), the hint's projection an
    optimizer group at the head LR."""

    NOT_CHECKPOINTED = ("regularizer.", "teacher.")

    def __init__(self, net: nn.Module, num_classes: int, plan: Plan, optim: OptimSettings, *, loss: str,
                 alpha: float, temperature: float, teacher: TeacherView, hint: FeatureHint | None = None):
        super().__init__(net, num_classes, plan, optim)
        self.loss, self.alpha, self.temperature = loss, alpha, temperature
        self.teacher, self.hint = teacher, hint
        if loss == "token":
            net.set_distilled_training(True)  # training forward returns (class head, distillation head)

    def extra_groups(self) -> list:
        return [("hint", list(self.hint.named_parameters()), 1.0)] if self.hint is not None else []

    def training_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]
        cached = batch[2] if len(batch) == 3 else None
        teacher = None if self.loss == "none" else cached if cached is not None else self.teacher(x)
        logits, term = self._student(x, teacher)
        labelled = y >= 0
        ce = self.loss_fn(logits[labelled], y[labelled]) if labelled.any() else logits.sum() * 0
        loss = ce if self.loss == "none" else (1 - self.alpha) * ce + self.alpha * term
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step}; "
                                "training stopped — lower --lr or --temperature")
        if labelled.any():
            self.train_acc(logits[labelled].detach(), y[labelled])
            self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        self.log("train_loss", ce, on_step=False, on_epoch=True, prog_bar=True)
        if term is not None:
            self.log("distill_loss", term, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def _student(self, x: torch.Tensor, teacher: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The student's logits (those the labels train: the class head for ``token``) and the distillation term."""
        if self.loss == "feature":
            f_s, f_t = self.net.forward_features(x), self.teacher.features(x)
            logits = self.net.forward_head(f_s)
            if self.hint.project.weight.ndim == 2:  # pooled features: a linear projection
                f_s, f_t = pooled(self.net, f_s), pooled(self.teacher.teacher, f_t)
            return logits, self.hint(f_s, f_t)
        out = self.net(x)
        if self.loss == "token":
            cls_logits, dist_logits = out
            return cls_logits, teacher_label_loss(dist_logits, teacher)
        if self.loss == "soft":
            return out, kd_divergence(out, teacher, self.temperature)
        if self.loss == "hard":
            return out, teacher_label_loss(out, teacher)
        return out, None
