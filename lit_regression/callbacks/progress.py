"""Progress of a run that a person can watch: one bar over the whole ``fit``, or a few plain lines in a log.

Epochs here are often one full batch of a few milliseconds, so Lightning's bar per epoch flickers past thousands
of times, and shows none of the losses. :class:`RunProgressBar` counts epochs instead and draws at most
``1 / refresh_seconds`` times a second, whatever the epoch rate.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm, convert_inf
from lightning.pytorch.trainer.states import TrainerFn

from lit_regression.errors import write_line
from lit_regression.hooks import OwnHooks

# what the bar shows, in this order, where the run has it: the losses and the main metric of either task
METRICS = ("train_loss", "val_loss", "val_r2", "val_acc")
RUN_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"
DONE_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"  # no time left at the end


def format_value(value: Any) -> str:
    """A metric in 4 significant digits, of constant width for a given magnitude: 0.01026, 1.000, 1.234e-05."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    return format(value, "#.4g") if math.isfinite(value) else str(value)


class RunProgressBar(OwnHooks, TQDMProgressBar):
    """Progress of a ``fit`` as one bar over the run's epochs, and Lightning's bars for the other commands.

    In a terminal (standard output is a TTY), ``fit`` shows one bar: epochs done of ``max_epochs`` (counted from
    the epoch a resumed run starts at), elapsed and remaining time, and the latest ``train_loss``, ``val_loss`` and
    main metric (``val_r2``, ``val_acc``). It is drawn at most every ``refresh_seconds``, so thousands of
    millisecond epochs cost nothing measurable. An epoch (or a validation) that has run for ``batch_bar_after``
    seconds gets a bar of its batches under the run bar, removed when it ends; shorter ones get none.

    Without a terminal (a CI log, a pipe), ``fit`` prints a plain line such as ``epoch 100/1000 [00:01<00:09]
    train_loss=0.01026, val_loss=0.0003308, val_r2=1.000`` each time another tenth of the epochs is done, or
    ``log_seconds`` have passed, and one at the end: about a dozen lines, and no control characters.

    ``validate``, ``test`` and ``predict`` show Lightning's bars in a terminal, refreshed at most every
    ``refresh_seconds``, and none without one; the ``predict`` that follows a ``fit`` (predictions of the final
    weights) is as quiet as a validation during fit.
    Lines from :func:`lit_regression.errors.say` (and ``LightningModule.print``) appear above the bar, intact.

    Args:
        refresh_rate: Lightning's: draw every this many batches at most (0 turns every bar off).
        process_position: Lightning's: offset of the bars, in lines.
        leave: accepted as Lightning's, without effect: the run bar always stays, the batch bars go.
        refresh_seconds: the least time between two drawings of a bar (tqdm's ``mininterval``).
        batch_bar_after: seconds an epoch or validation runs before its batch bar appears (0: always).
        log_seconds: without a terminal, the most time between two lines.
        log_fraction: without a terminal, a line each time this fraction of the epochs is done.
        metrics: the names shown, where the run has them.
        tty: whether to draw bars; by default, whether standard output is a terminal.
    """

    def __init__(
        self,
        refresh_rate: int = 1,
        process_position: int = 0,
        leave: bool = False,
        refresh_seconds: float = 0.1,
        batch_bar_after: float = 1.0,
        log_seconds: float = 30.0,
        log_fraction: float = 0.1,
        metrics: Sequence[str] = METRICS,
        tty: bool | None = None,
    ) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self.refresh_seconds = refresh_seconds
        self.batch_bar_after = batch_bar_after
        self.log_seconds = log_seconds
        self.log_fraction = log_fraction
        self.metrics = tuple(metrics)
        self.tty = tty
        self._fitting = False  # between on_train_start and on_train_end, drawing the run's progress
        self._quiet_predict = False  # the predict that follows a fit
        self._terminal = True
        self._run_bar: Tqdm | None = None
        self._batch_bar: Tqdm | None = None  # the current epoch's, validation's or post-fit predict's batches
        self._total: int | None = None  # epochs of the whole run (None: unknown)
        self._initial = 0  # the epoch the fit started at (a resumed run's)
        self._done = 0  # epochs done
        self._drawn = -1  # epochs done at the last line or drawing
        self._pending = False  # an epoch ended and is not shown yet
        self._start = 0.0  # time.monotonic() at the start of training
        self._last_draw = 0.0  # time.monotonic() at the run bar's (or a command's bar's) last drawing
        self._last_batch_draw = 0.0
        self._last_line = 0.0
        self._stage_start = 0.0  # time.monotonic() at the start of the current epoch or validation

    def __getstate__(self) -> dict:
        state = super().__getstate__()  # without the tqdm bars
        state.update(_handlers=[], _showwarning=None)  # console handlers and a function: not picklable
        return state

    # --- what is shown ----------------------------------------------------------------------------------------
    def values(self, trainer: L.Trainer) -> dict[str, Any]:
        """The shown metrics: Lightning's progress bar metrics, else the callback metrics (a module that logs
        without ``self.log``)."""
        shown = {}
        sources = (trainer.progress_bar_metrics, trainer.callback_metrics)
        for name in self.metrics:
            for source in sources:
                if name in source:
                    shown[name] = source[name]
                    break
        return shown

    def postfix(self, trainer: L.Trainer) -> str:
        return ", ".join(f"{name}={format_value(value)}" for name, value in self.values(trainer).items())

    def _use_terminal(self) -> bool:
        if self.tty is not None:
            return self.tty
        isatty = getattr(sys.stdout, "isatty", None)
        try:
            return bool(isatty and isatty())
        except ValueError:  # closed
            return False

    def _run_total(self, trainer: L.Trainer) -> int | None:
        """Epochs the fit will run at most: max_epochs, fewer where max_steps ends it first."""
        epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else None
        batches = convert_inf(trainer.num_training_batches)
        if trainer.max_steps is not None and trainer.max_steps > 0 and batches:
            steps_per_epoch = math.ceil(batches / max(trainer.accumulate_grad_batches, 1))
            by_steps = math.ceil(trainer.max_steps / steps_per_epoch)
            epochs = by_steps if epochs is None else min(epochs, by_steps)
        return epochs

    # --- fit: the run bar, or lines -----------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._terminal = self._use_terminal()
        if not self._terminal and trainer.state.fn is not TrainerFn.FITTING:
            # validate, test and predict without a terminal: Lightning's bars would be one line of carriage
            # returns in the log; their results are the table and the files said after them
            self.disable()

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stage_start = time.monotonic()  # a batch bar only if it lasts; Lightning's would flash past

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close_batch_bar()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.is_disabled:
            return
        self._fitting = True
        self._total = self._run_total(trainer)
        self._initial = self._done = self._drawn = trainer.current_epoch
        self._pending = False
        self._start = self._last_draw = self._last_line = time.monotonic()
        if self._terminal:
            self._run_bar = Tqdm(desc=self.train_description, total=self._total, initial=self._initial,
                                 position=2 * self.process_position, leave=True, dynamic_ncols=True, file=sys.stdout,
                                 smoothing=0, unit="epoch", bar_format=RUN_FORMAT, mininterval=self.refresh_seconds)
            self.train_progress_bar = self._run_bar  # LightningModule.print and Lightning's own lookups
            self._redirect()

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        if not self._fitting:
            return
        self._stage_start = time.monotonic()
        if self._pending:  # the last epoch's train and val values are logged by now
            self._show(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._fitting:
            return
        now = time.monotonic()
        if self._terminal:
            self._batch_progress(batch_idx + 1, lambda: convert_inf(self.total_train_batches),
                                 f"Epoch {trainer.current_epoch + 1}", now)
        elif now - self._last_line >= self.log_seconds:  # a long epoch in a log: its batches, now and then
            self._line(trainer, now, batch=(batch_idx + 1, convert_inf(self.total_train_batches)))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._fitting:
            return
        self._close_batch_bar()
        # the module logs the epoch's values after this hook: they are shown at the next epoch's start
        self._done = trainer.current_epoch + 1
        self._pending = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._fitting:
            return
        self._close_batch_bar()
        self._show(trainer, final=True)
        self._close_run_bar()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._quiet_predict = True  # the predictions of the final weights, if they follow

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # an error message or traceback starts on its own line, below a bar kept as it was
        self._close_batch_bar()
        self._close_run_bar()
        for bar in (self._val_progress_bar, self._test_progress_bar, self._predict_progress_bar):
            if bar is not None:
                bar.close()

    def _show(self, trainer: L.Trainer, final: bool = False) -> None:
        """Draw the run bar, or print a line, for the epochs done, unless it is too soon since the last one."""
        now = time.monotonic()
        self._pending = False
        if not self._terminal:
            if final:
                if self._done != self._drawn:
                    self._line(trainer, now, final=True)
            elif self._due(now):
                self._line(trainer, now)
            return
        if not final and now - self._last_draw < self.refresh_seconds:
            self._pending = True  # shown at a later epoch's start or at the end, with its values then
            return
        bar = self._run_bar
        bar.n = self._done
        bar.set_postfix_str(self.postfix(trainer), refresh=False)
        if final:
            bar.bar_format = DONE_FORMAT
            if self._stopped(trainer):
                bar.set_description_str(f"{self.train_description} (stopped)", refresh=False)
        bar.refresh()
        self._last_draw, self._drawn = now, self._done

    def _due(self, now: float) -> bool:
        """Without a terminal: whether another ``log_fraction`` of the epochs is done, or ``log_seconds`` passed."""
        if now - self._last_line >= self.log_seconds:
            return True
        if not self._total or self.log_fraction <= 0:
            return False
        span = self._total - self._initial
        step = max(span * self.log_fraction, 1)
        return (self._done - self._initial) // step > (self._drawn - self._initial) // step or self._done >= self._total

    def _stopped(self, trainer: L.Trainer) -> bool:
        """Whether the fit ended before its last epoch (a callback such as Convergence stopped it)."""
        return bool(self._total) and self._done < self._total and trainer.should_stop

    def _line(self, trainer: L.Trainer, now: float, batch: tuple[int, int | None] | None = None,
              final: bool = False) -> None:
        """A plain line: epoch k/N, elapsed<remaining, and the metrics (with ``batch``: inside epoch k)."""
        elapsed = now - self._start
        total = self._total
        done = float(self._done - self._initial)
        where = f"epoch {self._done}/{total if total else '?'}"
        if batch is not None:
            n, of = batch
            where = f"epoch {trainer.current_epoch + 1}/{total if total else '?'}, batch {n}/{of if of else '?'}"
            done += n / of if of else 0.0
        if final and self._stopped(trainer):
            where += " (stopped)"
        clock = Tqdm.format_interval(elapsed)
        if total and done > 0 and not final:
            clock += "<" + Tqdm.format_interval(elapsed * (total - self._initial - done) / done)
        postfix = self.postfix(trainer)
        write_line(f"{where} [{clock}]" + (f" {postfix}" if postfix else ""), sys.stdout)
        self._last_line = now
        if batch is None:
            self._drawn = self._done

    # --- batch bars under the run bar, for epochs and validations that last -------------------------------------
    def _batch_progress(self, n: int, total_of: Callable[[], int | None], desc: str, now: float) -> None:
        """Batch ``n`` of ``total_of()`` done: draw the stage's batch bar, once the stage has lasted."""
        bar = self._batch_bar
        if bar is None:
            if now - self._stage_start < self.batch_bar_after:
                return
            total = total_of()
            if total is not None and n >= total:
                return
            # delay: not drawn before its count and clock are set; timed from the stage's start
            bar = self._batch_bar = Tqdm(desc=desc, total=total, position=2 * self.process_position + 1,
                                         leave=False, dynamic_ncols=True, file=sys.stdout, smoothing=0,
                                         bar_format=self.BAR_FORMAT, mininterval=self.refresh_seconds, delay=1.0)
            bar.delay = 0.0
            bar.start_t = bar.last_print_t = time.time() - (now - self._stage_start)
            self._last_batch_draw = 0.0
        if n % self.refresh_rate == 0 and now - self._last_batch_draw >= self.refresh_seconds:
            bar.n = n
            bar.refresh()
            self._last_batch_draw = now
            if self._run_bar is not None and now - self._last_draw >= self.refresh_seconds:
                self._run_bar.refresh()  # its clock
                self._last_draw = now

    def _close_batch_bar(self) -> None:
        if self._batch_bar is not None:
            self._batch_bar.close()
            self._batch_bar = None

    def _close_run_bar(self) -> None:
        self._fitting = False
        if self._run_bar is not None:
            self._run_bar.close()
            self._run_bar = None
        self._restore()

    def _redirect(self) -> None:
        """While the run bar is drawn, log records and warnings on the console (Lightning's "`Trainer.fit`
        stopped", a checkpoint's warning) are written above it, as :func:`lit_regression.errors.say` does."""
        self._handlers = []
        for name in ("lightning.pytorch", "lightning.fabric", ""):
            logger = logging.getLogger(name or None)
            for i, handler in enumerate(logger.handlers):
                if type(handler) is logging.StreamHandler and handler.stream in (sys.stdout, sys.stderr):
                    logger.handlers[i] = _AboveBars(handler)
                    self._handlers.append((logger, handler))
        self._showwarning = warnings.showwarning
        original = self._showwarning

        def showwarning(message, category, filename, lineno, file=None, line=None):
            if file is not None:
                return original(message, category, filename, lineno, file, line)
            text = warnings.formatwarning(message, category, filename, lineno, line)
            write_line(text.rstrip("\n"), sys.stderr)

        warnings.showwarning = showwarning

    def _restore(self) -> None:
        for logger, handler in getattr(self, "_handlers", ()):
            logger.handlers = [handler if isinstance(h, _AboveBars) and h.original is handler else h
                               for h in logger.handlers]
        self._handlers = []
        if getattr(self, "_showwarning", None) is not None:
            warnings.showwarning = self._showwarning
            self._showwarning = None

    def _quiet(self, trainer: L.Trainer) -> bool:
        """Whether an evaluation loop is shown the fit's way: a validation during fit or the post-fit predict."""
        return trainer.state.fn is TrainerFn.FITTING or (self._quiet_predict and trainer.predicting)

    # --- validation: quiet during fit, Lightning's for validate ------------------------------------------------
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._quiet(trainer):
            self._close_batch_bar()  # the epoch's
            self._stage_start = time.monotonic()
            return
        super().on_validation_start(trainer, pl_module)

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._quiet(trainer):
            self._current_eval_dataloader_idx = dataloader_idx
            return
        super().on_validation_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._quiet(trainer):
            if self.is_enabled and self._terminal:
                desc = self.sanity_check_description if trainer.sanity_checking else self.validation_description
                self._batch_progress(batch_idx + 1, lambda: convert_inf(self.total_val_batches_current_dataloader),
                                     desc, time.monotonic())
            return
        super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._quiet(trainer):
            self._close_batch_bar()
            self.reset_dataloader_idx_tracker()
            return
        super().on_validation_end(trainer, pl_module)

    # --- predict: quiet after fit, Lightning's for predict ----------------------------------------------------
    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._quiet(trainer):
            self._stage_start = time.monotonic()
            return
        super().on_predict_start(trainer, pl_module)

    def on_predict_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int,
                               dataloader_idx: int = 0) -> None:
        if self._quiet(trainer):
            self._current_eval_dataloader_idx = dataloader_idx
            return
        super().on_predict_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)

    def on_predict_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._quiet(trainer):
            if self.is_enabled and self._terminal:
                self._batch_progress(batch_idx + 1, lambda: convert_inf(self.total_predict_batches_current_dataloader),
                                     self.predict_description, time.monotonic())
            return
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._quiet(trainer):
            self._quiet_predict = False
            self._close_batch_bar()
            self.reset_dataloader_idx_tracker()
            return
        super().on_predict_end(trainer, pl_module)

    # --- Lightning's bars, refreshed at most every refresh_seconds ----------------------------------------------
    def _should_update(self, current: int, total: int) -> bool:
        if not super()._should_update(current, total):
            return False
        now = time.monotonic()
        if current != total and now - self._last_draw < self.refresh_seconds:
            return False
        self._last_draw = now
        return True

    def print(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        """``LightningModule.print``: a line above the bars (Lightning's drops it when no bar is drawn)."""
        write_line(sep.join(map(str, args)), kwargs.get("file") or sys.stdout)


class _AboveBars(logging.Handler):
    """A console handler's records, written above the progress bars (see :func:`lit_regression.errors.write_line`)."""

    def __init__(self, original: logging.StreamHandler) -> None:
        super().__init__(original.level)
        self.original = original
        self.setFormatter(original.formatter)
        self.filters = original.filters

    def emit(self, record: logging.LogRecord) -> None:
        try:
            write_line(self.format(record), self.original.stream)
        except Exception:
            self.handleError(record)
