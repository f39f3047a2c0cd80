"""Benchmarks of lit_regression against plain PyTorch and Lightning: ``make bench`` or
``.venv/bin/python benchmarks/run.py [--quick] [--json PATH]``.

Every figure is a ratio against a reference measured in the same run, interleaved (A, B, A, B, ...; the order
rotates between repetitions) and summarised by the median of the per-repetition ratios, so that load from other
processes on the machine affects both sides alike. See ``benchmarks/README.md`` for what each figure means.

The script always exits 0: it is a report. Rows read ``pass``/``FAIL`` against their target, ``info`` where there
is none, ``skip`` where the figure cannot be measured here (no GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = ROOT / "configs" / "line_linear.yaml"
PLAIN_LINE = HERE / "plain_line.py"
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import bigdata  # noqa: E402
import optimum  # noqa: E402
import plain_line  # noqa: E402
import serving  # noqa: E402
import streaming  # noqa: E402
import table_load  # noqa: E402

# --- settings ---------------------------------------------------------------------------------------------------
FULL = {
    # per-epoch figure: fits of N1 and N2 epochs (val_loss improves in epochs 0-115 of the seed config)
    "n1": 50, "n2": 250, "epoch_reps": 5,
    "process_epochs": 1000, "process_reps": 3, "import_reps": 2,
    "rows": 2_000_000, "features": 32, "batch": 65536, "big_epochs": 4, "big_reps": 3, "dl_batches": 2,
    "table_rows": 1_000_000, "table_memory_reps": 2, "table_load_reps": 3, "side_reps": 3,
    "optimum_rows": 200_000, "optimum_features": 50, "optimum_reps": 3,
    "stream_rows": 4_000_000, "stream_reps": 3,
    "serve_requests": 2000, "serve_reps": 3, "serve_warmup": 300, "onnx_reps": 5,
}
QUICK = {
    "n1": 10, "n2": 40, "epoch_reps": 2,
    "process_epochs": 50, "process_reps": 1, "import_reps": 1, "skip_importtime": True, "skip_cli_import": True,
    "rows": 262_144, "features": 32, "batch": 65536, "big_epochs": 3, "big_reps": 1, "dl_batches": 1,
    "table_rows": 100_000, "table_memory_reps": 1, "table_load_reps": 2, "side_reps": 1,
    "optimum_rows": 20_000, "optimum_features": 50, "optimum_reps": 1,
    "stream_rows": 400_000, "stream_reps": 1,
    "serve_requests": 300, "serve_reps": 1, "serve_warmup": 100, "onnx_reps": 2,
}


# --- small helpers ----------------------------------------------------------------------------------------------
def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rotated(items: list, k: int) -> list:
    k %= len(items)
    return items[k:] + items[:k]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def quiet() -> None:
    """No chatter from Lightning, the CLI or the libraries in the benchmark's own output."""
    warnings.simplefilter("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
                 "lightning.fabric.utilities.seed", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from lit_regression.cli import _quiet

    _quiet()


class Report:
    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.notes: list[str] = []
        self.details: dict[str, dict] = {}

    def row(self, figure: str, value: float | None, target: str | None = None, unit: str = "x",
            note: str = "") -> None:
        """``target`` as ``"<= 1.3"`` or ``">= 30"``; ``None`` for an informative row."""
        if value is None or value != value:  # None or nan
            status = "skip" if value is None else "error"
        elif target is None:
            status = "info"
        else:
            op, bound = target.split()
            ok = value <= float(bound) if op == "<=" else value >= float(bound)
            status = "pass" if ok else "FAIL"
        self.rows.append({"figure": figure, "value": value, "unit": unit, "target": target, "status": status,
                          "note": note})
        shown = "-" if value is None else f"{value:.3g}{unit}" if unit == "x" else f"{value:.3g} {unit}"
        print(f"  -> {figure}: {shown}  target {target or '-'}  [{status}]{'  ' + note if note else ''}", flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"     {text}", flush=True)

    def table(self) -> str:
        header = ("figure", "measured", "target", "result")
        lines = []
        for r in self.rows:
            value = r["value"]
            if value is None:
                shown = "-"
            elif value != value:
                shown = "error"
            elif r["unit"] == "x":
                shown = f"{value:.3g}x"
            else:
                shown = f"{value:.4g} {r['unit']}"
            target = "-" if r["target"] is None else f"{r['target']}{'x' if r['unit'] == 'x' else ''}"
            lines.append((r["figure"] + (f" ({r['note']})" if r["note"] else ""), shown, target, r["status"]))
        widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(4)]
        out = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths)),
               "  ".join("-" * w for w in widths)]
        out += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in lines]
        return "\n".join(out)


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    import lightning
    import torchmetrics

    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "torchmetrics": torchmetrics.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


class CheckpointWrites:
    """Records every checkpoint Lightning writes (``Trainer.save_checkpoint``): epoch and file name."""

    def __init__(self) -> None:
        self.log: list[tuple[int, str]] = []
        self.installed = False

    def install(self) -> None:
        if self.installed:
            return
        from lightning.pytorch import Trainer

        original, log = Trainer.save_checkpoint, self.log

        def save_checkpoint(trainer, filepath, *args, **kwargs):
            log.append((trainer.current_epoch, os.path.basename(str(filepath))))
            return original(trainer, filepath, *args, **kwargs)

        Trainer.save_checkpoint = save_checkpoint
        self.installed = True

    def counting(self, fn: Callable[[], object]) -> int:
        """Run ``fn``; the number of checkpoints written meanwhile."""
        before = len(self.log)
        fn()
        return len(self.log) - before


WRITES = CheckpointWrites()


# --- figure 1: per-epoch cost, in process -----------------------------------------------------------------------
ON_DEVICE = False  # set for the GPU figures: the datamodule keeps its tensors on the accelerator


def lit_args(device: str) -> list[str]:
    args = ["--trainer.accelerator", "gpu", "--trainer.devices", "1"] if device.startswith("cuda") else []
    return args + (["--data.init_args.on_device", "true"] if ON_DEVICE else [])


def lit_fit(epochs: int, root: str, device: str = "cpu", extra: tuple[str, ...] = (),
            callbacks: list | None = None) -> None:
    """``lit-regression fit --config configs/line_linear.yaml`` in this process (as tests/conftest.py runs it);
    ``callbacks`` are added to the CLI's."""
    from lit_regression.cli import LitRegressionCLI

    args = ["fit", "--config", str(CONFIG), "--trainer.default_root_dir", root, "--trainer.max_epochs", str(epochs),
            *lit_args(device), *extra]
    with contextlib.redirect_stdout(io.StringIO()):
        LitRegressionCLI(args=args, trainer_defaults={"callbacks": list(callbacks or [])})


def per_epoch_costs(variants: dict[str, Callable[[int, str], object]], n1: int, n2: int, reps: int) -> dict:
    """Seconds per epoch of each variant, ``(time(n2) - time(n1)) / (n2 - n1)``, one value per repetition; the
    variants take turns (order rotated each repetition, n1/n2 order alternated)."""
    names = list(variants)
    times = {name: {n1: [], n2: []} for name in names}
    results: dict[tuple[str, int], object] = {}
    for name in names:  # warm-up: imports, first-call costs
        root = tempfile.mkdtemp(prefix="bench_")
        variants[name](3, root)
        shutil.rmtree(root, ignore_errors=True)
    for rep in range(reps):
        for name in rotated(names, rep):
            for n in ((n1, n2) if rep % 2 == 0 else (n2, n1)):
                root = tempfile.mkdtemp(prefix="bench_")
                start = time.perf_counter()
                results[name, n] = variants[name](n, root)
                times[name][n].append(time.perf_counter() - start)
                shutil.rmtree(root, ignore_errors=True)
    return {name: [(b - a) / (n2 - n1) for a, b in zip(t[n1], t[n2])] for name, t in times.items()} | {
        "_raw": {name: {str(k): v for k, v in t.items()} for name, t in times.items()}, "_results": results}


def figure_per_epoch(report: Report, cfg: dict, device: str = "cpu", label: str = "") -> None:
    """Per-epoch cost of ``fit --config configs/line_linear.yaml`` against the same maths as a bare LightningModule
    (``plain_line.train_bare_lightning``: no logger, checkpoints, metrics or callbacks), and for orientation
    against the bare plain PyTorch loop."""
    n1, n2 = cfg["n1"], cfg["n2"]
    print(f"\n[1{label}] per-epoch cost of fit on configs/line_linear.yaml ({device}), epochs {n1} -> {n2}, "
          f"{cfg['epoch_reps']} repetitions", flush=True)
    variants = {
        "lightning": lambda n, root: WRITES.counting(lambda: lit_fit(n, root, device)),
        "lightning bare": lambda n, root: plain_line.train_bare_lightning(n, device=device),
        "plain bare": lambda n, root: plain_line.train(n, bookkeeping=False, device=device),
    }
    WRITES.install()
    costs = per_epoch_costs(variants, n1, n2, cfg["epoch_reps"])
    lit, lit_bare, bare = costs["lightning"], costs["lightning bare"], costs["plain bare"]
    results = costs["_results"]
    writes = (results["lightning", n2] - results["lightning", n1]) / (n2 - n1)
    report.note(f"ms/epoch (median): fit {1e3 * median(lit):.3f}, bare LightningModule {1e3 * median(lit_bare):.3f}, "
                f"bare plain loop {1e3 * median(bare):.3f}; checkpoint writes per epoch in the window: {writes:.3f}")
    report.row(f"{label}per-epoch fit vs bare LightningModule (same maths)",
               median([a / b for a, b in zip(lit, lit_bare)]), "<= 2.0")
    report.row(f"{label}per-epoch fit", 1e3 * median(lit), None, unit="ms")
    report.row(f"{label}per-epoch: bare LightningModule over bare plain loop",
               1e3 * median([a - b for a, b in zip(lit_bare, bare)]), None, unit="ms")
    report.details[f"per_epoch{label}"] = {"device": device, "n1": n1, "n2": n2, "seconds_per_epoch": {
        "lightning": lit, "lightning_bare": lit_bare, "plain_bare": bare}, "raw_seconds": costs["_raw"],
        "checkpoint_writes_per_epoch": writes}


# --- figure 2: whole process ------------------------------------------------------------------------------------
def lit_command(root: str, epochs: int | None, device: str = "cpu") -> list[str]:
    exe = Path(sys.executable).with_name("lit-regression")
    head = [str(exe)] if exe.exists() else [sys.executable, "-m", "lit_regression"]
    cmd = [*head, "fit", "--config", str(CONFIG), "--trainer.default_root_dir", root]
    if epochs is not None:
        cmd += ["--trainer.max_epochs", str(epochs)]
    return cmd + lit_args(device)


def run_process(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return elapsed


def import_breakdown() -> dict[str, dict]:
    """``python -X importtime -c "import torch; import lightning; import lit_regression.cli"``: for each of the
    three statements, the seconds it adds (cumulative time of what it imports first) and those seconds by
    top-level package of the modules it imported (self times summed, so the parts add up; the instrumentation
    itself adds a little)."""
    roots = ("torch", "lightning", "lit_regression.cli")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "; ".join(f"import {r}" for r in roots)],
                          capture_output=True, text=True, cwd=ROOT)
    pending: list[tuple[int, list[tuple[str, int]]]] = []  # importtime lists children before their parent
    result: dict[str, dict] = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)", line)
        if not m:
            continue
        depth, name = len(m.group(3)), m.group(4)
        subtree = [(name, int(m.group(1)))]
        while pending and pending[-1][0] > depth:
            subtree += pending.pop()[1]
        pending.append((depth, subtree))
        if name in roots and depth == 1:
            by_package: dict[str, float] = {}
            for module, self_us in subtree:
                package = module.split(".")[0]
                by_package[package] = by_package.get(package, 0.0) + self_us / 1e6
            result[name] = {"seconds": sum(by_package.values()),
                            "by_package": dict(sorted(by_package.items(), key=lambda kv: -kv[1]))}
    return result


def figure_whole_process(report: Report, cfg: dict, device: str = "cpu", label: str = "") -> None:
    """``make run``'s command, ``lit-regression fit --config configs/line_linear.yaml`` (1000 epochs, with its
    report, figures and predictions), against the bare Lightning program of the same maths (``python
    benchmarks/plain_line.py --bare-lightning``), each a fresh process, imports included."""
    epochs = cfg["process_epochs"]
    print(f"\n[2{label}] whole process, {epochs} epochs ({device}), {cfg['process_reps']} repetitions", flush=True)
    py = sys.executable
    dev = ["--device", device]
    commands = {
        "lit-regression": lambda root: lit_command(root, None if epochs == 1000 else epochs, device),
        "bare lightning": lambda root: [py, str(PLAIN_LINE), "--epochs", str(epochs), "--bare-lightning", *dev],
        "plain bare": lambda root: [py, str(PLAIN_LINE), "--epochs", str(epochs), *dev],
    }
    imports = {
        "python": [py, "-c", "pass"],
        "import torch": [py, "-c", "import torch"],
        "import lightning": [py, "-c", "import lightning"],
        "import lit_regression.cli": [py, "-c", "import lit_regression.cli"],
    }
    if cfg.get("skip_cli_import"):
        del imports["import lit_regression.cli"]
    times = {name: [] for name in [*commands, *imports]}
    for rep in range(cfg["process_reps"]):
        for name in rotated(list(commands), rep):
            root = tempfile.mkdtemp(prefix="bench_proc_")
            times[name].append(run_process(commands[name](root)))
            shutil.rmtree(root, ignore_errors=True)
    for rep in range(cfg["import_reps"]):
        for name in rotated(list(imports), rep):
            times[name].append(run_process(imports[name]))
    lit, bare_lightning, bare = times["lit-regression"], times["bare lightning"], times["plain bare"]
    med = {name: median(v) for name, v in times.items()}
    if not times.get("import lit_regression.cli"):
        med["import lit_regression.cli"] = float("nan")
    report.note(f"seconds (median): lit-regression {med['lit-regression']:.2f}, bare Lightning program "
                f"{med['bare lightning']:.2f}, bare plain loop {med['plain bare']:.2f}")
    report.note("seconds (median): " + ", ".join(f"{name} {med[name]:.2f}" for name in imports))
    breakdown = {}
    if not label and not cfg.get("skip_importtime"):  # the imports are the same on a GPU machine
        breakdown = import_breakdown()
        for name, part in breakdown.items():
            top = ", ".join(f"{k} {v:.2f}" for k, v in list(part["by_package"].items())[:7])
            report.note(f"-X importtime: import {name} adds {part['seconds']:.2f}s, by package: {top}")
    report.row(f"{label}whole default run vs the bare Lightning program",
               median([a / b for a, b in zip(lit, bare_lightning)]), "<= 1.5",
               note="" if epochs == 1000 else f"{epochs} epochs")
    report.row(f"{label}whole default run vs the bare plain loop", median([a / b for a, b in zip(lit, bare)]), None)
    report.row(f"{label}import lightning on top of import torch", med["import lightning"] - med["import torch"],
               None, unit="s")
    report.details[f"whole_process{label}"] = {"device": device, "epochs": epochs, "seconds": times,
                                               "import_breakdown_s": breakdown}


# --- figure 3: big-data throughput ------------------------------------------------------------------------------
def figure_throughput(report: Report, cfg: dict, device: str = "cpu", label: str = "") -> None:
    rows, features, batch, epochs = cfg["rows"], cfg["features"], cfg["batch"], cfg["big_epochs"]
    print(f"\n[3{label}] throughput, {rows:,} x {features} float32, batch {batch:,}, shuffled, {epochs} epochs "
          f"(first left out), {cfg['big_reps']} repetitions ({device})", flush=True)
    x, y = bigdata.make_data(rows, features)
    on_device = ON_DEVICE
    runs = {
        "lightning": lambda: bigdata.lightning_epochs(rows, features, batch, epochs, device, on_device=on_device),
        "lightning_train_metrics": lambda: bigdata.lightning_epochs(rows, features, batch, epochs, device,
                                                                    on_device=on_device, train_metrics=True),
        "plain": lambda: bigdata.plain_epochs(x, y, batch, epochs, device),
        "plain_per_batch": lambda: bigdata.plain_epochs(x, y, batch, epochs, device, per_batch=True),
        "lightning_bare": lambda: bigdata.bare_lightning_epochs(x, y, batch, epochs, device),
    }
    rate = {name: [] for name in runs} | {"dataloader": []}
    for rep in range(cfg["big_reps"]):
        for name in rotated(list(runs), rep):
            rate[name].append(rows / median(runs[name]()[1:]))
        rate["dataloader"].append(bigdata.dataloader_rows_per_s(x, y, batch, cfg["dl_batches"], device))
    ratio_plain = median([a / b for a, b in zip(rate["lightning"], rate["plain"])])
    ratio_dl = median([a / b for a, b in zip(rate["lightning"], rate["dataloader"])])
    ratio_per_batch = median([a / b for a, b in zip(rate["lightning"], rate["plain_per_batch"])])
    ratio_metrics = median([a / b for a, b in zip(rate["lightning_train_metrics"], rate["plain"])])
    ratio_bare = median([a / b for a, b in zip(rate["lightning_bare"], rate["plain_per_batch"])])
    report.note(f"rows/s (median): lightning {median(rate['lightning']):,.0f} (with train metrics "
                f"{median(rate['lightning_train_metrics']):,.0f}), plain {median(rate['plain']):,.0f}, "
                f"plain gathering per batch {median(rate['plain_per_batch']):,.0f}, bare LightningModule "
                f"{median(rate['lightning_bare']):,.0f}, "
                f"DataLoader(TensorDataset) {median(rate['dataloader']):,.0f} (on {cfg['dl_batches']} batches)")
    report.row(f"{label}throughput: fit with TensorBatches vs plain in-memory loop (loss only, both)", ratio_plain,
               ">= 0.9")
    report.row(f"{label}throughput: the same with train metrics vs plain loop", ratio_metrics)
    report.row(f"{label}throughput: fit vs a plain loop that gathers each batch as TensorBatches does",
               ratio_per_batch, ">= 0.9")
    report.row(f"{label}throughput: bare LightningModule on the same batches vs that plain loop (the floor)",
               ratio_bare)
    report.row(f"{label}throughput: fit with TensorBatches vs DataLoader(TensorDataset)", ratio_dl, ">= 30")
    report.details[f"throughput{label}"] = {"device": device, "rows": rows, "features": features, "batch": batch,
                                            "epochs": epochs, "rows_per_s": rate}
    del x, y


# --- figure 6: the side effects of fit on a big table -----------------------------------------------------------
SIDE_EFFECTS = {"predictions": "--predictions.enabled", "figures": "--plots.enabled", "report": "--report.enabled"}


def side_effects_command(path: Path, root: str, on: tuple[str, ...]) -> list[str]:
    """A 2-epoch ``fit`` of the table with the side effects in ``on`` (the CLI's defaults) and the others off."""
    switches = [a for name, flag in SIDE_EFFECTS.items() for a in (flag, str(name in on).lower())]
    return [*table_load.cli(), "fit", "--model", "LinearRegression", "--data", "TableDataModule", "--data.path",
            str(path), "--data.target", "y", "--trainer.max_epochs", "2", "--convergence.stop", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", root, *switches]


def figure_side_effects(report: Report, cfg: dict) -> None:
    """What the end-of-fit predictions, figures and report add to a 2-epoch fit of a ``rows x 20``
    numeric CSV (each in a fresh process, interleaved), all three together (target <= 1.5x) and each alone."""
    rows = cfg["table_rows"]
    path = table_load.make_csv(rows)
    print(f"\n[6] side effects: 2-epoch fit of a {rows:,} x {table_load.COLUMNS} CSV with predictions, figures and "
          f"report on against off, {cfg['side_reps']} repetitions", flush=True)
    variants = {"off": (), "all on": tuple(SIDE_EFFECTS), **{f"{name} only": (name,) for name in SIDE_EFFECTS}}
    times = {name: [] for name in variants}
    for rep in range(cfg["side_reps"]):
        for name in rotated(list(variants), rep):
            root = tempfile.mkdtemp(prefix="bench_side_")
            try:
                times[name].append(run_process(side_effects_command(path, root, variants[name])))
            finally:
                shutil.rmtree(root, ignore_errors=True)
    report.note("seconds (median): " + ", ".join(f"{name} {median(t):.2f}" for name, t in times.items()))
    off = times["off"]
    report.row(f"side effects: 2-epoch fit of {rows:,} x 20 with predictions, figures and report vs without",
               median([a / b for a, b in zip(times["all on"], off)]), "<= 1.5")
    for name in SIDE_EFFECTS:
        report.row(f"side effects: {name} alone, seconds added", median([a - b for a, b in zip(times[f"{name} only"], off)]),
                   None, unit="s")
    report.details["side_effects"] = {"rows": rows, "seconds": times}


# --- figure 5: memory and load time of TableDataModule on a big CSV ----------------------------------------------
def figure_table(report: Report, cfg: dict) -> None:
    rows, columns = cfg["table_rows"], table_load.COLUMNS
    print(f"\n[5] TableDataModule on a {rows:,} x {columns} numeric CSV: peak RSS of fit against a "
          f"{table_load.TINY_ROWS}-row run ({cfg['table_memory_reps']} repetitions), load time against "
          f"pyarrow.csv.read_csv ({cfg['table_load_reps']} repetitions)", flush=True)
    mib = table_load.mb
    memory = table_load.measure_memory(rows, cfg["table_memory_reps"], columns)
    size = memory["float32_bytes"]
    big, tiny = median(memory["peak_rss_big"]), median(memory["peak_rss_tiny"])
    report.note(f"CSV {mib(memory['csv_bytes'])}, float32 table {mib(size)}; peak RSS (median) of fit {mib(big)}, "
                f"of the tiny run {mib(tiny)}: {mib(big - tiny)} more; seconds (median) "
                f"{median(memory['seconds']['big']):.1f} and {median(memory['seconds']['tiny']):.1f}")
    load = table_load.measure_load(rows, cfg["table_load_reps"], columns)
    ours, ref = median(load["seconds"]["datamodule"]), median(load["seconds"]["pyarrow"])
    report.note(f"seconds (median): TableDataModule {ours:.2f} ("
                + ", ".join(f"{k} {v:.2f}" for k, v in load["datamodule_phases_s"].items())
                + f"), pyarrow.csv.read_csv {ref:.2f}")
    # the floor under the memory figure: what reading the file with pyarrow's defaults takes on its own
    floor = median([peak - run["memory"]["imports"]["rss"]
                    for peak, run in zip(load["peak_rss"]["pyarrow"], load["runs"]["pyarrow"])])
    dm_peak = median([peak - run["memory"]["imports"]["rss"]
                      for peak, run in zip(load["peak_rss"]["datamodule"], load["runs"]["datamodule"])])
    report.note(f"peak RSS above the imports: pyarrow.csv.read_csv {mib(floor)}, TableDataModule load {mib(dm_peak)}")
    note = "" if rows == 1_000_000 else f"{rows:,} rows"
    report.row("table memory: fit's peak RSS above a tiny run / float32 table", memory["ratio"], "<= 4",
               note=note)
    report.row("table memory floor: pyarrow.csv.read_csv's peak RSS above its imports / float32 table",
               floor / size, None, note=note)
    report.row("table load: TableDataModule read+split+encode vs pyarrow.csv.read_csv", load["ratio"], None,
               note=note)
    report.details["table"] = {"memory": memory, "load": load}


def figure_optimum(report: Report, cfg: dict) -> None:
    rows, features = cfg["optimum_rows"], cfg["optimum_features"]
    print(f"\n[6] time for the default fit to reach the optimum, against scikit-learn's fit on the same training "
          f"rows (diabetes, and {rows:,} x {features}; {cfg['optimum_reps']} repetitions)", flush=True)
    cases = [("diabetes", "linear", 0, 10), ("linear", "linear", rows, features),
             ("logistic", "logistic", rows, features)]
    results = optimum.measure(cases, cfg["optimum_reps"])
    for r in results:
        o = r["optimization"]
        reference = "LogisticRegression" if r["kind"] == "logistic" else "LinearRegression"
        report.note(f"{r['name']}: {r['rows']:,} training rows x {r['features']}: ours {median(r['ours_s']):.2f}s "
                    f"({o['epochs']} epochs of {o['optimizer']}, relative gap {o['relative_gap']:.2g}, converged "
                    f"{o['converged']}), scikit-learn {reference}().fit {median(r['sklearn_s']):.3f}s")
        report.row(f"time to optimum, {r['name']} {reference}: whole default fit vs scikit-learn's fit",
                   r["ratio"], None if r["name"] == "diabetes" else "<= 3",
                   note=("" if o["converged"] else "NOT converged") + ("" if rows == 200_000 else f" {rows:,} rows"))
    report.details["optimum"] = results
    print(f"\n[6b] passes to the optimum: newton against Adam (batches of {optimum.BATCH:,}) and L-BFGS (one batch) on "
          f"the same tables, at most {optimum.MAX_PASSES} epochs each", flush=True)
    passes = optimum.passes(cases[1:], optimum.MAX_PASSES)
    for r in passes:
        for solver, o in r["solvers"].items():
            report.row(f"passes to the optimum, {r['name']} ({r['rows']:,} x {r['features']}): {solver}",
                       o["passes"], None, unit="passes",
                       note=f"relative gap {o['relative_gap']:.2g}" + ("" if o["converged"] else
                                                                      f", NOT converged in {o['passes']}"))
    report.details["passes"] = passes


# --- figure 7: streaming Parquet against the in-memory path ------------------------------------------------------
def figure_streaming(report: Report, cfg: dict) -> None:
    """``--data.streaming true`` on a folder of 8 Parquet files: its peak RSS above a tiny run's against
    the table as float32 (and for twice the rows), and its epoch against the in-memory path's on the same rows."""
    rows, reps = cfg["stream_rows"], cfg["stream_reps"]
    features, files = streaming.FEATURES, streaming.FILES
    print(f"\n[7] streaming Parquet: {rows:,} x {features} features and y in {files} files (row groups of "
          f"{streaming.ROW_GROUP:,} rows), batch {streaming.BATCH:,}, shuffled, SGD, {streaming.EPOCHS} epochs: "
          f"peak RSS above a {table_load.TINY_ROWS}-row run, also for {2 * rows:,} rows; epochs after the first "
          f"against the in-memory path on the same rows as one file, decoding every epoch or with "
          f"--data.cache_dir; {reps} repetitions", flush=True)
    result = streaming.measure(rows, reps)
    mib, peak, epoch = table_load.mb, result["peak_rss"], result["epoch_s"]
    report.note(f"float32 table (features and target) {mib(result['float32_bytes'])}; peak RSS (median): tiny run "
                f"{mib(median(peak['tiny']))}, streaming {mib(median(peak['streaming']))}, streaming {2 * rows:,} "
                f"rows {mib(median(peak['double']))}, with data.cache_dir {mib(median(peak['cached']))}, in memory "
                f"{mib(median(peak['in_memory']))}")
    report.note(f"epochs after the first, seconds (median): in memory {median(epoch['in_memory']):.2f}, streaming "
                f"{median(epoch['streaming']):.2f}, with data.cache_dir {median(epoch['cached']):.2f} (its first "
                f"epoch {median(result['first_epoch_s']['cached']):.2f}); whole fit: " + ", ".join(
                    f"{name} {median([r['seconds'] for r in runs]):.1f}" for name, runs in result["runs"].items()))
    report.note("streaming fit's memory by phase: " + streaming.breakdown(result["runs"]["streaming"][0]["phases"]))
    note = "" if rows == 4_000_000 else f"{rows:,} rows"
    double = "" if rows == 4_000_000 else f"{2 * rows:,} rows"
    report.row("streaming memory, 4M x 16: peak RSS above a tiny run / float32 table (features and target)",
               result["memory"], "<= 0.5", note=note)
    report.row("streaming memory, 8M x 16: the same, twice the rows", result["memory_double"], "<= 0.5", note=double)
    report.row("streaming memory: peak above the tiny run, 8M / 4M rows", result["growth"], None, note=note)
    report.row("in-memory fit (4M x 16, one file): peak RSS above the tiny run / float32 table",
               result["memory_in_memory"], None, note=note)
    report.row("streaming memory with data.cache_dir, 4M x 16: the same", result["memory_cached"], None, note=note)
    report.row("streaming throughput: epoch rows/s streaming vs in memory (4M x 16), decoding every epoch",
               result["throughput"], ">= 0.5", note=note)
    report.row("streaming throughput with data.cache_dir: epochs after the first", result["throughput_cached"],
               ">= 0.5", note=note)
    report.row("streaming throughput with data.cache_dir: its first epoch (decoding and writing)",
               result["throughput_cached_first"], None, note=note)
    newton = result["runs"]["newton"][0]
    report.note(f"newton on the streamed folder: {result['newton_passes']} passes; {newton['optimization']}")
    report.row("streaming time to the optimum, 4M x 16: the default solver's passes vs one decoding epoch of SGD",
               result["to_optimum"], "<= 3", note=note)
    report.details["streaming"] = result


# --- figure 9: lit-regression serve against a bare LitServer; onnxruntime against torch ---------------------------
def figure_serving(report: Report, cfg: dict) -> None:
    """Requests/s and latency of ``lit-regression serve`` (raw JSON rows, encoded by ``Predictor``) at 64
    concurrent clients, one row a request, against a bare LitServer of the same torch model taking encoded
    inputs (the same batching and workers); the numeric path and the whole graph in onnxruntime against torch."""
    requests, reps = cfg["serve_requests"], cfg["serve_reps"]
    print(f"\n[9] serving: lit-regression serve vs a bare LitServer of the same torch model (encoded inputs), "
          f"{serving.CLIENTS} concurrent clients, one row a request, {requests:,} requests each, "
          f"{reps} repetitions (max_batch_size {serving.MAX_BATCH_SIZE}, batch_timeout {serving.BATCH_TIMEOUT:g} s, "
          f"{serving.WORKERS} worker); onnxruntime vs torch on 1 and {serving.BIG:,} rows", flush=True)
    result = serving.measure(requests, reps, cfg["serve_warmup"], cfg["onnx_reps"])
    s = result["summary"]
    ours, bare, null = s["ours"], s["bare"], s["null"]
    for name, label in (("ours", "lit-regression serve"), ("bare", "bare LitServer"), ("null", "no-work server")):
        r = s[name]
        report.note(f"{label}: {r['rps']:,.0f} requests/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms; the "
                    f"client used {r['client_cpu_per_s']:.2f} of a core" + (
                        f"; {r['failures']} requests failed, the first {r['first_failure']}" if r["failures"] else ""))
    failed = f"{ours['failures']} of {requests * reps:,} requests failed" if ours["failures"] else ""
    report.row("serving: requests/s of lit-regression serve vs a bare LitServer of the same torch model taking "
               "encoded inputs (64 clients, one row a request)", result["ratio"], ">= 0.8", note=failed)
    report.row("serving: lit-regression serve, requests/s", ours["rps"], None, unit="req/s")
    report.row("serving: lit-regression serve, p50 latency", ours["p50_ms"], None, unit="ms")
    report.row("serving: lit-regression serve, p99 latency", ours["p99_ms"], None, unit="ms")
    report.row("serving: bare LitServer, requests/s", bare["rps"], None, unit="req/s")
    report.row("serving: bare LitServer, p50 latency", bare["p50_ms"], None, unit="ms")
    report.row("serving: bare LitServer, p99 latency", bare["p99_ms"], None, unit="ms")
    report.row("serving: the client's ceiling, requests/s against a server that does no work / the bare LitServer's",
               null["rps"] / bare["rps"], None)
    for rows, r in result["onnx"]["rows"].items():
        ms = {f"{side} {kind}": 1e3 * median(r[f"{kind}_s"][side]) for kind in ("numeric", "whole")
              for side in r[f"{kind}_s"]}
        report.note(f"{rows:,} row{'s' if rows > 1 else ''}, ms per call (median): numeric path torch {ms['torch numeric']:.4g}, onnxruntime "
                    f"{ms['onnxruntime numeric']:.4g}; Predictor.predict {ms['predict whole']:.4g}, the whole ONNX "
                    f"graph {ms['onnxruntime whole']:.4g}")
        what = f"{rows:,} row{'s' if rows > 1 else ''}"
        report.row(f"onnxruntime vs torch, numeric path, {what}: torch's time / onnxruntime's", r["numeric_ratio"],
                   None)
        report.row(f"onnxruntime vs torch, whole graph from raw columns, {what}: Predictor.predict's time / "
                   "onnxruntime's", r["whole_ratio"], None)
    result.pop("server_logs", None)
    report.details["serving"] = result


# --- main -------------------------------------------------------------------------------------------------------
FIGURES = ("epoch", "process", "throughput", "gpu", "table", "side", "optimum", "streaming", "serving")  # --only's names


def main(argv: list[str] | None = None) -> int:
    global ON_DEVICE
    parser = argparse.ArgumentParser(
        description="lit_regression benchmarks: each figure a ratio against a reference measured in the same run "
                    "(benchmarks/README.md says what each measures); prints a table and always exits 0")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (smaller sizes, fewer repetitions)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--only", nargs="+",
                        choices=FIGURES,
                        help="run only these figures")
    parser.add_argument("--threads", type=int, help="torch intra-op threads, here and in the subprocesses "
                        "(default: torch's choice). On a small machine shared with other work, 1 avoids stalls "
                        "of parallel regions whose second thread is not scheduled")
    parser.add_argument("--gpu-device", default="cuda", help=argparse.SUPPRESS)  # 'cpu' exercises the GPU path
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    cfg = dict(QUICK if args.quick else FULL)
    only = set(args.only or FIGURES)
    quiet()
    start = time.perf_counter()
    info = machine()
    print("lit_regression benchmarks" + (" (--quick)" if args.quick else ""))
    print(f"machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable, torch uses "
          f"{info['torch_threads']} threads), load average {', '.join(f'{v:.2f}' for v in info['load_average'] or [])}")
    print(f"python {info['python']}, torch {info['torch']}, lightning {info['lightning']}, torchmetrics "
          f"{info['torchmetrics']}, GPU: {info['cuda'] or 'none'}")
    report = Report()
    figures = [("epoch", figure_per_epoch), ("process", figure_whole_process), ("throughput", figure_throughput)]
    for key, figure in figures:
        if key in only:
            try:
                figure(report, cfg, "cpu")
            except Exception as err:  # noqa: BLE001 - a report: say what broke and go on
                report.row(f"{key}: error", float("nan"), None, note=f"{type(err).__name__}: {err}"[:300])
    if "gpu" in only:
        gpu = args.gpu_device
        if gpu.startswith("cuda") and not torch.cuda.is_available():
            print("\n[4] GPU figures: skipped, torch.cuda.is_available() is False on this machine")
            report.row("GPU figures (1-3 with on_device=True)", None, None, note="no CUDA device")
        else:
            print(f"\n[4] the same figures on {gpu}, data on the device (on_device=True)")
            ON_DEVICE = True
            for key, figure in figures:
                if key in only:
                    try:
                        figure(report, cfg, gpu, label="GPU ")
                    except Exception as err:  # noqa: BLE001
                        report.row(f"GPU {key}: error", float("nan"), None, note=f"{type(err).__name__}: {err}"[:300])
    if "table" in only:  # CPU only: the figure is about host memory
        try:
            figure_table(report, cfg)
        except Exception as err:  # noqa: BLE001
            report.row("table: error", float("nan"), None, note=f"{type(err).__name__}: {err}"[:300])
    if "side" in only:
        try:
            figure_side_effects(report, cfg)
        except Exception as err:  # noqa: BLE001
            report.row("side effects: error", float("nan"), None, note=f"{type(err).__name__}: {err}"[:300])
    if "optimum" in only:
        try:
            figure_optimum(report, cfg)
        except Exception as err:  # noqa: BLE001
            report.row("optimum: error", float("nan"), None, note=f"{type(err).__name__}: {err}"[:300])
    if "streaming" in only:  # CPU only, as figure 5
        try:
            figure_streaming(report, cfg)
        except Exception as err:  # noqa: BLE001
            report.row("streaming: error", float("nan"), None, note=f"{type(err).__name__}: {err}"[:300])
    if "serving" in only:  # CPU only: LitServe's workers on the CPU
        try:
            figure_serving(report, cfg)
        except Exception as err:  # noqa: BLE001
            report.row("serving: error", float("nan"), None, note=f"{type(err).__name__}: {err}"[:300])
    elapsed = time.perf_counter() - start
    print(f"\nResults ({'quick' if args.quick else 'full'} run, {elapsed:.0f}s; ratios are medians of "
          "interleaved repetitions):\n")
    print(report.table())
    failed = [r["figure"] for r in report.rows if r["status"] in ("FAIL", "error")]
    print(f"\n{len(failed)} figure(s) miss their target or failed" + (": " + "; ".join(failed) if failed else ""))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "quick": args.quick, "threads": args.threads, "seconds": elapsed, "machine": info,
            "settings": {k: v for k, v in cfg.items() if not k.startswith("_")}, "rows": report.rows,
            "notes": report.notes, "details": report.details}, indent=2, default=str))
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # noqa: BLE001 - a report: say what broke, exit 0 all the same
        import traceback

        traceback.print_exc()
        print("benchmarks/run.py: the benchmark itself failed (see above)")
        sys.exit(0)
