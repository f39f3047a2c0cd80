"""Stop at the first non-finite training loss (or parameter), before a diverged state can be checkpointed."""

from __future__ import annotations

import math
import os

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_regression.errors import InputError
from lit_regression.hooks import OwnHooks


class TrainingDiverged(InputError):
    """The training loss or the parameters became nan or inf. ``lit-regression`` prints the message alone."""


class FiniteCheck(OwnHooks, L.Callback):
    """After every training batch, checks that the loss is finite, and after the epoch's last batch and before a
    validation that the parameters (after the optimizer step) are too; if not, stops the fit at once with
    :class:`TrainingDiverged`, whose message names the epoch and step and what to try. Checkpoints are written
    after validation or at the epoch's end, which come after these checks, so no non-finite state is
    ever saved: the last good ``last.ckpt`` stays as it was, and the best checkpoint held in memory is written
    (``save_on_exception`` of the checkpoint callbacks is turned off before stopping, for the same reason)."""

    def __init__(self) -> None:
        self._step = 0
        self._parameters: list[torch.Tensor] = []
        self._checked_at = -1  # the global step after which the parameters were last checked

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._parameters = list(pl_module.parameters())

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self._step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        # the loss at every step; the parameters (a step that overflows them gives a non-finite loss at the next)
        # before anything can be checkpointed: at the epoch's last batch, and before a validation (on_validation_start)
        values = [loss.detach().reshape(-1)] if torch.is_tensor(loss) else []
        if batch_idx + 1 >= trainer.num_training_batches:
            values += self._parameter_values(trainer, pl_module)
        self._check(trainer, pl_module, values, loss, batch_idx)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a validation inside the epoch (val_check_interval) may write checkpoints when it ends
        if self._checked_at != trainer.global_step and trainer.state.fn == "fit" and not trainer.sanity_checking:
            values = self._parameter_values(trainer, pl_module)
            self._check(trainer, pl_module, values, None, trainer.fit_loop.epoch_loop.batch_idx)

    def _parameter_values(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[torch.Tensor]:
        self._checked_at = trainer.global_step
        return [p.detach().reshape(-1) for p in self._parameters or pl_module.parameters()]

    def _check(self, trainer: L.Trainer, pl_module: L.LightningModule, values: list, loss, batch_idx: int) -> None:
        ok = not values or bool(torch.isfinite(torch.cat(values)).all())  # one kernel and one sync
        if trainer.world_size > 1:  # stop every process together, or the others would wait for this one forever
            ok = trainer.strategy.reduce_boolean_decision(ok, all=True)
        if not ok:
            self._stop(trainer, pl_module, loss, batch_idx)

    def _stop(self, trainer: L.Trainer, pl_module: L.LightningModule, loss, batch_idx: int) -> None:
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint):
                callback.save_on_exception = False
        value = float(loss.detach().float().mean()) if torch.is_tensor(loss) else None
        where = f"epoch {trainer.current_epoch}, step {self._step} (batch {batch_idx} of the epoch)"
        if value is not None and not math.isfinite(value):
            what = f"the training loss is {value}"
        else:
            bad = next((n for n, p in pl_module.named_parameters() if not bool(torch.isfinite(p).all())), None)
            if bad is None:
                what = "the training loss is not finite on another process"
            else:
                after = f" (loss {value:.6g})" if value is not None else ""
                what = f"the parameter {bad} became non-finite after the optimizer step{after}"
        # the best checkpoint that ResumableCheckpoint holds in memory is a good state: written now
        kept = [c.save_pending(trainer) if hasattr(c, "save_pending") else getattr(c, "last_model_path", "")
                for c in trainer.checkpoint_callbacks]
        last = max((p for p in kept if p and os.path.exists(p)), key=os.path.getmtime, default="")
        kept = f"the last good checkpoint is kept: {last}" if last else "no checkpoint had been written yet"
        lr = trainer.optimizers[0].param_groups[0].get("lr") if trainer.optimizers else None
        lr = f", now {lr:g}" if isinstance(lr, (int, float)) else ""
        robust = ", or a robust loss (--model.loss huber)" if "loss" in getattr(pl_module, "hparams", {}) else ""
        raise TrainingDiverged(
            f"training diverged at {where}: {what}. Training stopped; {kept}. Try a lower learning rate "
            f"(--model.lr{lr}), standardised inputs and targets{robust}."
        )
