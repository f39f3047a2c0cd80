"""The benchmark runs end to end (``make bench`` is the judge of speed; nothing here is timed)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_quick_benchmark_measures_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    # "--gpu-device cpu" runs the GPU figures' code path (data on the device, on_device=True) on the CPU
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--only", "epoch", "throughput", "gpu",
         "--gpu-device", "cpu", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = {row["figure"]: row for row in result["rows"]}
    assert not [name for name, row in rows.items() if row["status"] == "error"], done.stdout[-3000:]
    for prefix in ("", "GPU "):
        # measured (quick runs are too short for the ratio itself to mean much: it may even come out negative)
        assert math.isfinite(rows[f"{prefix}per-epoch fit vs bare LightningModule (same maths)"]["value"])
        assert rows[f"{prefix}throughput: fit with TensorBatches vs DataLoader(TensorDataset)"]["value"] > 0
        assert rows[f"{prefix}throughput: bare LightningModule on the same batches vs that plain loop (the floor)"][
            "value"] > 0
        # checkpoints bounded by time: none written between the short fits' last epochs
        assert result["details"][f"per_epoch{prefix}"]["checkpoint_writes_per_epoch"] == 0
    assert "WARNING" not in done.stdout


@pytest.mark.slow
def test_quick_serving_figure_measures_both_servers_and_stops_them(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--only", "serving", "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = {row["figure"]: row for row in result["rows"]}
    assert not [name for name, row in rows.items() if row["status"] == "error"], done.stdout[-3000:]
    ratio = next(row for name, row in rows.items() if name.startswith("serving: requests/s of lit-regression serve"))
    assert ratio["target"] == ">= 0.8" and ratio["value"] > 0
    serving = result["details"]["serving"]
    for name in ("ours", "bare", "null"):
        assert serving["summary"][name]["rps"] > 0 and serving["summary"][name]["failures"] == 0
        assert 0 < serving["summary"][name]["p50_ms"] <= serving["summary"][name]["p99_ms"]
    for n in ("1", "10000"):
        assert serving["onnx"]["rows"][n]["numeric_ratio"] > 0 and serving["onnx"]["rows"][n]["whole_ratio"] > 0
    for name, session in serving["server_sessions"].items():  # every server process stopped, workers included
        with pytest.raises(ProcessLookupError):
            os.killpg(session, 0)
    assert "WARNING" not in done.stdout
