"""Lightning callbacks of the engine."""

from __future__ import annotations

import os
import time
from contextlib import suppress
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar

from transferkit.errors import IOFault, TrainingError


class AtomicCheckpoint(L.Callback):
    """Save ``last.ckpt`` at the end of every training epoch, atomically.

    The checkpoint is written to a temporary file and moved into place with
    ``os.replace``, so a run killed while saving still has its previous
    checkpoint intact. Validation of the epoch has run by then, so the epoch is
    complete when the file appears; ``--resume`` restarts from the next epoch. A
    disk that is full (or read-only, ...) while saving removes the temporary file
    and stops training with one line (:class:`~transferkit.errors.IOFault`).
    """

    def __init__(self, dirpath: Path | str, filename: str = "last.ckpt"):
        self.path = Path(dirpath) / filename

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        bad = next((n for n, p in pl_module.named_parameters() if not torch.isfinite(p).all()), None)
        if bad is not None:  # never checkpoint a broken state: the previous one stays the last good one
            raise TrainingError(f"weights became non-finite ({bad}) in epoch {trainer.current_epoch}; "
                                "training stopped — lower --lr")
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            if trainer.is_global_zero:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(tmp)
            if trainer.is_global_zero:
                os.replace(tmp, self.path)
        except OSError as e:
            self._failed(trainer, tmp, e)

    def _failed(self, trainer: L.Trainer, tmp: Path, e: OSError) -> None:
        """Remove the partial temporary file; a fault of the disk becomes one line saying what was kept."""
        from transferkit.rundir import io_fault

        if trainer.is_global_zero:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)
        fault = io_fault(self.path, e)
        if not isinstance(fault, IOFault):
            raise e
        kept = "the previous checkpoint is kept" if self.path.is_file() else "no checkpoint was saved"
        raise IOFault(f"{fault} (epoch {trainer.current_epoch} not saved; {kept}: continue with --resume once "
                      "there is room)") from e


class TrainTimer(L.Callback):
    """Training time across interruptions: saved in each checkpoint, added up on resume.

    ``prep_seconds`` is work this attempt did before ``fit`` that training needs
    (cached features, LP-FT's probe). ``seconds`` is the total so far: earlier
    attempts (from the checkpoint), this attempt's preparation and its fit time.
    """

    def __init__(self, prep_seconds: float = 0.0):
        self.prep_seconds = prep_seconds
        self.before = 0.0
        self._start: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    @property
    def seconds(self) -> float:
        running = time.perf_counter() - self._start if self._start is not None else 0.0
        return self.before + self.prep_seconds + running

    def state_dict(self) -> dict:
        return {"seconds": self.seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.before = float(state_dict["seconds"])


class FinalWeights(L.Callback):
    """The trained weights as one full state dict, gathered at the end of ``fit`` on every
    rank (a collective under FSDP, which shards them); kept on global rank zero."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state = trainer.strategy.lightning_module_state_dict()
        if trainer.is_global_zero:
            self.state = {k: v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()
                          for k, v in state.items()}


def ema_callback(decay: float) -> L.Callback:
    """Lightning's ``EMAWeightAveraging``: after every optimizer step
    ``avg <- decay * avg + (1 - decay) * w`` over parameters and buffers (the first step copies
    ``w``); validation runs on ``avg`` and training ends with ``avg`` in the module. Saved in each
    checkpoint (the average under ``state_dict``, the raw weights under ``current_model_state``)."""
    from lightning.pytorch.callbacks import EMAWeightAveraging

    return EMAWeightAveraging(decay=decay)


def early_stopping(patience: int) -> L.Callback:
    """Lightning's ``EarlyStopping`` on ``val_acc`` (higher is better): training stops after ``patience``
    validations in a row without a strictly higher accuracy than the best so far. Checked after each
    epoch's validation, before :class:`AtomicCheckpoint` saves the epoch (its count is in the checkpoint, so
    a resumed run counts on); the weights kept are the last epoch's, as for a run that ran its epochs."""
    from lightning.pytorch.callbacks import EarlyStopping

    return EarlyStopping(monitor="val_acc", mode="max", patience=patience, min_delta=0.0, check_finite=True,
                         verbose=False)


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar without the loggers' version (``v_num``: the attempt folder, the MLflow
    run id) and with epochs counted from 1 (``Epoch 1/3``, where Lightning shows ``Epoch 0/2``)."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    def _get_train_description(self, current_epoch: int) -> str:  # Lightning's own hook, overridden
        text = f"Epoch {current_epoch + 1}"
        if self.trainer.max_epochs is not None:
            text += f"/{self.trainer.max_epochs}"
        return f"{text:{len(self.validation_description)}}"  # as wide as "Validation": the bar does not jump
