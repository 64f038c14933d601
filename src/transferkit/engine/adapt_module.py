"""The LightningModule of ``adapt``: the task loss on labelled source batches, plus
``trade_off x`` an alignment loss between the source and target pre-logits features.

A training batch is ``{"labelled": (x_s, y_s), "unlabelled": x_t}`` (Lightning's ``CombinedLoader``,
mode ``max_size_cycle``): source images with labels, target images without (``oracle``: the labelled
target images, no unlabelled ones). Both go through the network in
one forward pass (BatchNorm sees both domains), as in tllib. Validation is the source's.
"""

from __future__ import annotations

import torch
from torch import nn

from transferkit.adaptation import CORAL, CDANLoss, DANNLoss, MultipleKernelMMD, warm_start_coefficient
from transferkit.engine.module import OptimSettings, TransferModule
from transferkit.errors import TrainingError
from transferkit.evaluation.features import pre_logits
from transferkit.strategies import Plan

#: Methods whose alignment loss also takes the logits (conditioned on the predictions).
CONDITIONAL = ("cdan", "cdan+e")


def alignment_loss(method: str, features_dim: int, num_classes: int, seed: int = 0) -> nn.Module | None:
    """The alignment block of ``method`` on ``features_dim`` features (None: no alignment)."""
    if method == "dann":
        return DANNLoss(features_dim)
    if method in CONDITIONAL:
        return CDANLoss(features_dim, num_classes, entropy_conditioning=method == "cdan+e", seed=seed)
    if method == "dan":
        return MultipleKernelMMD()
    if method == "coral":
        return CORAL()
    return None  # source-only, oracle


class AdaptModule(TransferModule):
    """:class:`TransferModule` plus an alignment loss (``alignment``, None: the task loss alone).

    * the alignment block's parameters (a domain discriminator) are an optimizer group of their own
      at the head's LR (:meth:`extra_groups`), in the checkpoint with the network;
    * a gradient reversal's coefficient follows :func:`warm_start_coefficient` of the progress
      ``global_step / total steps``, set before every step (a resumed run recomputes it);
    * logs ``align_loss`` and, for the adversarial methods, ``domain_acc`` (0.5: the discriminator
      cannot tell the domains apart).
    """

    def __init__(self, net: nn.Module, num_classes: int, plan: Plan, optim: OptimSettings, *,
                 method: str, trade_off: float, alignment: nn.Module | None = None,
                 regularizer: nn.Module | None = None):
        super().__init__(net, num_classes, plan, optim, regularizer)
        self.method, self.trade_off, self.alignment = method, trade_off, alignment

    def extra_groups(self) -> list:
        params = list(self.alignment.named_parameters()) if self.alignment is not None else []
        return [("alignment", params, 1.0)] if params else []

    def on_train_batch_start(self, batch, batch_idx) -> None:
        super().on_train_batch_start(batch, batch_idx)
        grl = getattr(self.alignment, "grl", None)
        if grl is not None:
            grl.coeff = warm_start_coefficient(self.global_step / max(1, self.trainer.estimated_stepping_batches))

    def training_step(self, batch, batch_idx):
        x_s, y_s = batch["labelled"]
        x_t = batch.get("unlabelled") if self.alignment is not None else None
        features = pre_logits(self.net, x_s if x_t is None else torch.cat([x_s, x_t]))
        logits = self.net.get_classifier()(features)
        n = len(x_s)
        task = loss = self.loss_fn(logits[:n], y_s)
        if x_t is not None:
            align = self._align(features[:n], logits[:n], features[n:], logits[n:])
            loss = loss + self.trade_off * align
        if self.regularizer is not None:
            reg = self.regularizer(self.net)
            loss = loss + reg
            self.log("reg_loss", reg, on_step=False, on_epoch=True)
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step}; "
                                "training stopped — lower --lr or --trade-off")
        self.train_acc(logits[:n], y_s)
        self.log("train_loss", task, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def _align(self, f_s, logits_s, f_t, logits_t) -> torch.Tensor:
        out = (self.alignment(f_s, logits_s, f_t, logits_t) if self.method in CONDITIONAL
               else self.alignment(f_s, f_t))
        align, domain_acc = out if isinstance(out, tuple) else (out, None)
        self.log("align_loss", align, on_step=False, on_epoch=True, prog_bar=True)
        if domain_acc is not None:
            self.log("domain_acc", domain_acc, on_step=False, on_epoch=True)
        return align
