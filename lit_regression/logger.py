"""TensorBoard logger whose run folders are named after what ran and claimed atomically, so concurrent runs never
share one; whose HParams tab holds each run's hyperparameters with the metrics it really reached; and whose
Custom Scalars tab shows the training and validation loss on one chart."""

from __future__ import annotations

import glob
import os
import shutil
import time
from typing import Any

from lightning.fabric.utilities.logger import _add_prefix, _convert_params, _flatten_dict
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from lit_regression.checkpointing import run_under
from lit_regression.files import WriteError, make_folder

STAGES = ("train", "val", "test")
MAIN_METRICS = ("r2", "acc", "balanced_acc")  # charted right after the loss
# model arguments the CLI fills in from the data's shape: no choice of the user's, left out of the HParams table,
# where TensorBoard shows the first five hyperparameters whose values differ (model, optimizer, target ...)
DERIVED = ("n_features", "n_outputs")
# a run folder's name: the second it started, then -2, -3 ... for runs started in the same second
TIMESTAMP = "%Y-%m-%d_%H-%M-%S"


def layout(metrics) -> dict:
    """TensorBoard's custom-scalars layout for metrics named ``STAGE_NAME`` (``train_loss``, ``val_r2`` ...): one
    chart per ``NAME``, the loss first, then the main metrics (:data:`MAIN_METRICS`), each with the training, validation and test values together."""
    names = sorted({m.split("_", 1)[1] for m in metrics if m.split("_", 1)[0] in STAGES and "_" in m},
                   key=lambda name: (name != "loss", name not in MAIN_METRICS, name))
    return {"lit_regression": {name: ["Multiline", [rf"^({'|'.join(STAGES)})_{name}$"]] for name in names}}


class RunLogger(TensorBoardLogger):
    """``TensorBoardLogger`` whose run folder is ``SAVE_DIR/NAME/VERSION``: ``NAME`` says what ran (the CLI passes
    ``<config>/<Model>-<target>``, or ``--name``) and ``VERSION`` is the time it started (``2026-12-06_03-10-05``;
    ``-2``, ``-3`` ... for another run in the same second). The first process creates the folder with ``os.mkdir``
    (atomic), so two runs started at once never share one. With ``stage`` (``test``, ``predict`` ...), the logger
    writes into ``SAVE_DIR/NAME/VERSION/STAGE`` (``STAGE-2`` ... where that exists): a stage of an existing run,
    whose TensorBoard events join that run's HParams trial as metrics of the group ``STAGE``.

    :meth:`discard` (a command refused for its input) removes, at :meth:`finalize`, the folders this logger made.

    Scalars: the values of one :meth:`log_metrics` call go into one TensorBoard event (one ``Summary`` with a
    value per metric) instead of one event each, as ``SummaryWriter.add_scalar`` would: TensorBoard reads them the
    same, and logging an epoch's ten metrics costs a fifth as much. The records are handed to TensorBoard's
    writer at most every ``WRITE_EVERY_S`` (1 s), and at every checkpoint write, ``save`` and ``finalize``: one
    hand-over per epoch woke the writer's thread at every epoch, which cost half a millisecond per epoch on the
    seed data (``benchmarks/profile_fit.py``), more than the epoch's training. TensorBoard's writer itself only
    flushes its file every 120 s. Lightning's ``epoch`` scalar is left out: the step axis says as much, and its
    chart would open TensorBoard. With the first records, a run writes the custom-scalars :func:`layout` of its
    metrics.

    HParams: Lightning's placeholder ``hp_metric = -1`` is off (``default_hp_metric=False``). Instead, when a run
    ends successfully, the hyperparameters Lightning handed to :meth:`log_hyperparams` (model and data arguments),
    with those of :meth:`log_run_params` (the model class, the optimizer that ran), are written as one HParams
    session whose metrics are the run's own scalars (``train_loss``, ``val_loss``, ``val_acc``, ``val_r2``, ...):
    TensorBoard shows each metric's last logged value. Nothing is written for a run that logged no metric
    (``predict``), for a stage (its metrics belong to the run's session), and only once per batch of new metrics
    (the prediction pass after ``fit`` adds no second session).
    """

    WRITE_EVERY_S = 1.0

    def __init__(self, save_dir: str, name: str = "", version: str | None = None, stage: str | None = None,
                 default_hp_metric: bool = False, **kwargs: Any) -> None:
        super().__init__(save_dir, name=name, version=version, default_hp_metric=default_hp_metric, **kwargs)
        self.stage = stage
        self.final_metrics: dict[str, float] = {}
        self.run_params: dict[str, Any] = {}
        self._metrics_since_hparams = False
        self._layout_written = stage is not None  # a stage's metrics go on the run's own charts
        self._pending: list[tuple[int | None, dict[str, float]]] = []  # records not yet handed to the writer
        self._handed_at = time.monotonic()
        self._claimed: str | None = None  # the run (or stage) folder this logger made
        self._made_above: str | None = None  # the outermost folder it made above that one, if any
        self._discard = False

    @classmethod
    def into(cls, run: str, root: str, stage: str | None = None) -> RunLogger:
        """A logger that writes into the existing run folder ``run`` (a resumed fit), or into a ``stage`` of it;
        under ``root`` when it lies there (so ``tensorboard --logdir ROOT`` shows it beside the others)."""
        placed = run_under(run, root)
        if placed is None:
            return cls(os.path.dirname(run), name="", version=os.path.basename(run), stage=stage)
        return cls(root, name=placed[0], version=placed[1], stage=stage)

    def _claim(self, parent: str, base: str) -> str:
        """The first of ``base``, ``base-2``, ``base-3`` ... whose folder this process makes under ``parent``
        (``os.mkdir``: two processes never both make one); ``base`` on other processes, which write nothing
        (Lightning broadcasts the first process's folder). ``parent`` and the folders above it are made as needed,
        and remembered."""
        if rank_zero_only.rank != 0:
            return base
        if not os.path.isdir(parent):
            made = parent  # the outermost folder made for it
            while os.path.dirname(made) not in ("", made) and not os.path.exists(os.path.dirname(made)):
                made = os.path.dirname(made)
            make_folder(parent)
            self._made_above = made
        k, name = 1, base
        while True:
            try:
                os.mkdir(os.path.join(parent, name))
                self._claimed = os.path.join(parent, name)
                return name
            except FileExistsError:
                k += 1
                name = f"{base}-{k}"
            except OSError as err:
                raise WriteError(os.path.join(parent, name), err, folder=True) from None

    def _get_next_version(self) -> str:
        return self._claim(self.root_dir, time.strftime(TIMESTAMP))

    @property
    def sub_dir(self) -> str | None:
        if self.stage is not None and self._sub_dir is None:
            self._sub_dir = self._claim(os.path.join(self.root_dir, str(self.version)), self.stage)
        return self._sub_dir

    def discard(self) -> None:
        """Remove, when the run finalizes, the folders this logger made (with what was written into them)."""
        self._discard = True

    def log_run_params(self, params: dict[str, Any]) -> None:
        """Hyperparameters of the run that are no argument of the model or data (the model class, the optimizer
        that ran): written with the others into the HParams session, where they override an argument's value."""
        self.run_params.update(params)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        scalars, groups = {}, {}
        for name, value in _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR).items():
            if name == "epoch":
                continue
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
        if not self._layout_written:
            from torch.utils.tensorboard.summary import custom_scalars

            writer.add_summary(custom_scalars(layout(name for _, scalars in pending for name in scalars)))
            self._layout_written = True
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
        as strings, LightningCLI's private ``_class_path``/``_instantiator`` and the :data:`DERIVED` sizes left
        out."""
        params = _flatten_dict(_convert_params({**self.hparams, **self.run_params}))
        params = {k: v for k, v in params.items() if not k.startswith("_") and k not in DERIVED}
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
        if status == "success" and self._metrics_since_hparams and self.hparams and self.stage is None:
            self.log_hparams_session()
        super().finalize(status)
        if self._discard:
            self._remove_made()
        elif self.stage is not None and not self.final_metrics and self._claimed is not None:
            # a stage that logged nothing (predict): no events file, which TensorBoard would list as an empty run
            for events in glob.glob(os.path.join(self._claimed, "events.out.tfevents.*")):
                os.remove(events)

    def _remove_made(self) -> None:
        """Remove the run (or stage) folder this logger claimed, with its content, then the folders made above it
        that are empty now (another run may have started in one of them meanwhile)."""
        if self._claimed is None:
            return
        shutil.rmtree(self._claimed, ignore_errors=True)
        if self._made_above is not None:
            folder, outermost = os.path.dirname(self._claimed), os.path.abspath(self._made_above)
            while True:
                try:
                    os.rmdir(folder)
                except OSError:
                    break
                if os.path.abspath(folder) == outermost:
                    break
                folder = os.path.dirname(folder)
        self._claimed = self._made_above = None
