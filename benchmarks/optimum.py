"""Figure 6 of ``benchmarks/run.py``: how long the default ``fit`` takes to reach the optimum of its objective,
against scikit-learn fitting the same training rows.

Ours: ``lit-regression fit`` in this process with no optimizer or epoch flags (Newton's method in passes, stopped by
the Convergence callback), figures and predictions off, the report on (it checks the optimum), from reading the
table to the end of ``fit``. scikit-learn: ``LinearRegression().fit`` on the raw training rows, and
``LogisticRegression().fit`` (C = 1, the same objective as ours) on the standardised training rows; the rows are
already in memory, so its time is the solver's alone. Each case also reports the relative gap and whether our
report says converged.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
BATCH = 4096  # Adam's batches in the passes figure
MAX_PASSES = 100
SOLVERS = {"newton": ["--model.optimizer", "newton"],
           "adam": ["--model.optimizer", "adam", "--data.batch_size", str(BATCH)],
           "lbfgs": ["--model.optimizer", "lbfgs"]}


def _table(kind: str, rows: int, features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, features)) * rng.uniform(0.1, 10, features) + rng.uniform(-5, 5, features)
    logits = ((x - x.mean(0)) / x.std(0)) @ rng.standard_normal(features) * 0.5
    if kind == "logistic":
        return x, (rng.random(rows) < 1 / (1 + np.exp(-logits))).astype(np.int64)
    return x, logits * 3 + rng.standard_normal(rows)


def _write(path: Path, x: np.ndarray, y: np.ndarray) -> list[str]:
    names = [f"x{i}" for i in range(x.shape[1])]
    pq.write_table(pa.table({**{n: x[:, i] for i, n in enumerate(names)}, "y": y}), path)
    return names


def _ours(path: Path, target: str, model: str, root: str, *extra: str, callbacks: list | None = None
          ) -> tuple[float, dict]:
    from lit_regression.cli import LitRegressionCLI

    args = ["fit", *extra, "--model", model, "--data", "TableDataModule", "--data.path", str(path),
            "--data.target", target,
            "--trainer.default_root_dir", root, "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--plots.enabled", "false", "--predictions.enabled", "false"]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        cli = LitRegressionCLI(args=args, trainer_defaults={"callbacks": callbacks} if callbacks else None)
    seconds = time.perf_counter() - start
    report = json.loads((Path(cli.trainer.log_dir) / "report.json").read_text())
    return seconds, report["optimization"]


def _sklearn(kind: str, x: np.ndarray, y: np.ndarray) -> float:
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if kind == "logistic":
        x = StandardScaler().fit_transform(x)
        start = time.perf_counter()
        LogisticRegression().fit(x, y)
    else:
        start = time.perf_counter()
        LinearRegression().fit(x, y)
    return time.perf_counter() - start


def measure(cases: list[tuple[str, str, int, int]], reps: int) -> list[dict]:
    """``cases``: (name, kind, rows, features), rows 0 for the shipped diabetes table. Interleaved repetitions."""
    from lit_regression.datamodules import TableDataModule

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, kind, rows, features in cases:
            if rows == 0:
                path, target = ROOT / "examples" / "data" / "diabetes.csv", "progression"
            else:
                path, target = Path(tmp) / f"{name}.parquet", "y"
                _write(path, *_table(kind, rows, features))
            dm = TableDataModule(path=str(path), target=target,
                                 task="classification" if kind == "logistic" else "regression")
            dm.setup("fit")
            frame = dm.source("train").table().to_pandas()  # the table as the datamodule read it
            train = dm.split_rows["train"]
            x = frame.drop(columns=target).to_numpy(dtype=np.float64)[train]
            y = frame[target].to_numpy()[train]
            model = "LogisticRegression" if kind == "logistic" else "LinearRegression"
            ours, theirs, optimization = [], [], None
            for rep in range(reps):
                order = ("ours", "sklearn") if rep % 2 == 0 else ("sklearn", "ours")
                for side in order:
                    if side == "ours":
                        seconds, optimization = _ours(path, target, model, str(Path(tmp) / "runs"))
                        ours.append(seconds)
                    else:
                        theirs.append(_sklearn(kind, x, y))
            ratios = sorted(o / t for o, t in zip(ours, theirs))
            results.append({"name": name, "kind": kind, "rows": len(train), "features": x.shape[1],
                            "ours_s": sorted(ours), "sklearn_s": sorted(theirs),
                            "ratio": ratios[len(ratios) // 2], "optimization": optimization})
    return results


def _row_counter():
    """A callback that counts the training rows each evaluation of the objective reads (L-BFGS evaluates its one
    batch several times a step, each a pass over the rows)."""
    import lightning as L

    class Rows(L.Callback):
        def __init__(self) -> None:
            self.rows = self.batch = self.n_train = 0

        def on_train_start(self, trainer, pl_module) -> None:
            self.n_train = trainer.datamodule.n_train

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.batch = len(batch[0])

        def on_before_backward(self, trainer, pl_module, loss) -> None:
            self.rows += self.batch

    return Rows()


def passes(cases: list[tuple[str, str, int, int]], max_passes: int) -> list[dict]:
    """Passes over the training rows (the rows the objective was evaluated on, over the training rows) each
    solver of :data:`SOLVERS` takes until the Convergence callback stops it, at most ``max_passes`` epochs, and
    the report's relative gap to the optimum then."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, kind, rows, features in cases:
            path = Path(tmp) / f"{name}.parquet"
            _write(path, *_table(kind, rows, features))
            model = "LogisticRegression" if kind == "logistic" else "LinearRegression"
            solvers = {}
            for solver, flags in SOLVERS.items():
                counter = _row_counter()
                _, optimization = _ours(path, "y", model, str(Path(tmp) / "runs"), *flags, "--trainer.max_epochs",
                                        str(max_passes), callbacks=[counter])
                solvers[solver] = {"passes": counter.rows / counter.n_train, "epochs": optimization["epochs"],
                                   "converged": optimization["converged"],
                                   "relative_gap": optimization["relative_gap"]}
            results.append({"name": name, "rows": rows, "features": features, "solvers": solvers})
    return results

