"""The one LightningModule that trains any network under a strategy :class:`Plan` on a sum of loss terms."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from transferkit.data.mixing import Mixing, mix_batch, mixed_cross_entropy
from transferkit.errors import TrainingError
from transferkit.optim import OptimSettings, build_optimizer, param_groups, warmup_cosine_scheduler
from transferkit.strategies import Plan
from transferkit.surgery.freezing import reapply_frozen
from transferkit.terms import Step, Term


class TransferModule(L.LightningModule):
    """Trains ``net`` (a whole timm model, or just its head on cached features) on one sum of loss terms::

        loss = task_weight * CE(logits of the labelled images, y) + sum_k term_k(step)

    * a batch is ``(x, y)``, ``(x, y, teacher_logits)`` (cached once) or ``{"labelled": (x, y),
      "unlabelled": x_t or (x_t, x_t_strong)}`` (``adapt``); :class:`~transferkit.terms.Step` computes
      what the terms read, once; ``y = -1`` marks an image without a label (it gets the terms only);
    * ``terms``: :class:`~transferkit.terms.Term` s — regularisers, domain alignment, distillation;
      each logs ``<name>_loss`` (summed over terms of one name; ``train_loss`` is the task loss alone,
      comparable with ``val_loss``) and whatever else it returns; their trainable parameters (a domain
      discriminator, a hint projection, co-tuning's source head) train at the head LR; the submodules
      a term lists in ``rebuilt`` (a frozen teacher, pretrained weights) are not checkpointed — the
      command rebuilds them on resume;
    * the optimizer is built once over every group of the plan, frozen or not; after every ``train()``
      the plan's frozen modules go back to eval mode (frozen BatchNorm, :mod:`transferkit.surgery.freezing`);
    * ``class_weights`` (``--class-weights auto``): per-class weights of the task CE (validation's loss stays
      unweighted); ``mixing`` (``--mixup``/``--cutmix``): a plain ``(x, y)`` batch is mixed before the step and
      its task loss is ``lam CE(y_a) + (1 - lam) CE(y_b)`` (:mod:`transferkit.data.mixing`, label smoothing
      inside each CE); the terms see the mixed images with ``y_a``; ``train_acc`` scores the larger share's
      labels. Neither touches adapt's target batch or cached teacher logits;
    * a non-finite loss stops training with :class:`TrainingError` (``stop_hint`` says what to change)
      — the last epoch checkpoint on disk is the last good state.
    """

    def __init__(self, net: nn.Module, num_classes: int, plan: Plan, optim: OptimSettings,
                 terms: list[Term] | tuple = (), *, task_weight: float = 1.0,
                 stop_hint: str = "lower --lr or check the data", class_weights: torch.Tensor | None = None,
                 mixing: Mixing | None = None):
        super().__init__()
        self.net, self.plan, self.optim = net, plan, optim
        self.terms = nn.ModuleList(terms)
        self.task_weight, self.stop_hint = float(task_weight), stop_hint
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=optim.label_smoothing)
        self.register_buffer("class_weights", class_weights, persistent=False)  # rebuilt from the data on resume
        self.mixing = mixing if mixing is not None and mixing.active else None
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_f1 = MulticlassF1Score(num_classes, average="macro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def train(self, mode: bool = True) -> "TransferModule":
        super().train(mode)
        if mode:
            reapply_frozen(self.plan.frozen_modules)
        return self

    def on_train_batch_start(self, batch, batch_idx) -> None:
        # Lightning restores training mode module by module (not through train()),
        # so the frozen modules are put back in eval mode before every step.
        reapply_frozen(self.plan.frozen_modules)

    def make_step(self, batch) -> Step:
        """The :class:`Step` of ``batch`` (see the class docstring for the batch forms)."""
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 1
        progress = self.global_step / max(1, total)
        if isinstance(batch, dict):
            (x, y), x_t = batch["labelled"], batch.get("unlabelled")
            strong = None
            if isinstance(x_t, (tuple, list)):
                x_t, strong = x_t
            return Step(self.net, x, y, x_t, progress, {"x_t_strong": strong} if strong is not None else None)
        extra = {"teacher_logits": batch[2]} if len(batch) == 3 else None
        return Step(self.net, batch[0], batch[1], None, progress, extra)

    def mix(self, batch):
        """``(batch, y_b, lam)``: under ``mixing`` a plain ``(x, y)`` batch with its images mixed (y stays
        ``y_a``), the partners' labels and the share ``lam``; any other batch as it is, ``None, 1.0``."""
        if self.mixing is None or isinstance(batch, dict) or len(batch) != 2:
            return batch, None, 1.0
        x, y_a, y_b, lam = mix_batch(batch[0], batch[1], self.mixing)
        return (x, y_a), y_b, lam

    def task_loss(self, logits: torch.Tensor, y: torch.Tensor, labelled: torch.Tensor, y_b, lam: float):
        """The task CE of the labelled images: weighted by ``class_weights``, mixed when ``y_b`` is given."""
        if not labelled.any():
            return logits.sum() * 0
        smoothing = self.optim.label_smoothing
        if y_b is not None:
            return mixed_cross_entropy(logits[labelled], y[labelled], y_b[labelled], lam, label_smoothing=smoothing,
                                       weight=self.class_weights)
        return nn.functional.cross_entropy(logits[labelled], y[labelled], weight=self.class_weights,
                                           label_smoothing=smoothing)

    def training_step(self, batch, batch_idx):
        batch, y_b, lam = self.mix(batch)
        step = self.make_step(batch)
        logits, y, labelled = step.logits, step.y, step.labelled
        task = self.task_loss(logits, y, labelled, y_b, lam)
        loss, logs = self.task_weight * task, {}
        for term in self.terms:
            value, term_logs = term(step)
            loss = loss + value
            for k, v in term_logs.items():
                logs[k] = logs[k] + v if k in logs else v
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step}; "
                                f"training stopped — {self.stop_hint}")
        for k, v in logs.items():
            self.log(k, v, on_step=False, on_epoch=True, prog_bar=k in ("align_loss", "distill_loss"))
        if labelled.any():
            y_acc = y if y_b is None or lam >= 0.5 else y_b
            self.train_acc(logits[labelled].detach(), y_acc[labelled])
            self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        self.log("train_loss", task, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]
        logits = self(x)
        self.val_acc(logits, y)
        self.val_f1(logits, y)
        self.log("val_loss", self.loss_fn(logits, y), on_epoch=True, prog_bar=True)
        self.log("val_acc", self.val_acc, on_epoch=True, prog_bar=True)
        self.log("val_f1", self.val_f1, on_epoch=True)

    def _rebuilt_keys(self, keys) -> set[str]:
        """The ``keys`` not checkpointed: under a term's ``rebuilt`` submodules, unless a parameter that trains."""
        prefixes = tuple(f"terms.{i}.{r}" for i, t in enumerate(self.terms) for r in t.rebuilt)
        if not prefixes:
            return set()
        trained = {f"terms.{n}" for n, p in self.terms.named_parameters() if p.requires_grad}
        return {k for k in keys if k.startswith(prefixes) and k not in trained}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        rebuilt = self._rebuilt_keys(checkpoint["state_dict"])
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k not in rebuilt}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        own = self.state_dict()
        checkpoint["state_dict"] = {**checkpoint["state_dict"], **{k: own[k] for k in self._rebuilt_keys(own)}}

    def on_train_epoch_start(self) -> None:
        self.log("lr", self.trainer.optimizers[0].param_groups[-1]["lr"], on_step=False, on_epoch=True)

    def extra_groups(self) -> list:
        """Optimizer groups beyond the plan's layer groups, ``(name, named params, LR scale)``: the terms'
        trainable parameters at the head LR. Kept out of ``plan.groups``, which gradual unfreezing walks."""
        params = [(n, p) for n, p in self.terms.named_parameters() if p.requires_grad]
        return [("terms", params, 1.0)] if params else []

    def configure_optimizers(self):
        o = self.optim
        groups = param_groups(self.plan.groups + self.extra_groups(), o.lr, o.weight_decay,
                              self.plan.no_weight_decay)
        optimizer = build_optimizer(groups, o.optimizer, o.lr, o.momentum)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = total / max(1, self.trainer.max_epochs)
        scheduler = warmup_cosine_scheduler(optimizer, total, int(round(o.warmup_epochs * per_epoch)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
