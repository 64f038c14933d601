"""LP-FT, stage one: fit the new head by linear probing before fine-tuning.

Kumar et al., "Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution" (ICLR 2022): with a randomly initialised head, the first
steps of full fine-tuning push large, noisy gradients into the backbone. Training
the head first on frozen features (cheap: they are computed once) and only then
fine-tuning everything keeps the features closer to the pretrained ones.
"""

from __future__ import annotations

import lightning as L
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferkit.engine.module import OptimSettings, TransferModule
from transferkit.evaluation import extract_features
from transferkit.strategies import make_plan


def fit_linear_probe(model: nn.Module, loader: DataLoader, num_classes: int, epochs: int = 30,
                     optim: OptimSettings | None = None, progress: bool = True) -> nn.Module:
    """Train ``model``'s head on its own cached pre-logit features over ``loader``.

    ``loader`` yields un-augmented ``(images, labels)``. The backbone is left
    untouched; the caller makes the next plan (e.g. ``full``), which resets
    trainability. Returns the head.
    """
    plan = make_plan("linear-probe", model)
    feats, labels = extract_features(model, loader, "features (LP-FT probe)", progress)
    head = model.get_classifier()
    data = DataLoader(TensorDataset(feats, labels), batch_size=loader.batch_size, shuffle=True)
    L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
              ).fit(TransferModule(head, num_classes, plan, optim or OptimSettings(lr=1e-3)), data)
    return head
