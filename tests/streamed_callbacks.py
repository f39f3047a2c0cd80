"""Callbacks that the streaming tests hand to real ``lit-regression`` processes (``tests/`` on PYTHONPATH)."""

from __future__ import annotations

import os
import signal

import lightning as L
import numpy as np


class RowsSeen(L.Callback):
    """Writes the global row index of every training row each process trained on, per epoch:
    ``folder/rank{R}-epoch{E}.npy``, and the number of batches in ``folder/rank{R}-epoch{E}.batches``."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.rows: list[np.ndarray] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.rows = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.rows.append(batch[2].cpu().numpy())

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        os.makedirs(self.folder, exist_ok=True)
        stem = os.path.join(self.folder, f"rank{trainer.global_rank}-epoch{trainer.current_epoch}")
        np.save(stem + ".npy", np.concatenate(self.rows))
        with open(stem + ".batches", "w") as f:
            f.write(str(len(self.rows)))


class KillAt(L.Callback):
    """SIGKILLs its own process after training batch ``batch`` of epoch ``epoch``: a kill in the middle of an
    epoch, at a known place."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)
