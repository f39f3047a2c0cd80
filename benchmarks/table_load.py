"""Memory and load time of ``TableDataModule`` on a big numeric CSV (figure 5 of ``benchmarks/run.py``).

* **Memory**: peak RSS of ``lit-regression fit --data TableDataModule`` (1 epoch; predictions, plots and report
  off) on a ``rows x 20`` numeric CSV (19 features ``x0..x18`` and the target ``y``) minus the peak RSS of the
  same command on a 100-row CSV of the same columns (the "tiny run": interpreter, torch, Lightning, the CLI),
  divided by the size of the table as float32 (``rows * 20 * 4`` bytes). Each fit runs in a fresh process;
  its peak RSS is the ``ru_maxrss`` that ``os.wait4`` returns for that process alone, started from a small
  launcher process (see :data:`LAUNCHER`).
* **Load time**: read + split + encode in ``TableDataModule`` (``source("train").table()``, ``feature_names``,
  ``setup("fit")``, ``train_dataloader()``: what ``fit`` does before its first step) against
  ``pyarrow.csv.read_csv`` of the same file, each in a fresh process (imports, scikit-learn's included, not
  timed), interleaved.

The CSVs are written once (seeded numpy, 6 decimals, through ``pyarrow.csv.write_csv``) into
``benchmarks/results/table_load/`` (git-ignored) and reused.

    .venv/bin/python benchmarks/table_load.py [--rows 1000000] [--reps 2] [--breakdown]

``--breakdown`` also prints where the memory goes: RSS after each phase of the datamodule in one process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / "results" / "table_load"
COLUMNS = 20  # 19 features and the target y
TINY_ROWS = 100
SEED = 0


# --- the data ---------------------------------------------------------------------------------------------------
def make_csv(rows: int, columns: int = COLUMNS, seed: int = SEED, folder: Path = CACHE) -> Path:
    """``rows x columns`` numbers (standard normal, 6 decimals; the last column ``y`` is a noisy linear function of
    the others) as a CSV with a header line; written once, reused afterwards."""
    path = folder / f"table_{rows}x{columns}_seed{seed}.csv"
    if path.exists():
        return path
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pcsv

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal(columns - 1)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    chunk = 200_000
    with pcsv.CSVWriter(str(tmp), pa.schema([(f"x{i}", pa.float64()) for i in range(columns - 1)]
                                            + [("y", pa.float64())])) as writer:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            x = rng.standard_normal((n, columns - 1))
            y = x @ weights + 0.1 * rng.standard_normal(n)
            data = {f"x{i}": np.round(x[:, i], 6) for i in range(columns - 1)} | {"y": np.round(y, 6)}
            writer.write_table(pa.table(data))
    os.replace(tmp, path)
    return path


# --- measuring a process ----------------------------------------------------------------------------------------
def maxrss_bytes(ru_maxrss: int) -> int:
    return ru_maxrss if sys.platform == "darwin" else ru_maxrss * 1024  # kB on Linux, bytes on macOS


# Starts ``argv[2:]`` and writes its exit code and ``ru_maxrss`` (from ``os.wait4``: that process alone) to
# ``argv[1]``. The measured process must be started from a small process: on Linux a child's ``ru_maxrss`` starts
# at the high-water RSS of the process it was forked (or vforked) from, so a child of the benchmark itself (torch
# imported, gigabytes touched by the other figures) would report at least the benchmark's own peak.
LAUNCHER = """import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def run_measured(cmd: list[str], cwd: str | None = None) -> tuple[float, int, str]:
    """Run ``cmd``; its wall time, its peak RSS in bytes and its output (stdout and stderr). Raises with the end
    of its output if it fails."""
    with tempfile.TemporaryDirectory(prefix="bench_rss_") as tmp, tempfile.TemporaryFile("w+") as out:
        result = os.path.join(tmp, "rusage")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", LAUNCHER, result, *cmd], stdout=out, stderr=subprocess.STDOUT,
                       cwd=cwd, text=True, check=True)
        elapsed = time.perf_counter() - start
        code, maxrss = (int(v) for v in Path(result).read_text().split())
        out.seek(0)
        text = out.read()
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {code}: {text[-1500:]}")
    return elapsed, maxrss_bytes(maxrss), text


def cli() -> list[str]:
    script = Path(sys.executable).parent / "lit-regression"
    return [str(script)] if script.exists() else [sys.executable, "-m", "lit_regression"]


def fit_command(path: Path, root: str) -> list[str]:
    return [*cli(), "fit", "--model", "LinearRegression", "--data", "TableDataModule", "--data.path", str(path),
            "--data.target", "y", "--trainer.max_epochs", "1", "--predictions.enabled", "false",
            "--plots.enabled", "false", "--report.enabled", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", root]


def fit_peak_rss(path: Path) -> tuple[int, float]:
    """Peak RSS (bytes) and wall time of ``lit-regression fit`` on ``path`` in a fresh process."""
    root = tempfile.mkdtemp(prefix="bench_table_")
    try:
        elapsed, rss, _ = run_measured(fit_command(path, root), cwd=root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rss, elapsed


def child(kind: str, path: Path) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", kind, str(path)]


def load_once(kind: str, path: Path) -> dict:
    """One timed load in a fresh process: ``kind`` is ``datamodule`` or ``pyarrow``."""
    _, rss, text = run_measured(child(kind, path))
    result = json.loads(text.strip().splitlines()[-1])
    result["peak_rss"] = rss
    return result


# --- the figures ------------------------------------------------------------------------------------------------
def measure_memory(rows: int, reps: int = 1, columns: int = COLUMNS) -> dict:
    """Peak RSS of the CLI's ``fit`` on the big and the tiny CSV, interleaved (the order alternates); the figure
    is the median over repetitions of ``(big - tiny) / (rows * columns * 4)``."""
    big, tiny = make_csv(rows, columns), make_csv(TINY_ROWS, columns)
    table_bytes = rows * columns * 4
    peaks: dict[str, list[int]] = {"big": [], "tiny": []}
    seconds: dict[str, list[float]] = {"big": [], "tiny": []}
    for rep in range(reps):
        for name in (("tiny", "big") if rep % 2 == 0 else ("big", "tiny")):
            rss, elapsed = fit_peak_rss(big if name == "big" else tiny)
            peaks[name].append(rss)
            seconds[name].append(elapsed)
    ratios = [(b - t) / table_bytes for b, t in zip(peaks["big"], peaks["tiny"])]
    return {"rows": rows, "columns": columns, "csv_bytes": big.stat().st_size, "float32_bytes": table_bytes,
            "peak_rss_big": peaks["big"], "peak_rss_tiny": peaks["tiny"], "seconds": seconds,
            "ratio": statistics.median(ratios), "ratios": ratios}


def measure_load(rows: int, reps: int = 3, columns: int = COLUMNS) -> dict:
    """Seconds of the datamodule's read + split + encode against ``pyarrow.csv.read_csv`` alone, one fresh process
    each, interleaved (the order alternates); the figure is the median of the per-repetition ratios."""
    path = make_csv(rows, columns)
    runs: dict[str, list[dict]] = {"datamodule": [], "pyarrow": []}
    for rep in range(reps):
        for kind in (("pyarrow", "datamodule") if rep % 2 == 0 else ("datamodule", "pyarrow")):
            runs[kind].append(load_once(kind, path))
    ours, ref = [r["seconds"] for r in runs["datamodule"]], [r["seconds"] for r in runs["pyarrow"]]
    phases = {phase: statistics.median(r["phases"][phase] for r in runs["datamodule"])
              for phase in runs["datamodule"][0]["phases"]}
    return {"rows": rows, "columns": columns, "seconds": {"datamodule": ours, "pyarrow": ref},
            "datamodule_phases_s": phases,
            "peak_rss": {kind: [r["peak_rss"] for r in v] for kind, v in runs.items()}, "runs": runs,
            "ratio": statistics.median(a / b for a, b in zip(ours, ref))}


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


# --- the child processes ----------------------------------------------------------------------------------------
def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    return maxrss_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def run_child(kind: str, path: str) -> None:
    """Print one JSON line: the seconds of the load (imports left out) and, per phase, its seconds and after it
    the RSS, the peak RSS, and the bytes held (and the most ever held) by pyarrow's memory pool."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    if kind != "pyarrow":
        import sklearn.model_selection  # noqa: F401 - imported lazily by the datamodule; imports are not timed

        from lit_regression.datamodules import TableDataModule
    pool = pa.default_memory_pool()

    def snapshot() -> dict[str, int]:
        return {"rss": current_rss(), "peak": peak_rss(), "arrow": pool.bytes_allocated(),
                "arrow_peak": pool.max_memory()}

    phases: dict[str, float] = {}
    memory: dict[str, dict[str, int]] = {"imports": snapshot()}

    def phase(name: str, fn):
        start = time.perf_counter()
        value = fn()
        phases[name] = time.perf_counter() - start
        memory[name] = snapshot()
        return value

    if kind == "pyarrow":
        table = phase("read_csv", lambda: pcsv.read_csv(path))
        assert table.num_rows > 0
    else:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # the column roles
            dm = TableDataModule(path=path, target="y")
            phase("read", lambda: dm.source("train").table())
            phase("columns", lambda: dm.feature_names)
            phase("split", lambda: dm.setup("fit"))
            batches = phase("encode", dm.train_dataloader)
        assert len(batches) > 0
    print(json.dumps({"kind": kind, "seconds": sum(phases.values()), "phases": phases, "memory": memory}))


# --- on its own -------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=2, help="repetitions of the memory figure (load: one more)")
    parser.add_argument("--breakdown", action="store_true", help="RSS after each phase of the datamodule")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(*args.child)
        return 0
    memory = measure_memory(args.rows, args.reps)
    size = memory["float32_bytes"]
    big, tiny = statistics.median(memory["peak_rss_big"]), statistics.median(memory["peak_rss_tiny"])
    print(f"{args.rows:,} x {COLUMNS} CSV ({mb(memory['csv_bytes'])}; float32 {mb(size)}): peak RSS of fit "
          f"{mb(big)}, tiny run {mb(tiny)}, difference {mb(big - tiny)} = {memory['ratio']:.2f}x the float32 table "
          f"(target <= 4x); fit {statistics.median(memory['seconds']['big']):.1f}s, tiny "
          f"{statistics.median(memory['seconds']['tiny']):.1f}s")
    load = measure_load(args.rows, args.reps + 1)
    print(f"load: datamodule {statistics.median(load['seconds']['datamodule']):.2f}s ("
          + ", ".join(f"{k} {v:.2f}" for k, v in load["datamodule_phases_s"].items())
          + f"), pyarrow.csv.read_csv {statistics.median(load['seconds']['pyarrow']):.2f}s: {load['ratio']:.2f}x")
    if args.breakdown:
        path = make_csv(args.rows)
        for kind in ("pyarrow", "datamodule"):
            result = load_once(kind, path)
            base = result["memory"]["imports"]["rss"]
            steps = ", ".join(f"{name} +{mb(m['rss'] - base)} (peak +{mb(m['peak'] - base)}, pyarrow pool "
                              f"{mb(m['arrow'])}, at most {mb(m['arrow_peak'])})"
                              for name, m in result["memory"].items() if name != "imports")
            print(f"{kind}: RSS after imports {mb(base)}; then {steps}; process peak {mb(result['peak_rss'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
