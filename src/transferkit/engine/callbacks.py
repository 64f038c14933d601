"""Lightning callbacks of the engine."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L


class AtomicCheckpoint(L.Callback):
    """Save ``last.ckpt`` at the end of every training epoch, atomically.

    The checkpoint is written to a temporary file and moved into place with
    ``os.replace``, so a run killed while saving still has its previous
    checkpoint intact. Validation of the epoch has run by then, so the epoch is
    complete when the file appears; ``--resume`` restarts from the next epoch.
    """

    def __init__(self, dirpath: Path | str, filename: str = "last.ckpt"):
        self.path = Path(dirpath) / filename

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
