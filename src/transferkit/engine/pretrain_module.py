"""The LightningModule that trains a self-supervised method (:mod:`transferkit.selfsup`)."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightly.utils.benchmarking import knn_predict
from torchmetrics.classification import MulticlassAccuracy

from transferkit.errors import TrainingError
from transferkit.optim import OptimSettings, build_optimizer, param_groups, warmup_cosine_scheduler
from transferkit.selfsup import SelfSupervised, knn_bank


class PretrainModule(L.LightningModule):
    """Trains ``net`` (a :class:`SelfSupervised` method) on batches of views; its labels are dropped.

    With a ``bank_loader`` (labelled training images) the validation loop is the kNN monitor: the bank's
    features are computed at the start of each validation epoch and every validation image is classified
    by its ``knn_k`` nearest bank images (``knn_acc``). A non-finite loss stops training with
    :class:`TrainingError` (the last epoch checkpoint is the last good state).
    """

    def __init__(self, net: SelfSupervised, optim: OptimSettings, num_classes: int = 0, bank_loader=None,
                 knn_k: int = 20):
        super().__init__()
        self.net, self.optim, self.bank_loader, self.knn_k = net, optim, bank_loader, knn_k
        self.knn_acc = MulticlassAccuracy(max(num_classes, 2), average="micro")
        self._bank = None

    def training_step(self, batch, batch_idx):
        views, _ = batch
        loss = self.net(views, self.global_step, int(self.trainer.estimated_stepping_batches))
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step}; "
                                "training stopped — lower --lr or raise --batch-size")
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(views[0]))
        return loss

    def on_after_backward(self) -> None:
        self.net.after_backward(self.current_epoch)

    def on_validation_epoch_start(self) -> None:
        self._bank = knn_bank(self.net.backbone, self.bank_loader, self.device)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        bank, labels = self._bank
        features = F.normalize(self.net.backbone(x), dim=1)
        pred = knn_predict(features, bank.to(features), labels.to(y.device), self.knn_acc.num_classes,
                           knn_k=min(self.knn_k, labels.numel()))[:, 0]
        self.knn_acc(pred, y)
        self.log("knn_acc", self.knn_acc, on_epoch=True, prog_bar=True, batch_size=len(y))

    def on_train_epoch_start(self) -> None:
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=False, on_epoch=True)

    def configure_optimizers(self):
        o = self.optim
        trainable = [(n, p) for n, p in self.net.named_parameters() if p.requires_grad]
        optimizer = build_optimizer(param_groups([("ssl", trainable, 1.0)], o.lr, o.weight_decay), o.optimizer,
                                    o.lr, o.momentum)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(round(o.warmup_epochs * total / max(1, self.trainer.max_epochs)))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": warmup_cosine_scheduler(optimizer, total, warmup), "interval": "step"}}
