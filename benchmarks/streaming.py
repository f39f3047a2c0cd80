"""Streaming Parquet (figure 7 of ``benchmarks/run.py``): ``TableDataModule`` with
``--data.streaming true`` against the in-memory path, on ``rows x 16`` float64 features ``x0..x15`` and a target
``y``.

Every fit is ``lit-regression fit`` (``LinearRegression``, SGD, batch 65,536, shuffled, 2 epochs, predictions,
plots and report off) in a fresh process (see :func:`fit_once`), which gives both the peak RSS of that process and
the seconds of each epoch inside the fit (:func:`bigdata.epoch_timer`).

* **Memory**: the streaming fit's peak RSS on a folder of 8 Parquet files minus the peak RSS of the same command
  on a 100-row folder (the "tiny run"), divided by the table as float32, features and target
  (``rows * 17 * 4`` bytes: what the in-memory path holds); the same for twice the rows.
* **Throughput**: the in-memory fit's seconds per epoch after the first (the same rows as one Parquet file: the
  in-memory path reads one file) over the streaming fit's, i.e. the streaming rows per second over the in-memory
  ones: decoding the Parquet files every epoch (``streaming``), and with ``--data.cache_dir`` (``cached``: the
  rows decoded in the first epoch read back from a scratch file in the later ones; its first epoch is shown
  too).
* **Time to the optimum**: the default solver (``newton``) on the streamed folder, stopped by the Convergence
  callback, its passes (training epochs with their validation, from the first epoch's start to the end of
  training) over one decoding epoch of the SGD streaming fit; the end-of-fit report (on for this kind alone)
  says how far from the optimum it stopped.

The files are written once (seeded numpy through pyarrow, row groups of 131,072 rows, file by file) into
``benchmarks/results/streaming/`` (git-ignored) and reused.

    .venv/bin/python benchmarks/streaming.py [--rows 4000000] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from statistics import median

import table_load

HERE = Path(__file__).resolve().parent
CACHE = HERE / "results" / "streaming"
FEATURES = 16  # and the target y
FILES = 8
ROW_GROUP = 131_072
BATCH = 65_536
EPOCHS = 3  # the first is left out of the throughput
SEED = 0


# --- the data ---------------------------------------------------------------------------------------------------
def make_folder(rows: int, files: int = FILES, seed: int = SEED) -> Path:
    """``rows`` rows (standard normal features, ``y`` a noisy linear function of them) in ``files`` Parquet files
    of nearly equal size, row groups of :data:`ROW_GROUP` rows; written once (one file in memory at a time)."""
    folder = CACHE / f"rows{rows}_x{FEATURES}_files{files}_seed{seed}"
    if folder.exists():
        return folder
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal(FEATURES)
    for i in range(files):
        n = rows // files + (i < rows % files)
        x = rng.standard_normal((n, FEATURES))
        y = x @ weights + 0.1 * rng.standard_normal(n)
        table = pa.table({f"x{j}": x[:, j] for j in range(FEATURES)} | {"y": y})
        pq.write_table(table, tmp / f"part-{i:02d}.parquet", row_group_size=ROW_GROUP)
    os.replace(tmp, folder)
    return folder


def make_single(folder: Path) -> Path:
    """The folder's files as one Parquet file, in order, with the same row groups (the in-memory path reads one
    file)."""
    path = folder.with_suffix(".parquet")
    if path.exists():
        return path
    import pyarrow.parquet as pq

    parts = sorted(folder.glob("*.parquet"))
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with pq.ParquetWriter(tmp, pq.read_schema(parts[0])) as writer:
        for part in parts:
            writer.write_table(pq.read_table(part), row_group_size=ROW_GROUP)
    os.replace(tmp, path)
    return path


def float32_bytes(rows: int) -> int:
    """The table as float32, features and target: what the in-memory path holds."""
    return rows * (FEATURES + 1) * 4


# --- one fit in a fresh process ---------------------------------------------------------------------------------
def fit_args(path: Path, root: str, streaming: bool, cache: bool = False, newton: bool = False) -> list[str]:
    """``lit-regression fit``'s arguments: figure 5's command less the program (1 epoch there; the later
    ``--trainer.max_epochs`` wins) with SGD, batches, shuffle and :data:`EPOCHS` epochs, streaming or not, with
    a ``cache`` folder under ``root`` or not; ``newton``: the default solver instead of SGD, stopped when it has
    converged (at most 10 passes), with the report."""
    cached = ["--data.cache_dir", os.path.join(root, "cache")] if cache else []
    solver = (["--report.enabled", "true", "--trainer.max_epochs", "10"] if newton else
              ["--model.optimizer", "sgd", "--trainer.max_epochs", str(EPOCHS), "--convergence.stop", "false"])
    return [*table_load.fit_command(path, root)[len(table_load.cli()):], "--data.batch_size", str(BATCH),
            "--data.shuffle", "true", "--data.streaming", str(streaming).lower(), *solver, *cached]


def fit_once(path: Path, streaming: bool, cache: bool = False, newton: bool = False) -> dict:
    """Peak RSS (bytes), wall seconds, the seconds of each epoch and the memory at the phases of one fit, in a
    fresh process started from ``table_load``'s small launcher."""
    root = tempfile.mkdtemp(prefix="bench_stream_")
    os.mkdir(os.path.join(root, "cache"))
    try:
        seconds, rss, text = table_load.run_measured(
            [sys.executable, str(Path(__file__).resolve()), "--child", *fit_args(path, root, streaming, cache, newton)],
            cwd=root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    last = next(line for line in reversed(text.splitlines()) if line.startswith("{"))  # run_child's
    optimization = next((line.strip() for line in text.splitlines() if line.strip().startswith("optimization:")), None)
    return {"peak_rss": rss, "seconds": seconds, **json.loads(last), "optimization": optimization}


def run_child(args: list[str]) -> None:
    """``lit-regression fit ARGS`` in this process with an epoch timer and a record of the memory at Lightning's
    hooks; prints, last, the epochs' seconds and that record (see :func:`phases`)."""
    import bigdata
    from lit_regression.cli import LitRegressionCLI, _quiet

    _quiet()
    timer, record = bigdata.epoch_timer("cpu"), phases()
    LitRegressionCLI(args=args, trainer_defaults={"callbacks": [timer, record]})
    print(json.dumps({"epochs_s": [b - a for a, b in zip(timer.starts, timer.starts[1:])], "phases": record.marks}))


def phases():
    """A Lightning callback whose ``marks`` hold, at the hooks that start and end the phases of ``fit``, the RSS,
    the peak RSS so far and the bytes held (and the most ever held) by pyarrow's memory pool: the peak's rise
    between two marks is what that phase added."""
    import lightning as L
    import pyarrow as pa

    pool = pa.default_memory_pool()

    class Phases(L.Callback):
        def __init__(self) -> None:
            self.marks: list[dict] = []

        def mark(self, name: str) -> None:
            self.marks.append({"phase": name, "rss": table_load.current_rss(), "peak": table_load.peak_rss(),
                             "arrow": pool.bytes_allocated(), "arrow_peak": pool.max_memory()})

        def setup(self, trainer, pl_module, stage):  # after the datamodule's setup
            self.mark("setup")

        def on_sanity_check_end(self, trainer, pl_module):
            self.mark("sanity check")

        def on_train_start(self, trainer, pl_module):
            self.mark("train start")

        def on_train_epoch_start(self, trainer, pl_module):
            self.mark(f"epoch {trainer.current_epoch} start")

        def on_validation_start(self, trainer, pl_module):
            if not trainer.sanity_checking:
                self.mark(f"epoch {trainer.current_epoch} validation")

        def on_train_end(self, trainer, pl_module):
            self.mark("end")

    return Phases()


def breakdown(log: list[dict]) -> str:
    """One line of :func:`phases`' record: the peak RSS at each mark and pyarrow's pool."""
    mb = table_load.mb
    return "; ".join(f"{m['phase']}: peak {mb(m['peak'])} (RSS {mb(m['rss'])}, pyarrow pool {mb(m['arrow'])}, at most "
                     f"{mb(m['arrow_peak'])})" for m in log)


# --- the figure -------------------------------------------------------------------------------------------------
def measure(rows: int, reps: int = 3) -> dict:
    """Fits of the 6 kinds, interleaved (the order rotated each repetition): ``in_memory`` (one file of
    ``rows`` rows), ``streaming`` (the same rows, a folder of 8 files), ``cached`` (the same with
    ``--data.cache_dir``), ``tiny`` (streaming, 100 rows), ``double`` (streaming, ``2 * rows`` rows in 8
    files) and ``newton`` (streaming, the default solver to its optimum). Each figure is the median of
    per-repetition ratios."""
    folder = make_folder(rows)
    paths = {"in_memory": (make_single(folder), False), "streaming": (folder, True), "cached": (folder, True, True),
             "tiny": (make_folder(table_load.TINY_ROWS), True), "double": (make_folder(2 * rows), True),
             "newton": (folder, True, False, True)}
    names = list(paths)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            runs[name].append(fit_once(*paths[name]))
    peak = {name: [r["peak_rss"] for r in v] for name, v in runs.items()}
    above = {name: [p - t for p, t in zip(peak[name], peak["tiny"])] for name in names if name != "tiny"}
    epoch = {name: [median(r["epochs_s"][1:]) for r in v] for name, v in runs.items()}
    first = {name: [r["epochs_s"][0] for r in v] for name, v in runs.items()}
    return {
        "rows": rows, "features": FEATURES, "files": FILES, "row_group": ROW_GROUP, "batch": BATCH,
        "float32_bytes": float32_bytes(rows), "runs": runs, "peak_rss": peak, "above_tiny": above,
        "epoch_s": epoch, "first_epoch_s": first,
        "memory": median([a / float32_bytes(rows) for a in above["streaming"]]),
        "memory_double": median([a / float32_bytes(2 * rows) for a in above["double"]]),
        "growth": median([d / s for d, s in zip(above["double"], above["streaming"])]),
        "memory_in_memory": median([a / float32_bytes(rows) for a in above["in_memory"]]),
        "memory_cached": median([a / float32_bytes(rows) for a in above["cached"]]),
        # seconds in memory over seconds streaming: the streaming rows per second over the in-memory ones
        "throughput": median([m / s for m, s in zip(epoch["in_memory"], epoch["streaming"])]),
        "throughput_cached": median([m / s for m, s in zip(epoch["in_memory"], epoch["cached"])]),
        "throughput_cached_first": median([m / s for m, s in zip(epoch["in_memory"], first["cached"])]),
        # the newton fit's passes, start to end of training, over one decoding epoch of the SGD fit
        "to_optimum": median([sum(n["epochs_s"]) / e for n, e in zip(runs["newton"], epoch["streaming"])]),
        "newton_passes": [len(r["epochs_s"]) for r in runs["newton"]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    result = measure(args.rows, args.reps)
    mb = table_load.mb
    for name in ("tiny", "in_memory", "streaming", "cached", "double"):
        print(f"{name}: peak RSS {mb(median(result['peak_rss'][name]))}, later epochs "
              f"{median(result['epoch_s'][name]):.2f}s, fit "
              f"{median(r['seconds'] for r in result['runs'][name]):.1f}s")
    print(", ".join(f"{k} {result[k]:.3f}" for k in ("memory", "memory_double", "growth", "memory_in_memory",
                                                       "memory_cached", "throughput", "throughput_cached",
                                                       "throughput_cached_first", "to_optimum")))
    print("newton:", result["runs"]["newton"][0]["optimization"])
    print("streaming fit's memory by phase:", breakdown(result["runs"]["streaming"][0]["phases"]))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        run_child(sys.argv[2:])
    else:
        sys.exit(main())
