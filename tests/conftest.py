"""Shared helpers: run the real CLI in-process in tmp_path, read what TensorBoard logged."""

from __future__ import annotations

import os
import socket

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_regression.cli import LitRegressionCLI, _quiet

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

_quiet()


HANDED_OUT: set[int] = set()  # ports given to this test process's servers (TensorBoard, serve)


def free_port() -> int:
    """A port nothing listens on, and not one given to another server here: bind(0) can hand the same closed port
    out twice while the first server is still importing torch."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port not in HANDED_OUT:
            HANDED_OUT.add(port)
            return port


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
    """The folder of every command run under ``root``, in the order they were made: run folders
    (``NAME/TIMESTAMP``) and their stages (``NAME/TIMESTAMP/test`` ...), each holding its config.yaml."""
    folders = {}
    for config in Path(root).rglob("config*.yaml"):
        if config.parent != Path(root):
            folders[config.parent] = min(folders.get(config.parent, float("inf")), config.stat().st_mtime_ns)
    return sorted(folders, key=folders.get)


class LastCheckpoint(os.PathLike):
    """The newest ``last.ckpt`` under ``root``, looked up at each use: a path to poll while a run writes it (its
    run folder is named when the run starts)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __fspath__(self) -> str:
        from lit_regression.checkpointing import find_last_checkpoint

        return find_last_checkpoint(str(self.root)) or str(self.root / "not-yet" / "last.ckpt")

    __str__ = __fspath__

    def exists(self) -> bool:
        return os.path.exists(self)

    def stat(self) -> os.stat_result:
        return os.stat(self)


def runs(root: Path) -> list[Path]:
    """The run folders under ``root`` (no stages), in the order they were made."""
    return [v for v in versions(root) if not any(v.parent.glob("config*.yaml"))]


def scalars(log_dir: Path) -> dict[str, list[float]]:
    """Every scalar TensorBoard holds for a run, tag -> values in logging order."""
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "runs"
