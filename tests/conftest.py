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


def one_line_error(tmp_path: Path, capsys, files: dict[str, str], arguments: list[str], data: str) -> str:
    """Write ``files`` into ``tmp_path``, run ``fit`` with ``arguments`` (``{d}`` is ``tmp_path``) and the given
    datamodule, assert it exits 2 with one ``lit-regression: error:`` line and no traceback; return that line."""
    from lit_regression.cli import main

    for name, text in files.items():
        (tmp_path / name).write_text(text)
    arguments = [a.replace("{d}", str(tmp_path)) for a in arguments]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--model", "LinearRegression", "--data", data, *arguments,
              "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
              "--trainer.default_root_dir", str(tmp_path / "runs")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    message = [line for line in err.splitlines() if line.startswith("lit-regression: error:")]
    assert len(message) == 1, err
    return message[0]


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
