"""Where the per-epoch time of ``lit-regression fit --config configs/line_linear.yaml`` goes, and what CLI flags
save: ``.venv/bin/python benchmarks/profile_fit.py [--instrument] [--ablate] [--io] [--cprofile]``.

* ``--instrument``: wraps the Lightning loop stages, hooks, logging, checkpoint writing and lit_regression's
  callbacks with ``time.perf_counter`` timers, runs fits of N1 and N2 epochs and prints each timer's
  ``(time(N2) - time(N1)) / (N2 - N1)`` in ms per epoch (so set-up and the end of ``fit`` cancel), indented by
  nesting (a timer's time includes the timers below it).
  ``--bare`` puts the same timers on the bare LightningModule of ``plain_line.train_bare_lightning`` (the same
  maths, no logger, checkpoints, metrics or callbacks): the floor that ``make bench``'s per-epoch figure divides by.
* ``--ablate``: per-epoch cost of fits with CLI flags that switch overhead off, interleaved with the unchanged
  fit and the bare LightningModule, as ratios. Measured inside each fit (trimmed mean of the start-to-start epoch
  durations after the first ``--skip`` epochs), which is less sensitive to other processes' load than whole-fit
  differences.
* ``--io``: milliseconds of one checkpoint write: ``atomic_torch_save`` (temporary file, rename), the same with
  ``fsync`` before the rename, and ``torch.save``, on the CLI's real checkpoint dict.
* ``--cprofile``: cProfile of the same N1/N2 fits, per-epoch difference per function (cProfile's overhead
  inflates Python-heavy code about two-fold: use it to find names, the timers for sizes).

What remains (Intel Xeon, 2 cores; ms per epoch). The bare LightningModule takes 0.90-0.96: Lightning's
loop, with a validation every epoch, is 0.78 of it over the plain PyTorch loop. Inside a fit of the seed config
(``--ablate``) an epoch takes 1.70 (1.8x the bare module); ``make bench`` measures 2.04 (2.25x) because its
whole-fit difference between 50 and 250 epochs also counts what grows with the epochs outside them: the
TensorBoard records written (about 0.1) and the checkpoints of the improving epochs 50 to 115 built in memory
(0.12: Lightning's ``dump_checkpoint``, 0.23 ms each, 60% of it the loops' state dict through
``dataclasses.asdict``). Drawing the loss curves at the end takes 0.18-0.32 s for 50, 250 or 1000 epochs alike.
Of the 0.8 the fit adds inside the epochs: validation 0.45 (``--trainer.check_val_every_n_epoch 10`` brings
an epoch to the bare module's cost: the metric update and compute with torchmetrics' wrappers, about 0.07, the
epoch's logging into the trainer's metric dicts, and the validation hooks of four callbacks); the training step's
loss metric, the convergence and non-finite checks 0.15; the checkpoint callback's ranking 0.05.

Removed on the way, in ms per epoch inside a fit (``--ablate``'s measure, each step against the bare module
measured beside it): 5.8 with a ``last.ckpt`` written every epoch; 4.2 with checkpoints bounded by time and the
best held in memory; 3.3 with the metric objects out of the module tree (every ``train()``, ``eval()`` and
parameter walk visited and hashed them), one metric object per stage and no penalty node in the graph without
l1/l2; 2.8 with one logger record per epoch and a checkpoint callback that skips epochs with nothing to rank;
2.3 with records handed to TensorBoard's writer once a second (its thread woke at every epoch); 2.2 with one metric
state, one sync and the values worked out in Python floats; 1.9 with the hooks a callback leaves alone not
dispatched (``lit_regression/hooks.py``); 1.7 with train metrics off by default, the checkpoint callback's key
built once, and smaller items.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import plain_line  # noqa: E402
import run  # noqa: E402


def _fit(epochs: int, extra: tuple[str, ...] = ()) -> float:
    root = tempfile.mkdtemp(prefix="bench_prof_")
    try:
        start = time.perf_counter()
        run.lit_fit(epochs, root, extra=extra)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- timers -----------------------------------------------------------------------------------------------------
class Timers:
    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.active: set[str] = set()
        self.order: list[tuple[int, str]] = []

    def wrap(self, owner, attr: str, label: str, depth: int) -> None:
        original = getattr(owner, attr, None)
        if original is None:
            print(f"(no {owner.__name__}.{attr} in this version: not timed)")
            return
        self.order.append((depth, label))
        timers = self

        def timed(*args, **kwargs):
            if label in timers.active:  # recursion: count the outermost call only
                return original(*args, **kwargs)
            timers.active.add(label)
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                timers.total[label] += time.perf_counter() - start
                timers.calls[label] += 1
                timers.active.discard(label)

        timed.__wrapped__ = original
        setattr(owner, attr, staticmethod(timed) if isinstance(owner.__dict__.get(attr), staticmethod) else timed)

    def snapshot(self) -> tuple[dict, dict]:
        return dict(self.total), dict(self.calls)


def install_timers() -> Timers:
    import lightning.pytorch.callbacks.model_checkpoint as mc
    import torchmetrics
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.core.optimizer import LightningOptimizer
    from lit_regression.logger import RunLogger
    from lightning.pytorch.loops.evaluation_loop import _EvaluationLoop
    from lightning.pytorch.loops.fetchers import _PrefetchDataFetcher
    from lightning.pytorch.loops.fit_loop import _FitLoop
    from lightning.pytorch.loops.optimization.automatic import _AutomaticOptimization
    from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop
    from lightning.pytorch.strategies import Strategy
    from lightning.pytorch.trainer.connectors.checkpoint_connector import _CheckpointConnector
    from lightning.pytorch.trainer.connectors.logger_connector.logger_connector import _LoggerConnector
    from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultCollection, _ResultMetric

    import lit_regression.checkpointing as ck
    from lit_regression.callbacks.finite import FiniteCheck
    from lit_regression.callbacks.plots import Plots
    from lit_regression.models.base import LitModel

    t = Timers()
    w = t.wrap
    w(_FitLoop, "on_advance_start", "fit loop: epoch start (data setup, set_epoch, on_train_epoch_start)", 0)
    w(_FitLoop, "advance", "fit loop: training epoch (batches + validation)", 0)
    w(_TrainingEpochLoop, "advance", "training batch (fetch, hooks, step)", 1)
    w(_AutomaticOptimization, "run", "optimization: closure, backward, optimizer step, hooks", 2)
    w(LitModel, "training_step", "LitModel.training_step (forward, loss, metric update)", 3)
    w(torchmetrics.MetricCollection, "update", "MetricCollection.update (MAE, MSE, RMSE, R2; train and val)", 4)
    w(Strategy, "backward", "backward", 3)
    w(LightningOptimizer, "step", "optimizer step (runs the closure: includes the two above)", 3)
    w(_PrefetchDataFetcher, "__iter__", "data fetcher iter (TensorBatches: permutation, index_select, 1st batch)", 2)
    w(_PrefetchDataFetcher, "__next__", "data fetcher next (TensorBatches slices)", 2)
    w(FiniteCheck, "on_train_batch_end", "FiniteCheck.on_train_batch_end (ours)", 2)
    w(_TrainingEpochLoop, "on_advance_end", "after the batch: validation, epoch-end checks", 1)
    w(_EvaluationLoop, "run", "validation loop run", 2)
    w(_EvaluationLoop, "setup_data", "val: setup_data", 3)
    w(_EvaluationLoop, "reset", "val: reset", 3)
    w(_EvaluationLoop, "_on_evaluation_start", "val: on_validation_start hooks", 3)
    w(_EvaluationLoop, "_on_evaluation_epoch_start", "val: on_validation_epoch_start hooks", 3)
    w(_EvaluationLoop, "_evaluation_step", "val: validation_step (+ batch hooks)", 3)
    w(_EvaluationLoop, "_on_evaluation_epoch_end", "val: on_validation_epoch_end (our metrics, logged)", 3)
    w(_EvaluationLoop, "on_run_end", "val: on_run_end (logger, on_validation_end hooks, model.train())", 3)
    w(_LoggerConnector, "log_eval_end_metrics", "val: logger connector log_eval_end_metrics", 4)
    w(_EvaluationLoop, "_on_evaluation_end", "val: on_validation_end hooks", 4)
    w(_EvaluationLoop, "_on_evaluation_model_train", "val: back to train mode (model.train())", 4)
    w(_EvaluationLoop, "_on_evaluation_model_eval", "val: model.eval()", 3)
    w(_FitLoop, "on_advance_end", "fit loop: epoch end (on_train_epoch_end: our metrics, checkpoint, logger)", 0)
    w(LitModel, "_log_epoch", "LitModel._log_epoch (metric compute/reset, logging), train and val", 1)
    w(LightningModule, "log_dict", "LightningModule.log_dict (validate/test only)", 2)
    w(_ResultCollection, "log", "_ResultCollection.log (self.log storage)", 3)
    w(_ResultMetric, "to", "_ResultMetric.to (apply_to_collection over its __dict__)", 4)
    w(_ResultCollection, "update_metrics", "_ResultCollection.update_metrics", 4)
    w(torchmetrics.MetricCollection, "compute", "MetricCollection.compute", 2)
    w(torchmetrics.MetricCollection, "reset", "MetricCollection.reset", 2)
    w(_LoggerConnector, "update_eval_epoch_metrics", "logger connector: eval epoch metrics", 1)
    w(_LoggerConnector, "update_train_epoch_metrics", "logger connector: train epoch metrics", 1)
    w(_LoggerConnector, "update_train_step_metrics", "logger connector: train step metrics (log_every_n_steps)", 1)
    w(RunLogger, "log_metrics", "RunLogger.log_metrics (one TensorBoard event)", 2)
    w(mc.ModelCheckpoint, "on_validation_end", "ModelCheckpoint.on_validation_end (top-k + last)", 1)
    for name in dir(ck):  # lit_regression's own checkpoint callback, if it overrides the hook
        cls = getattr(ck, name)
        if (isinstance(cls, type) and issubclass(cls, mc.ModelCheckpoint) and cls.__module__ == ck.__name__
                and "on_train_epoch_end" in cls.__dict__):
            w(cls, "on_train_epoch_end", f"{name}.on_train_epoch_end (ours: top-k and last.ckpt)", 1)
    w(mc.ModelCheckpoint, "on_train_epoch_end", "ModelCheckpoint.on_train_epoch_end (top-k)", 2)
    w(Trainer, "save_checkpoint", "Trainer.save_checkpoint (every write)", 2)
    w(_CheckpointConnector, "dump_checkpoint", "dump_checkpoint (build the dict)", 3)
    w(ck.RandomState, "state_dict", "RandomState.state_dict (ours)", 4)
    w(Strategy, "save_checkpoint", "strategy.save_checkpoint -> CheckpointIO", 3)
    w(ck, "atomic_torch_save", "atomic_torch_save (ours)", 4)
    w(os, "fsync", "os.fsync (only with fsync=True)", 5)
    w(os, "replace", "os.replace", 5)
    w(mc.ModelCheckpoint, "_remove_checkpoint", "ModelCheckpoint._remove_checkpoint", 2)
    w(mc.ModelCheckpoint, "_monitor_candidates", "ModelCheckpoint._monitor_candidates", 2)
    w(Plots, "on_train_epoch_start", "Plots.on_train_epoch_start (ours)", 1)
    w(Plots, "on_validation_end", "Plots.on_validation_end (ours)", 1)
    return t


def instrument(n1: int, n2: int, bigdata_rows: int | None = None, bare: bool = False) -> None:
    """Timers per epoch on the seed config, or with ``bigdata_rows`` on figure 3's data (benchmarks/bigdata.py,
    32 features, batch 65,536), or with ``bare`` on the bare LightningModule of the seed config's maths."""
    timers = install_timers()
    if bare:
        def fit(n: int) -> float:
            start = time.perf_counter()
            plain_line.train_bare_lightning(n)
            return time.perf_counter() - start
    elif bigdata_rows:
        import bigdata

        def fit(n: int) -> float:
            start = time.perf_counter()
            bigdata.lightning_epochs(bigdata_rows, 32, 65536, n)
            return time.perf_counter() - start

        bigdata.make_data(bigdata_rows, 32)
    else:
        fit = _fit
    fit(2 if bigdata_rows else 3)
    wall, snaps = {}, {}
    for n in (n1, n2):
        before = timers.snapshot()
        wall[n] = fit(n)
        after = timers.snapshot()
        snaps[n] = ({k: after[0].get(k, 0) - before[0].get(k, 0) for k in after[0]},
                    {k: after[1].get(k, 0) - before[1].get(k, 0) for k in after[1]})
    d = n2 - n1
    total = (wall[n2] - wall[n1]) / d
    print(f"\nper-epoch wall time (instrumented): {1e3 * total:.2f} ms ({n1} -> {n2} epochs)\n")
    print(f"{'ms/epoch':>9} {'share':>6} {'calls/ep':>8}  stage")
    for depth, label in timers.order:
        ms = 1e3 * (snaps[n2][0].get(label, 0) - snaps[n1][0].get(label, 0)) / d
        calls = (snaps[n2][1].get(label, 0) - snaps[n1][1].get(label, 0)) / d
        print(f"{ms:9.3f} {100 * ms / (1e3 * total):5.1f}% {calls:8.2f}  {'  ' * depth}{label}")


# --- ablations --------------------------------------------------------------------------------------------------
ABLATIONS = {
    "as configured": (),
    "--trainer.logger false (no TensorBoard)": ("--trainer.logger", "false"),
    "--model.init_args.train_metrics true": ("--model.init_args.train_metrics", "true"),
    "--trainer.enable_progress_bar false": ("--trainer.enable_progress_bar", "false"),
    "--plots.enabled false": ("--plots.enabled", "false"),
    "--convergence.stop false": ("--convergence.stop", "false"),
    "--checkpoint.every_n_seconds 0 (last.ckpt every epoch)": ("--checkpoint.every_n_seconds", "0"),
    "--trainer.enable_checkpointing false": ("--trainer.enable_checkpointing", "false"),
    "AtomicCheckpointIO with fsync, every epoch": ("--checkpoint.every_n_seconds", "0", "--trainer.plugins",
                                                   "lit_regression.checkpointing.AtomicCheckpointIO",
                                                   "--trainer.plugins.fsync", "true"),
    "--trainer.check_val_every_n_epoch 10 (changes the run)": ("--trainer.check_val_every_n_epoch", "10"),
}


class EpochStarts:
    """A Lightning callback that notes ``time.perf_counter()`` when every epoch starts and when training ends."""

    def __new__(cls):
        import lightning as L

        class _EpochStarts(L.Callback):
            def __init__(self) -> None:
                self.starts: list[float] = []

            def on_train_epoch_start(self, trainer, pl_module) -> None:
                self.starts.append(time.perf_counter())

            def on_train_end(self, trainer, pl_module) -> None:
                self.starts.append(time.perf_counter())

        return _EpochStarts()


def trimmed_epoch_cost(starts: list[float], skip: int, trim: float = 0.1) -> float:
    """Mean epoch duration (start to start) after the first ``skip`` epochs, the ``trim`` fastest and slowest
    left out (load spikes from other processes)."""
    durations = sorted(b - a for a, b in zip(starts[skip:], starts[skip + 1 :]))
    k = int(len(durations) * trim)
    kept = durations[k : len(durations) - k] or durations
    return sum(kept) / len(kept)


def bare_lightning_starts(epochs: int) -> list[float]:
    """Epoch starts of ``plain_line.train_bare_lightning`` (the same maths as a bare LightningModule)."""
    import lightning as L

    timer = EpochStarts()
    original = L.Trainer.__init__

    def with_timer(self, *args, **kwargs):
        original(self, *args, **{**kwargs, "callbacks": [*(kwargs.get("callbacks") or []), timer]})

    L.Trainer.__init__ = with_timer
    try:
        plain_line.train_bare_lightning(epochs)
    finally:
        L.Trainer.__init__ = original
    return timer.starts


def ablate(epochs: int, skip: int, reps: int, names: list[str] | None) -> None:
    """Per-epoch cost measured inside each fit (start-to-start epoch durations, trimmed mean after ``skip``
    epochs), one fit per variant per repetition, variants and the bare LightningModule interleaved; ratios per
    repetition, then medians."""
    variants = {}
    for name, extra in ABLATIONS.items():
        if names and name != "as configured" and not any(n in name for n in names):
            continue
        try:
            _fit(3, extra)
        except BaseException as err:  # noqa: BLE001 - SystemExit from the parser, Misconfiguration, ...
            print(f"{name}: does not run ({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''})")
            continue

        def lit(extra=extra) -> list[float]:
            timer = EpochStarts()
            root = tempfile.mkdtemp(prefix="bench_prof_")
            try:
                run.lit_fit(epochs, root, extra=extra, callbacks=[timer])
            finally:
                shutil.rmtree(root, ignore_errors=True)
            return timer.starts

        variants[name] = lit
    variants["bare LightningModule"] = lambda: bare_lightning_starts(epochs)
    costs: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(reps):
        for name in run.rotated(list(variants), rep):
            costs[name].append(trimmed_epoch_cost(variants[name](), skip))
    base, ref = costs["as configured"], costs["bare LightningModule"]
    print(f"\nper-epoch cost inside {epochs}-epoch fits (epochs {skip}+, trimmed mean of start-to-start durations), "
          f"{reps} interleaved repetitions, medians of per-repetition ratios\n")
    print(f"{'ms/epoch':>9} {'saved ms':>8} {'vs as configured':>16} {'vs bare LightningModule':>24}  variant")
    for name, c in costs.items():
        r_base = statistics.median([a / b for a, b in zip(c, base)])
        r_bare = statistics.median([a / b for a, b in zip(c, ref)])
        saved = 1e3 * (statistics.median(base) - statistics.median(c))
        print(f"{1e3 * statistics.median(c):9.3f} {saved:8.3f} {r_base:16.2f} {r_bare:24.2f}  {name}")


# --- one checkpoint write ---------------------------------------------------------------------------------------
def io_cost(reps: int = 200) -> None:
    import torch

    from lit_regression.checkpointing import atomic_torch_save

    root = tempfile.mkdtemp(prefix="bench_io_")
    try:
        run.lit_fit(5, root)
        path = next(Path(root).rglob("last.ckpt"))
        checkpoint = torch.load(path, weights_only=True)
        size = path.stat().st_size
        target = os.path.join(root, "x.ckpt")
        writers = {"atomic_torch_save (temporary file, rename)":
                   lambda: atomic_torch_save(checkpoint, target, fsync=False, clean=False),
                   "atomic_torch_save with fsync": lambda: atomic_torch_save(checkpoint, target, clean=False),
                   "torch.save": lambda: torch.save(checkpoint, target)}
        times = {k: [] for k in writers}
        for _ in range(reps):
            for name, fn in writers.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        print(f"\none write of the CLI's checkpoint ({size:,} bytes), median of {reps}:")
        for name, t in times.items():
            print(f"  {1e3 * statistics.median(t):7.3f} ms  {name}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def cprofile(n1: int, n2: int, top: int) -> None:
    import cProfile
    import pstats

    _fit(3)
    stats = {}
    for n in (n1, n2):
        profile = cProfile.Profile()
        profile.enable()
        _fit(n)
        profile.disable()
        stats[n] = pstats.Stats(profile).stats
    d = n2 - n1
    rows = []
    for func, v in stats[n2].items():
        v0 = stats[n1].get(func, (0, 0, 0, 0, None))
        rows.append((func, (v[1] - v0[1]) / d, 1e3 * (v[2] - v0[2]) / d, 1e3 * (v[3] - v0[3]) / d))
    print(f"\ncProfile, per epoch ({n1} -> {n2}): cumulative ms, own ms, calls")
    for func, calls, own, cum in sorted(rows, key=lambda r: -r[3])[:top]:
        where = f"{func[0].split('site-packages/')[-1]}:{func[1]}({func[2]})"
        print(f"{cum:8.3f} {own:8.3f} {calls:7.1f}  {where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instrument", action="store_true")
    parser.add_argument("--ablate", nargs="*", metavar="NAME", help="all variants, or those whose name has NAME")
    parser.add_argument("--io", action="store_true")
    parser.add_argument("--bare", action="store_true", help="--instrument the bare LightningModule instead")
    parser.add_argument("--bigdata", type=int, metavar="ROWS",
                        help="--instrument on figure 3's data with ROWS rows (e.g. 2000000; use small --n1/--n2)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--n1", type=int, default=50)
    parser.add_argument("--n2", type=int, default=300)
    parser.add_argument("--reps", type=int, default=4, help="repetitions of --ablate")
    parser.add_argument("--epochs", type=int, default=200, help="epochs of each --ablate fit")
    parser.add_argument("--skip", type=int, default=20, help="first epochs of each --ablate fit left out")
    parser.add_argument("--top", type=int, default=60)
    args = parser.parse_args()
    run.quiet()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if not (args.instrument or args.ablate is not None or args.io or args.cprofile):
        args.instrument = args.io = True
    if args.io:
        io_cost()
    if args.instrument:
        instrument(args.n1, args.n2, args.bigdata, args.bare)
    if args.cprofile:
        cprofile(args.n1, args.n2, args.top)
    if args.ablate is not None:
        ablate(args.epochs, args.skip, args.reps, args.ablate)


if __name__ == "__main__":
    main()
