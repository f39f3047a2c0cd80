"""TensorBoard logger whose version folders are claimed atomically, so concurrent runs never share one, and whose
HParams tab holds each run's hyperparameters with the metrics it really reached."""

from __future__ import annotations

import os
import time
from typing import Any

from lightning.fabric.utilities.logger import _add_prefix, _convert_params, _flatten_dict
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from lit_regression.files import WriteError, make_folder


class RunLogger(TensorBoardLogger):
    """``TensorBoardLogger`` that creates ``version_N`` with ``os.mkdir`` (atomic) on the first process, so two
    runs started at once into the same folder get different versions and neither overwrites the other.

    Scalars: the values of one :meth:`log_metrics` call go into one TensorBoard event (one ``Summary`` with a
    value per metric) instead of one event each, as ``SummaryWriter.add_scalar`` would: TensorBoard reads them the
    same, and logging an epoch's ten metrics costs a fifth as much. The records are handed to TensorBoard's
    writer at most every ``WRITE_EVERY_S`` (1 s), and at every checkpoint write, ``save`` and ``finalize``: one
    hand-over per epoch woke the writer's thread at every epoch, which cost half a millisecond per epoch on the
    seed data (``benchmarks/profile_fit.py``), more than the epoch's training. TensorBoard's writer itself only
    flushes its file every 120 s.

    HParams: Lightning's placeholder ``hp_metric = -1`` is off (``default_hp_metric=False``). Instead, when a run
    ends successfully, the hyperparameters Lightning handed to :meth:`log_hyperparams` (model and data arguments)
    are written as one HParams session whose metrics are the run's own scalars (``train_loss``, ``val_loss``,
    ``val_acc``, ``val_r2``, ...): TensorBoard shows each metric's last logged value. Nothing is written for a run
    that logged no metric (``predict``), and only once per batch of new metrics (the prediction pass after ``fit``
    adds no second session).
    """

    WRITE_EVERY_S = 1.0

    def __init__(self, *args: Any, default_hp_metric: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, default_hp_metric=default_hp_metric, **kwargs)
        self.final_metrics: dict[str, float] = {}
        self._metrics_since_hparams = False
        self._pending: list[tuple[int | None, dict[str, float]]] = []  # records not yet handed to the writer
        self._handed_at = time.monotonic()

    def _get_next_version(self) -> int:
        version = super()._get_next_version()
        if rank_zero_only.rank != 0:
            return version
        root = self.root_dir
        make_folder(root)
        while True:
            try:
                os.mkdir(os.path.join(root, f"version_{version}"))
                return version
            except FileExistsError:
                version += 1
            except OSError as err:
                raise WriteError(os.path.join(root, f"version_{version}"), err, folder=True) from None

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        scalars, groups = {}, {}
        for name, value in _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR).items():
            if isinstance(value, dict):
                groups[name] = value
                continue
            try:
                scalars[name] = float(value)
            except (TypeError, ValueError, RuntimeError) as err:
                raise ValueError(f"metric {name!r}: cannot log {value!r}, expected a number or a one-element tensor") from err
        if groups:
            super().log_metrics(groups, step)
        if scalars:
            self._pending.append((step, scalars))
            if time.monotonic() - self._handed_at >= self.WRITE_EVERY_S:
                self._write_pending()
        for name, value in scalars.items():
            if name != "epoch":
                self.final_metrics[name] = value
                self._metrics_since_hparams = True

    def _write_pending(self) -> None:
        """Hand the records kept since the last call to TensorBoard's writer, one event each."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        pending, self._pending = self._pending, []
        self._handed_at = time.monotonic()
        if not pending:
            return
        writer = self.experiment._get_file_writer()
        for step, scalars in pending:
            writer.add_summary(Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in scalars.items()]), step)

    @rank_zero_only
    def save(self) -> None:
        self._write_pending()
        super().save()

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self._write_pending()  # the curves on disk reach at least as far as the checkpoints
        super().after_save_checkpoint(checkpoint_callback)

    def hparams_for_tensorboard(self) -> dict[str, Any]:
        """The hyperparameters as flat, TensorBoard-typed values: nested keys joined by ``/``, ``None`` and lists
        as strings, LightningCLI's private ``_class_path``/``_instantiator`` left out."""
        params = _flatten_dict(_convert_params(dict(self.hparams)))
        params = {k: v for k, v in params.items() if not k.startswith("_")}
        return self._sanitize_params(params)

    @rank_zero_only
    def log_hparams_session(self) -> None:
        """Write the HParams session (start and end info) of this run; its metric values are read by TensorBoard
        from the run's scalars. No experiment summary is written, so TensorBoard builds the HParams table from
        all runs together (the union of their hyperparameters) instead of from whichever run it reads first."""
        from torch.utils.tensorboard.summary import hparams

        _, session_start, session_end = hparams(self.hparams_for_tensorboard(), dict(self.final_metrics))
        writer = self.experiment._get_file_writer()
        writer.add_summary(session_start)
        writer.add_summary(session_end)
        self._metrics_since_hparams = False

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self._write_pending()
        if status == "success" and self._metrics_since_hparams and self.hparams:
            self.log_hparams_session()
        super().finalize(status)
