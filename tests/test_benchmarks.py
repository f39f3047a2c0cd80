"""The benchmark runs end to end (``make bench`` is the judge of speed; nothing here is timed)."""

from __future__ import annotations

import json
import math
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
