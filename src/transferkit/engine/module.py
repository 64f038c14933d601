"""The LightningModule that trains any network under a strategy :class:`Plan`."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from transferkit.errors import TrainingError
from transferkit.evaluation.features import pre_logits
from transferkit.optim import OptimSettings, build_optimizer, param_groups, warmup_cosine_scheduler
from transferkit.strategies import Plan
from transferkit.surgery.freezing import reapply_frozen


class TransferModule(L.LightningModule):
    """Trains ``net`` (a whole timm model, or just its head on cached features).

    * the optimizer is built once over every group of the plan, frozen or not;
    * after every ``train()`` the plan's frozen modules go back to eval mode
      (frozen BatchNorm, see :mod:`transferkit.surgery.freezing`);
    * an optional ``regularizer`` (an ``nn.Module`` called as ``regularizer(net)``,
      e.g. :class:`~transferkit.regularizers.L2SP`) is added to the task loss:
      ``loss = task + regularizer(net)``; ``train_loss`` logs the task loss alone
      (comparable with ``val_loss``) and ``reg_loss`` the penalty. A regulariser
      with ``uses_features = True`` (e.g. :class:`~transferkit.regularizers.LwF`)
      is called ``regularizer(net, x=x, features=pre_logits)`` with the features
      the head saw; its own weights (a frozen teacher) are not checkpointed —
      they are rebuilt from the pretrained weights on resume;
    * a non-finite loss stops training with :class:`TrainingError` — the last
      epoch checkpoint on disk is the last good state.
    """

    def __init__(self, net: nn.Module, num_classes: int, plan: Plan, optim: OptimSettings,
                 regularizer: nn.Module | None = None):
        super().__init__()
        self.net = net
        self.plan = plan
        self.optim = optim
        self.regularizer = regularizer
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=optim.label_smoothing)
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

    def training_step(self, batch, batch_idx):
        x, y = batch
        reg = None
        if getattr(self.regularizer, "uses_features", False):
            features = pre_logits(self.net, x)
            logits = self.net.get_classifier()(features)
            reg = self.regularizer(self.net, x=x, features=features, y=y)
        else:
            logits = self(x)
            if self.regularizer is not None:
                reg = self.regularizer(self.net)
        task = loss = self.loss_fn(logits, y)
        if reg is not None:
            loss = task + reg
            self.log("reg_loss", reg, on_step=False, on_epoch=True)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step}; "
                "training stopped — lower --lr or check the data")
        self.train_acc(logits, y)
        self.log("train_loss", task, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.val_f1(logits, y)
        self.log("val_loss", self.loss_fn(logits, y), on_epoch=True, prog_bar=True)
        self.log("val_acc", self.val_acc, on_epoch=True, prog_bar=True)
        self.log("val_f1", self.val_f1, on_epoch=True)

    #: Submodules rebuilt from their source on resume, never checkpointed (a frozen teacher).
    NOT_CHECKPOINTED: tuple[str, ...] = ("regularizer.",)

    def _rebuilt_keys(self, keys) -> set[str]:
        """The ``keys`` not checkpointed: under ``NOT_CHECKPOINTED`` and not a parameter that trains
        (co-tuning's source head trains and is checkpointed; LwF's frozen teacher is rebuilt)."""
        trained = {f"regularizer.{n}" for n, _ in self.regularizer_params()}
        return {k for k in keys if k.startswith(self.NOT_CHECKPOINTED) and k not in trained}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        rebuilt = self._rebuilt_keys(checkpoint["state_dict"])
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k not in rebuilt}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        own = self.state_dict()
        checkpoint["state_dict"] = {**checkpoint["state_dict"], **{k: own[k] for k in self._rebuilt_keys(own)}}

    def regularizer_params(self) -> list:
        """The regulariser's own trainable parameters (co-tuning's source head), named."""
        if self.regularizer is None:
            return []
        return [(n, p) for n, p in self.regularizer.named_parameters() if p.requires_grad]

    def on_train_epoch_start(self) -> None:
        self.log("lr", self.trainer.optimizers[0].param_groups[-1]["lr"], on_step=False, on_epoch=True)

    def extra_groups(self) -> list:
        """Optimizer groups beyond the plan's layer groups, ``(name, named params, LR scale)``: the
        regulariser's trainable parameters at the head LR (``adapt``'s domain discriminator is another).
        Kept out of ``plan.groups``, which gradual unfreezing walks."""
        params = self.regularizer_params()
        return [("regularizer", params, 1.0)] if params else []

    def configure_optimizers(self):
        o = self.optim
        groups = param_groups(self.plan.groups + self.extra_groups(), o.lr, o.weight_decay,
                              self.plan.no_weight_decay)
        optimizer = build_optimizer(groups, o.optimizer, o.lr, o.momentum)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = total / max(1, self.trainer.max_epochs)
        scheduler = warmup_cosine_scheduler(optimizer, total, int(round(o.warmup_epochs * per_epoch)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
