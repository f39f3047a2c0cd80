"""Checkpoints that survive a crash and resume exactly.

* :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file in the target's folder and renames it
  over the target with ``os.replace``: a process killed during a write leaves the previous ``last.ckpt`` in
  place, never a truncated one (``fsync=True`` also flushes each file to the disk before the rename).
* :class:`ResumableCheckpoint` (the CLI's ``--checkpoint``) writes ``last.ckpt`` at the end of an epoch at most
  every ``every_n_seconds`` (30), at the end of ``fit`` and when SIGTERM or Ctrl-C stops the run (after the epoch
  in progress), holds a new best checkpoint in memory until then, and makes ``save_last="link"`` atomic too.
* :class:`RandomState` keeps the global random states (torch, numpy, python) in the checkpoint and puts them
  back when training resumes, so that anything random in training (dropout, say) continues as it would have.
  The data order needs nothing: :class:`~lit_regression.batches.TensorBatches` shuffles from ``seed + epoch``
  and Lightning calls its ``set_epoch`` with the restored epoch.
* :func:`resolve_resume` turns ``--ckpt_path last`` into the newest ``last.ckpt`` of an earlier run under the
  same root (each run logs into a fresh run folder, where Lightning alone would only look into the new, empty one
  and silently start from scratch), and says which run folder a ``fit`` resumes: **a resumed fit goes on logging
  and checkpointing in the run folder of the ``last.ckpt`` it resumes** (``RUN/checkpoints/last.ckpt``), so that
  its curves continue the killed run's curves and its ``last.ckpt`` replaces the killed run's. The resumed run's
  config is saved beside the first one as ``config-resume-K.yaml``. The steps that the killed run logged after
  its last checkpoint are logged again, with the same values (read the curves by step). Before a checkpoint is
  written the loggers save (TensorBoard's records reach the file), and an epoch's record goes to them when its
  validation ends, so the curves of a killed run reach its last checkpoint. One gap remains: without validation
  rows, an epoch's record goes to the loggers just after that epoch's checkpoint is written, so a kill in that
  instant loses the points of that one epoch.
* :func:`check_compatible` refuses, with one message, a checkpoint whose weights do not fit the model.
"""

from __future__ import annotations

import math
import os
import pickle
import random
import re
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn

from lit_regression.errors import InputError, say
from lit_regression.files import atomic
from lit_regression.hooks import OwnHooks

LAST = re.compile(r"^last(-v\d+)?\.ckpt$")


# --- atomic writes --------------------------------------------------------------------------------------------
def _is_local(path) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


def atomic_torch_save(obj: Any, path: str, fsync: bool = True, clean: bool = True) -> None:
    """``torch.save(obj, path)`` such that ``path`` holds either its old content or the complete new one.

    ``fsync`` flushes the new file to the disk before the rename (survives a power failure, not only a killed
    process); ``clean`` first removes temporary files of ``path`` that killed writers left behind."""
    with atomic(path, fsync=fsync, clean=clean) as f:
        torch.save(obj, f)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local writes are atomic: temporary file in the same folder, then ``os.replace``.
    Lightning's own writer goes through a temporary file in the system's temp folder and ``shutil.move``, which
    copies (not renames) where that is another file system. Remote paths (``s3://`` ...) are left to Lightning.

    Args:
        fsync: also flush every checkpoint to the disk before the rename, so that a power failure (not only a
            killed process) leaves a complete file. Off by default, as in ``torch.save`` and Lightning: the CLI
            writes ``last.ckpt`` after every epoch, and on the seed data one ``fsync`` costs about as much as the
            rest of the epoch (``benchmarks/profile_fit.py --io``). Turn it on with
            ``--trainer.plugins lit_regression.checkpointing.AtomicCheckpointIO --trainer.plugins.fsync true``.
    """

    def __init__(self, fsync: bool = False) -> None:
        super().__init__()
        self.fsync = fsync
        self._cleaned: set[str] = set()  # paths whose stale temporaries this writer has removed

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = str(path).removeprefix("file://")
        clean = path not in self._cleaned
        atomic_torch_save(checkpoint, path, fsync=self.fsync, clean=clean)
        self._cleaned.add(path)


def with_atomic_io(plugins) -> list:
    """The Trainer's ``plugins`` with :class:`AtomicCheckpointIO` added, unless one of them is a CheckpointIO."""
    if plugins is None:
        plugins = []
    elif not isinstance(plugins, (list, tuple)):
        plugins = [plugins]
    plugins = list(plugins)
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    return plugins


class Interrupted(Exception):
    """A fit stopped by SIGTERM or Ctrl-C after its epoch finished and ``last.ckpt`` was written. ``lit-regression``
    prints the message alone and exits with ``128 + signal``, as a shell reports a process ended by that signal."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


class ResumableCheckpoint(OwnHooks, ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is the state at the end of a finished epoch, written on a time
    schedule, at the end of ``fit`` and when the run is interrupted; a resume from it is bit-identical.

    * **Time-bounded writes.** ``last.ckpt`` is written at the end of the first epoch, then at the end of an epoch
      when ``every_n_seconds`` have passed since the last write, at the last epoch of ``fit``, and when SIGTERM or
      Ctrl-C stops the run; a SIGKILL or a power failure loses at most ``every_n_seconds`` of training. A new best
      checkpoint (``epoch=E-step=S.ckpt`` on ``val_loss``) is built when the epoch ends and held in memory until the
      next write, so an epoch that improves costs no disk write either; the best one it replaces stays on disk
      until then, and the held one is written at any exception too (a second Ctrl-C, a crash). Lightning 2.6
      alone writes ``last.ckpt`` only along with a new best, so after the best epoch it would fall behind the run;
      ``every_n_seconds: 0`` writes both at every epoch end.
    * **SIGTERM and Ctrl-C** (SLURM's pre-emption, ``kill``, a terminal): the epoch in progress finishes, the best
      checkpoint and ``last.ckpt`` are written, and ``fit`` raises :class:`Interrupted` (``lit-regression`` exits
      with 143 or 130). A second Ctrl-C stops at once, as without this callback (Lightning's own handling), with
      the checkpoints of the last write. Several processes (DDP) decide together at each epoch end.
    * **A non-finite loss** (:class:`~lit_regression.callbacks.finite.FiniteCheck`): the best checkpoint held in
      memory, a good state, is written (:meth:`save_pending`); the diverged state never is.
    * ``save_last="link"`` replaces ``last.ckpt`` atomically: the symlink (or, where links are not allowed, the
      copy) is made under a temporary name and renamed over ``last.ckpt``, where Lightning removes ``last.ckpt``
      first and then links, leaving no ``last.ckpt`` at all in between. Full saves are atomic through
      :class:`AtomicCheckpointIO`.

    Args:
        every_n_seconds: write ``last.ckpt`` (and a best checkpoint held in memory) at most this often, in seconds
            of training, besides the end of ``fit`` and an interruption; 0 writes at the end of every epoch.
        **kwargs: the arguments of Lightning's ``ModelCheckpoint`` (``monitor``, ``save_top_k``, ``save_last``,
            ``every_n_epochs`` ...).
    """

    _unranked = False  # no validation rows: nothing to rank the checkpoints by, last.ckpt only

    def __init__(self, every_n_seconds: float = 30.0, **kwargs: Any) -> None:
        if not every_n_seconds >= 0:  # also nan
            raise InputError(f"checkpoint every_n_seconds={every_n_seconds!r} is invalid: expected a number >= 0 "
                             "(0: write at the end of every epoch)")
        super().__init__(**kwargs)
        self.every_n_seconds = float(every_n_seconds)
        self._pending: dict[str, dict] = {}  # best checkpoints built but not written yet: path -> checkpoint
        self._stale: list[str] = []  # checkpoints on disk that held ones replace: deleted when those are written
        self._holding = False  # _save_checkpoint builds into _pending instead of writing
        self._unsaved = False  # an epoch has ended since last.ckpt was written
        self._written_at = -math.inf  # time.monotonic() of the last write
        self._signal: int | None = None  # SIGTERM or SIGINT received: stop at the end of this epoch
        self._handlers: dict[int, Any] = {}  # the signal handlers ours replaced, to restore
        self._trainer = None
        self._at_epoch_end: bool | None = None  # _should_save_on_train_epoch_end, once per fit

    @property
    def state_key(self) -> str:
        """``ModelCheckpoint.state_key``, built once per set of the values it names: Lightning asks for it at every
        hook call of every callback (a repr of a dict: ~3 us, fifteen times an epoch)."""
        values = (self.monitor, self.mode, self._every_n_train_steps, self._every_n_epochs, self._train_time_interval)
        if getattr(self, "_state_key_of", None) != values:
            self._state_key_of, self._state_key = values, super().state_key
        return self._state_key

    # --- the schedule -----------------------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        """With nothing to monitor (no validation rows, or validation switched off) keep ``last.ckpt`` only, and
        say so once, where Lightning would warn at every epoch that ``val_loss`` was never logged. Start the clock
        of the schedule and take over SIGTERM and SIGINT."""
        super().on_train_start(trainer, pl_module)
        no_rows = trainer.val_dataloaders is not None and sum(trainer.num_val_batches) == 0
        self._unranked = bool(self.monitor and self.save_top_k != 0
                              and (trainer.limit_val_batches == 0 or no_rows))
        if self._unranked:
            say(f"no validation rows: checkpoints are not ranked by {self.monitor}; only last.ckpt is kept"
                + ("" if self.save_last else " (--checkpoint.save_last is off: none)"))
        self._written_at = -math.inf  # the first epoch's end writes: from then on a run always has a last.ckpt
        self._signal = None
        self._at_epoch_end = None
        if not trainer.fast_dev_run:
            self._take_signals(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        """Top-k (``ModelCheckpoint``'s rule, into memory unless writes are every epoch), then, when it is time,
        the end of fit or a stop was asked for, write what is held and ``last.ckpt``; with one set of monitor
        candidates for all."""
        stop, time_due = self._stop_and_time(trainer)
        if not stop and (self._last_global_step_saved == trainer.global_step  # what Lightning's skip checks, as
                         or trainer.fast_dev_run or trainer.state.fn is not TrainerFn.FITTING):  # no sanity check
            return
        due = self._every_n_epochs >= 1 and (trainer.current_epoch + 1) % self._every_n_epochs == 0
        if self._at_epoch_end is None:  # fixed for the fit once validation has been set up
            self._at_epoch_end = self._should_save_on_train_epoch_end(trainer)
        rank = due and self._at_epoch_end
        write = stop or self._final_epoch(trainer) or (due and time_due)
        self._unsaved = True
        if not (write or (rank and self._may_rank(trainer))):  # most epochs: no new best, no write due
            return
        candidates = self._monitor_candidates(trainer)
        if rank:
            self._holding = self.every_n_seconds > 0
            try:
                self._save_topk_checkpoint(trainer, candidates)
            finally:
                self._holding = False
        if write:
            self._write(trainer, candidates)
        if stop:
            self._interrupt(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        """``ModelCheckpoint.on_validation_end``, which saves when checkpoints are not taken at the epoch's end;
        skipped at once when they are (known after the first epoch end): it would work that out again every epoch."""
        if not self._at_epoch_end:
            super().on_validation_end(trainer, pl_module)

    def _may_rank(self, trainer) -> bool:
        """Whether ``_save_topk_checkpoint`` may keep this epoch: ``ModelCheckpoint.check_monitor_top_k`` on the
        monitored value alone, before the monitor candidates are copied for it."""
        if self._unranked or self.save_top_k == 0:
            return False
        current = trainer.callback_metrics.get(self.monitor) if self.monitor else None
        return current is None or self.check_monitor_top_k(trainer, current)

    def on_train_end(self, trainer, pl_module) -> None:
        """Write what the schedule has not written yet (a fit that ended another way than at its last epoch:
        ``max_time``, a callback), except under ``fast_dev_run``, where Lightning suppresses checkpointing."""
        self._release_signals()
        if not trainer.fast_dev_run and (self._unsaved or self._pending):
            self._write(trainer, self._monitor_candidates(trainer))

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """Lightning's (``save_on_exception``), after writing the best checkpoints held in memory: states of
        finished epochs, good whatever went wrong since (a second Ctrl-C, a crash in a callback)."""
        self._release_signals()
        if not trainer.fast_dev_run:
            self.save_pending(trainer)
        super().on_exception(trainer, pl_module, exception)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._release_signals()

    def _final_epoch(self, trainer) -> bool:
        """Whether this epoch is the fit's last: ``max_epochs``, ``max_steps``, or a stop (early stopping,
        convergence) once ``min_epochs`` and ``min_steps`` are met; as Lightning's fit loop decides after it."""
        loop = trainer.fit_loop
        if loop.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= loop.max_epochs:
            return True
        if loop.max_steps not in (None, -1) and trainer.global_step >= loop.max_steps:
            return True
        return bool(trainer.should_stop and trainer.current_epoch + 1 >= (loop.min_epochs or 0)
                    and trainer.global_step >= (loop.min_steps or 0))

    def _write(self, trainer, candidates: dict[str, Any]) -> None:
        """Write the best checkpoints held in memory, then ``last.ckpt`` (which names them). The loggers save
        first (TensorBoard: the records kept since the last write, flushed to the file), so that after a kill
        the curves reach at least as far as the checkpoint a resume starts from."""
        for logger in trainer.loggers:
            logger.save()
        self.save_pending(trainer)
        if self._unsaved:
            self._save_last_checkpoint(trainer, candidates)
        self._unsaved = False
        self._written_at = time.monotonic()

    def save_pending(self, trainer) -> str:
        """Write the best checkpoints held in memory; the path of the newest checkpoint on disk (``""``: none)."""
        pending, self._pending = self._pending, {}
        stale, self._stale = self._stale, []
        for filepath, checkpoint in pending.items():
            if checkpoint is not None:  # the first process's (the strategy writes on that one only)
                trainer.strategy.save_checkpoint(checkpoint, filepath)
        if pending:
            trainer.strategy.barrier("ResumableCheckpoint.save_pending")
        for filepath in stale:  # the checkpoints that the ones just written replace
            super()._remove_checkpoint(trainer, filepath)
        written = [p for p in (self.last_model_path, *pending) if p and os.path.exists(p)]
        return max(written, key=os.path.getmtime, default="")

    # Lightning's ModelCheckpoint writes inside _save_checkpoint and deletes in _remove_checkpoint; it has no
    # public hook to build a checkpoint without writing it, so these two are overridden to hold the best one in
    # memory (Trainer.save_checkpoint is dump_checkpoint followed by strategy.save_checkpoint: save_pending does
    # the second half later).
    def _save_checkpoint(self, trainer, filepath: str) -> None:
        if not self._holding:
            return super()._save_checkpoint(trainer, filepath)
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(self.save_weights_only)
        # the first process writes, and keeps a copy (the state dicts share the live tensors); the others keep
        # the path only, so that every process takes part in the writes' barrier alike
        self._pending[filepath] = _copied(checkpoint) if trainer.is_global_zero else None
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath

    def _remove_checkpoint(self, trainer, filepath: str) -> None:
        if filepath in self._pending:  # never written: nothing to delete
            del self._pending[filepath]
        elif self._holding:  # replaced by one held in memory: deleted once that one is written
            self._stale.append(filepath)
        else:
            super()._remove_checkpoint(trainer, filepath)

    def _save_topk_checkpoint(self, trainer, monitor_candidates) -> None:
        if not self._unranked:
            super()._save_topk_checkpoint(trainer, monitor_candidates)

    # --- SIGTERM and Ctrl-C -----------------------------------------------------------------------------------
    def _take_signals(self, trainer) -> None:
        if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
            return
        self._trainer = trainer
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                self._handlers[signum] = signal.signal(signum, self._on_signal)
            except (ValueError, OSError):  # a platform without it
                pass

    def _release_signals(self) -> None:
        handlers, self._handlers = self._handlers, {}
        for signum, handler in handlers.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._trainer = None

    def _on_signal(self, signum: int, frame) -> None:
        """Ask for a stop at the end of the epoch (nothing is printed here: a handler may run in the middle of a
        print). A second Ctrl-C stops at once; SIGTERM again changes nothing (SLURM and process groups may send
        it to a process twice)."""
        if self._signal is None:
            self._signal = signum
            launcher = getattr(getattr(self._trainer, "strategy", None), "launcher", None)
            if signum == signal.SIGTERM and launcher is not None:  # Lightning's own handler forwards it too
                launcher.kill(signum)
        elif signum == signal.SIGINT and self._signal == signal.SIGINT:
            self._release_signals()
            raise KeyboardInterrupt

    def _stop_and_time(self, trainer) -> tuple[bool, bool]:
        """Whether a stop was asked for, and whether ``every_n_seconds`` have passed since the last write. With
        several processes, as any of them says (one reduction an epoch): every process must stop and write at the
        same epoch, since a write holds collectives, or the others would wait for it forever."""
        stop = self._signal is not None
        due = time.monotonic() - self._written_at >= self.every_n_seconds
        if trainer.world_size > 1:
            flags = torch.tensor([float(stop), float(due)], device=trainer.strategy.root_device)
            flags = trainer.strategy.reduce(flags, reduce_op="sum")
            stop, due = bool(flags[0] > 0), bool(flags[1] > 0)
        return stop, due

    def _interrupt(self, trainer) -> None:
        signum = self._signal if self._signal is not None else signal.SIGTERM
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if self.save_last == "link":  # last.ckpt points to the newest top-k checkpoint, not to this epoch
            raise Interrupted(signum, f"stopped by {name} after epoch {trainer.current_epoch}; with "
                                      f"--checkpoint.save_last link, last.ckpt is {self._last_checkpoint_saved}: a "
                                      "resume with --ckpt_path last starts from there")
        where = f": {self.last_model_path}" if self.save_last and self.last_model_path else ""
        raise Interrupted(signum, f"stopped by {name} after epoch {trainer.current_epoch}; the checkpoint of that "
                                  f"epoch is written{where}. Resume with the same command and --ckpt_path last")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Lightning's, without its warning when the checkpoint was written into another folder: every ``validate``,
        ``test`` and ``predict`` (and a fit that branches off) logs into a fresh version folder, so the folders
        always differ there. As in Lightning, only ``best_model_path`` is taken over then."""
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            super().load_state_dict(state_dict)
        else:
            self.best_model_path = state_dict["best_model_path"]

    def _monitor_candidates(self, trainer) -> dict[str, Any]:
        """``ModelCheckpoint._monitor_candidates`` with each tensor cloned instead of the whole dict deep-copied
        (the same values, at a tenth of the cost)."""
        candidates = {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in trainer.callback_metrics.items()}
        epoch, step = candidates.get("epoch"), candidates.get("step")
        candidates["epoch"] = epoch.int() if torch.is_tensor(epoch) else torch.tensor(trainer.current_epoch)
        candidates["step"] = step.int() if torch.is_tensor(step) else torch.tensor(trainer.global_step)
        return candidates

    @staticmethod
    def _link_checkpoint(trainer, filepath: str, linkpath: str) -> None:
        if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
            folder = os.path.dirname(os.path.abspath(linkpath))
            tmp = os.path.join(folder, f".{os.path.basename(linkpath)}.{os.getpid()}.link.tmp")
            if os.path.lexists(tmp):
                os.remove(tmp)
            try:
                os.symlink(os.path.relpath(filepath, folder), tmp)
            except OSError:
                shutil.copy(filepath, tmp)
            if os.path.isdir(linkpath) and not os.path.islink(linkpath):
                shutil.rmtree(linkpath)
            os.replace(tmp, linkpath)
        trainer.strategy.barrier()


def _copied(state: Any) -> Any:
    """A checkpoint's nested dicts, lists and tuples with every tensor cloned (a quarter of the time of
    ``apply_to_collection``, which checks every node for dataclasses and named tuples that checkpoints lack)."""
    if torch.is_tensor(state):
        return state.detach().clone()
    if isinstance(state, dict):
        return {key: _copied(value) for key, value in state.items()}
    if type(state) in (list, tuple):
        return type(state)(_copied(value) for value in state)
    return state


# --- global random state --------------------------------------------------------------------------------------
class RandomState(OwnHooks, Callback):
    """Saves torch's, numpy's and python's global random states with every checkpoint (as tensors and plain
    values, so the checkpoint still loads with ``weights_only=True``) and restores them when a fit resumes, just
    before training starts again. In one process only: with several processes each has its own state, and only
    the first one's is written, so nothing is restored there."""

    def __init__(self) -> None:
        self._restore: dict | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        version, internal, gauss = random.getstate()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            # python's 625 state words as one tensor: pickling them one by one costs more than the model's weights
            "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restore = state_dict

    def on_train_start(self, trainer, pl_module) -> None:
        state, self._restore = self._restore, None
        if not state or trainer.world_size != 1:
            return
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                             n["cached_gaussian"]))
        python = state["python"]
        if isinstance(python, dict):
            python = (python["version"], python["internal"].tolist(), python["gauss"])
        version, internal, gauss = python  # older checkpoints: random.getstate() as it is
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


# --- what --ckpt_path means -----------------------------------------------------------------------------------
def find_last_checkpoint(root: str) -> str | None:
    """The most recently written ``last.ckpt`` (or ``last-vN.ckpt``) of any run under ``root`` (in a run folder's
    ``checkpoints``, at any depth: runs are ``ROOT/NAME/TIMESTAMP``, and NAME may hold a ``/``), or in
    ``ROOT/checkpoints`` (where runs with ``--trainer.logger false`` keep theirs)."""
    candidates = [path for path in Path(root).rglob("last*.ckpt")
                  if path.parent.name == "checkpoints" and LAST.match(path.name) and path.is_file()]
    if not candidates:
        return None
    return str(max(candidates, key=lambda p: (p.stat().st_mtime_ns, p.name)))


def find_best_checkpoint(last: str) -> str | None:
    """The best checkpoint of the run whose ``last.ckpt`` is ``last``: the ``best_model_path`` that its
    ModelCheckpoint state holds, looked up in ``last``'s own folder first (the path was saved relative to the
    working folder of the run, which need not be this one), else as saved. ``None`` if the run kept none."""
    callbacks = read_checkpoint(last).get("callbacks") or {}
    for key, state in callbacks.items():
        if not (isinstance(key, str) and "Checkpoint" in key and isinstance(state, dict)):
            continue
        best = state.get("best_model_path")
        if not best:
            continue
        for candidate in (os.path.join(os.path.dirname(last), os.path.basename(best)), best):
            if os.path.isfile(candidate):
                return candidate
    return None


BEST_FROM_LAST = " (the best checkpoint is read from the last.ckpt of the newest run)"


def find_checkpoint(which: str, root: str, purpose: str = "to load") -> str:
    """``--ckpt_path last``: the newest ``last.ckpt`` under ``root``; ``best``: the best checkpoint of that same
    (newest) run. Raises :class:`InputError` when there is none."""
    last = find_last_checkpoint(root)
    if last is None:
        raise InputError(
            f"ckpt_path={which!r}: there is no last.ckpt in a run folder under {root} "
            f"{purpose}{BEST_FROM_LAST if which == 'best' else ''}; give the checkpoint's path, or the "
            "--trainer.default_root_dir of the run"
        )
    if which == "last":
        return last
    best = find_best_checkpoint(last)
    if best is None:
        raise InputError(
            f"ckpt_path='best': the newest run ({os.path.dirname(os.path.dirname(last))}) kept no best checkpoint "
            "(it had no validation rows to rank them by, or checkpoint.save_top_k was 0); give --ckpt_path last "
            "or a checkpoint's path"
        )
    return best


def run_of(ckpt_path: str) -> str | None:
    """The run folder a checkpoint belongs to: ``RUN`` when ``ckpt_path`` is ``RUN/checkpoints/*.ckpt`` and ``RUN``
    was made by this package's CLI (it holds a ``config.yaml``), else ``None``."""
    path = Path(ckpt_path).resolve()
    run = path.parent.parent
    if path.parent.name != "checkpoints" or not any(run.glob("config*.yaml")):
        return None
    return str(run)


def run_under(run: str, root: str) -> tuple[str, str] | None:
    """``(name, version)`` of the run folder ``run`` as ``ROOT/NAME/VERSION`` under ``root``, or ``None`` when it
    lies elsewhere."""
    try:
        relative = os.path.relpath(Path(run).resolve(), Path(root).resolve())
    except ValueError:  # another drive
        return None
    if relative.startswith(os.pardir) or relative == os.curdir:
        return None
    name, version = os.path.split(relative)
    return name, version


def resolve_resume(subcommand: str | None, ckpt_path: str | None, root: str, own_logger: bool,
                   dirpath: str | None) -> tuple[str | None, str | None]:
    """``(ckpt_path, run)``: ``ckpt_path`` with ``last`` replaced by the newest ``last.ckpt`` under ``root``
    (``best`` by the best checkpoint of that run: :func:`find_checkpoint`), and the run folder that a resumed
    ``fit`` logs into (``None``: a fresh one). A fit resumes its run's folder from the run's ``last.ckpt`` only; one
    started from another checkpoint (the best epoch's, say) branches off into a fresh folder, whose curves would
    otherwise overwrite the run's own from that epoch on.

    Only where our logger, or none (``--trainer.logger false``: ``ROOT/checkpoints``), places the checkpoints (no
    other ``--trainer.logger`` and no ``--checkpoint.dirpath`` given); otherwise Lightning's own meaning of ``last``
    and ``best`` holds. Raises :class:`InputError` when ``last`` finds nothing, instead of Lightning's warning and
    a silent start from scratch, and when ``best`` finds nothing, where Lightning looks only at the checkpoints of
    the process it runs in."""
    if not ckpt_path or not own_logger or dirpath is not None:
        return ckpt_path, None
    if ckpt_path in ("last", "best"):
        ckpt_path = find_checkpoint(ckpt_path, root, "to resume from" if subcommand == "fit" else "to load")
    elif ckpt_path in ("hpc", "registry") or ckpt_path.startswith("registry:"):
        return ckpt_path, None
    resumes_a_run = subcommand == "fit" and LAST.match(os.path.basename(ckpt_path)) is not None
    return ckpt_path, run_of(ckpt_path) if resumes_a_run else None


def unused_path(path: str, own: set[str] | None = None) -> str:
    """``path``, or where another run's file (or folder) is already there, the first free ``stem-vN.ext`` beside
    it, as ``ModelCheckpoint`` names ``last-vN.ckpt``: a run never overwrites another's. ``own`` are the paths this
    writer wrote itself, which it may write again. Runs share a folder only with ``--trainer.logger false`` or a
    logger of a fixed version; otherwise each has its own."""
    if path in (own or ()) or not os.path.exists(path):
        return path
    stem, ext = os.path.splitext(path)
    k = 1
    while os.path.exists(f"{stem}-v{k}{ext}"):
        k += 1
    return f"{stem}-v{k}{ext}"


def resume_config_name(log_dir: str) -> str:
    """``config-resume-K.yaml``, K the first number not yet taken in ``log_dir``."""
    k = 1
    while os.path.exists(os.path.join(log_dir, f"config-resume-{k}.yaml")):
        k += 1
    return f"config-resume-{k}.yaml"


# --- reading a checkpoint -------------------------------------------------------------------------------------
def read_checkpoint(path: str) -> dict:
    """Load a checkpoint with ``weights_only=True``: tensors and plain values only; nothing in it runs."""
    if not os.path.isfile(path):
        raise InputError(f"ckpt_path={path!r}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err):  # a pickled class or function: unpickling it could run code
            name = str(err).split("GLOBAL ", 1)[-1].split()[0] if "GLOBAL " in str(err) else "an object"
            raise InputError(
                f"ckpt_path={path!r} is refused: it holds a pickled {name}, not only tensors and plain values, and "
                "loading it could run code (nothing in it was run). Only load checkpoints you trust."
            ) from None
        raise InputError(f"ckpt_path={path!r} is not a PyTorch checkpoint (it cannot be unpickled)") from None
    except Exception as err:  # noqa: BLE001 - garbage fails in many ways (RuntimeError, EOFError, KeyError, ...)
        raise InputError(f"ckpt_path={path!r} is not a PyTorch checkpoint (torch.load: {type(err).__name__}: {err})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise InputError(f"ckpt_path={path!r} is not a Lightning checkpoint: it has no 'state_dict'")
    return checkpoint


# --- does a checkpoint fit the model --------------------------------------------------------------------------
def _describe(hparams: dict | None, fallback: str) -> str:
    hparams = dict(hparams or {})
    name = str(hparams.pop("_class_path", fallback)).rsplit(".", 1)[-1]
    args = ", ".join(f"{k}={v!r}" for k, v in hparams.items()
                     if not k.startswith("_") and k in ("n_features", "n_outputs", "hidden", "form", "loss"))
    return f"{name}({args})" if args else name


def check_compatible(model: torch.nn.Module, checkpoint: dict) -> None:
    """Raise :class:`InputError` unless the checkpoint's ``state_dict`` has exactly the model's parameters and
    buffers, with the same shapes, and only finite values."""
    saved = checkpoint.get("state_dict")
    if not isinstance(saved, dict):
        raise InputError("the checkpoint holds no 'state_dict': it is not a checkpoint of a lit_regression model")
    own = model.state_dict()
    ours = _describe(dict(getattr(model, "hparams", {}), _class_path=type(model).__name__), type(model).__name__)
    theirs = _describe(checkpoint.get("hyper_parameters"), "another model")
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    if missing or unexpected:
        details = []
        if missing:
            details.append(f"the model has {', '.join(missing[:6])} which the checkpoint lacks")
        if unexpected:
            details.append(f"the checkpoint has {', '.join(unexpected[:6])} which the model lacks")
        raise InputError(
            f"the checkpoint holds a {theirs} but the model is {ours}: {'; '.join(details)}. Use the model the "
            "checkpoint was trained with (leave --model out: a checkpoint given as --ckpt_path supplies it)"
        )
    parameters = {name for name, _ in model.named_parameters()}
    # the weights first: their shapes say more than those of the buffers (the fitted scaling, the metrics)
    for key, value in sorted(own.items(), key=lambda item: item[0] not in parameters):
        other = saved[key]
        if not torch.is_tensor(other) or tuple(other.shape) != tuple(value.shape):
            shape = tuple(other.shape) if torch.is_tensor(other) else type(other).__name__
            raise InputError(
                f"the checkpoint holds a {theirs} but the model is {ours}: {key} has shape {shape} in the "
                f"checkpoint and {tuple(value.shape)} in the model. The data must have as many feature and "
                "target columns as the data the checkpoint was trained on"
            )
        if other.is_floating_point() and not bool(torch.isfinite(other).all()):
            raise InputError(
                f"the checkpoint's {key} holds non-finite values (nan or inf): it was saved from a run that "
                "diverged; use an earlier checkpoint"
            )
