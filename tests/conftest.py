"""Shared helpers: run the real CLI in-process in tmp_path, read what TensorBoard logged."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_regression.cli import LitRegressionCLI, _quiet

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

_quiet()


def run_cli(*args: str, root: Path) -> LitRegressionCLI:
    """Run ``lit-regression ARGS --trainer.default_root_dir ROOT`` in this process, on the CPU."""
    return LitRegressionCLI(
        args=[*map(str, args), "--trainer.default_root_dir", str(root), "--trainer.accelerator", "cpu",
              "--trainer.enable_progress_bar", "false"]
    )


def fit_config(name: str, root: Path, *extra: str) -> LitRegressionCLI:
    return run_cli("fit", "--config", CONFIGS / name, *extra, root=root)


def versions(root: Path) -> list[Path]:
    return sorted((root / "lightning_logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


def scalars(log_dir: Path) -> dict[str, list[float]]:
    """Every scalar TensorBoard holds for a run, tag -> values in logging order."""
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "runs"
