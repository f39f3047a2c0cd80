"""Trustworthy under faults and bad input.

Exact resume after a SIGKILL, checkpoints that a kill cannot corrupt, a stop with one message at a non-finite
loss, checkpoints loaded as weights only (a malicious one runs nothing), one clear message and exit status 2 for
every bad checkpoint and config value (no traceback), and concurrent runs that never share a folder.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import CONFIGS, ROOT, LastCheckpoint, run_cli, versions
from lit_regression.batches import TensorBatches
from lit_regression.callbacks.finite import FiniteCheck
from lit_regression.checkpointing import AtomicCheckpointIO, RandomState, atomic_torch_save
from lit_regression.cli import main

CLI = [sys.executable, "-m", "lit_regression"]
LINE = ["--model", "LinearRegression", "--model.optimizer", "sgd", "--data", "LineDataModule", "--convergence.stop", "false"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--trainer.accelerator", "cpu"]


def cli_process(*args, root: Path, **popen) -> subprocess.Popen:
    """``python -m lit_regression ARGS`` as a real process, logging under ``root``."""
    command = [*CLI, *map(str, args), "--trainer.default_root_dir", str(root), *QUIET]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def run_main(capsys, *args, root: Path) -> tuple[int, str]:
    """``lit-regression ARGS`` in this process: (exit status, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main([*map(str, args), "--trainer.default_root_dir", str(root), *QUIET])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return exit_info.value.code, captured.err


def all_scalars(log_dir: Path) -> dict[str, dict[int, set[float]]]:
    """tag -> step -> every value logged at that step, over every events file of the folder."""
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    curves: dict[str, dict[int, set[float]]] = {}
    for tag in acc.Tags()["scalars"]:
        for event in acc.Scalars(tag):
            curves.setdefault(tag, {}).setdefault(event.step, set()).add(event.value)
    return curves


def finite(state_dict: dict) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in state_dict.values() if t.is_floating_point())


# --- fixtures: checkpoints good and bad -----------------------------------------------------------------------
class CreatesFile:
    """Unpickling this opens (creates) a file: what a malicious checkpoint could do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("ckpts")
    short = ["--trainer.max_epochs", "3", *QUIET]
    run_cli("fit", *LINE, *short, root=base / "linear")
    run_cli("fit", "--model", "TwoLayerRegression", "--data", "LineDataModule", *short, root=base / "two_layer")
    paths = {
        "linear": versions(base / "linear")[0] / "checkpoints" / "last.ckpt",
        "two_layer": versions(base / "two_layer")[0] / "checkpoints" / "last.ckpt",
        "text": base / "notes.txt",
        "evil": base / "evil.ckpt",
        "nan": base / "nan.ckpt",
        "pwned": base / "pwned",
        "base": base,
    }
    paths["text"].write_text("not a checkpoint\n")
    torch.save({"state_dict": {}, "payload": CreatesFile(str(paths["pwned"]))}, paths["evil"])
    diverged = torch.load(paths["linear"], weights_only=True)
    diverged["state_dict"]["linear.weight"].fill_(float("nan"))
    torch.save(diverged, paths["nan"])
    return paths


# --- 1. exact resume after SIGKILL ----------------------------------------------------------------------------
RESUME_RUN = [
    # --optimizer replaces the model's own: no --model.optimizer beside it
    "fit", *LINE[:2], *LINE[4:], "--data.n_samples", "160", "--data.noise", "0.1", "--data.batch_size", "16",
    "--data.shuffle", "true", "--optimizer", "Adam", "--optimizer.lr", "0.05",
    "--trainer.max_epochs", "12", "--trainer.log_every_n_steps", "1",
]


def assert_same_state(ours: dict, theirs: dict) -> None:
    """Two checkpoints at the same point of training, bit for bit: weights, buffers, optimizer state."""
    assert ours["epoch"] == theirs["epoch"] and ours["global_step"] == theirs["global_step"]
    assert ours["state_dict"].keys() == theirs["state_dict"].keys()
    for key, value in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][key], value), key
    for mine, other in zip(ours["optimizer_states"], theirs["optimizer_states"], strict=True):
        assert mine["state"].keys() == other["state"].keys()
        for param, state in other["state"].items():
            for name, value in state.items():
                assert torch.equal(mine["state"][param][name], value) if torch.is_tensor(value) else (
                    mine["state"][param][name] == value), (param, name)


def progress_process(*args, root: Path) -> subprocess.Popen:
    """:func:`cli_process` with the progress bar on: without a terminal it prints ``epoch K/N ...`` lines."""
    command = [*CLI, *map(str, args), "--trainer.default_root_dir", str(root), "--trainer.accelerator", "cpu"]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def epochs_done(line: str) -> int | None:
    """``K`` of a progress line ``epoch K/N ...``."""
    parts = line.split()
    if len(parts) > 1 and parts[0] == "epoch" and "/" in parts[1]:
        return int(parts[1].split("/")[0])
    return None


def resume_matches_an_uninterrupted_run(last: LastCheckpoint, args: list, full_root: Path) -> None:
    """Resume from ``last`` (in a process), run ``args`` uninterrupted under ``full_root``: the same end state."""
    resumed = cli_process(*args, "--ckpt_path", "last", root=last.root)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    run_cli(*args, *QUIET, root=full_root)
    assert_same_state(torch.load(last, weights_only=True),
                      torch.load(versions(full_root)[0] / "checkpoints" / "last.ckpt", weights_only=True))


LONG_RUN = [*RESUME_RUN[:-4], "--trainer.max_epochs", "300", "--plots.enabled", "false"]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_finishes_the_epoch_writes_it_and_resumes_bit_identical(signum, tmp_path):
    """The default schedule (every 30 s) writes nothing during this run of a few seconds: the signal alone makes
    the run write the epoch it finishes, and exit with 128 + the signal."""
    stopped_root, full_root = tmp_path / "stopped", tmp_path / "full"
    last = LastCheckpoint(stopped_root)
    stopped = progress_process(*LONG_RUN, root=stopped_root)
    output = []
    for line in stopped.stdout:
        output.append(line)
        if (epochs_done(line) or 0) >= 60:
            assert torch.load(last, weights_only=True)["epoch"] == 0  # the first epoch's, none on the schedule since
            stopped.send_signal(signum)
            break
    output += stopped.stdout.readlines()
    stopped.wait(timeout=120)
    assert stopped.returncode == 128 + signum, "".join(output)
    text = "".join(output)
    assert "Traceback" not in text
    name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    (line,) = [line for line in output if line.startswith(f"lit-regression: stopped by {name} after epoch")]
    epoch = int(line.split("after epoch ")[1].split(";")[0])
    assert 60 <= epoch < 299 and str(last) in line and "--ckpt_path last" in line
    assert torch.load(last, weights_only=True)["epoch"] == epoch
    best = versions(stopped_root)[0] / "checkpoints"
    assert len([p for p in best.iterdir() if p.name.startswith("epoch=")]) == 1  # the best, held in memory till now
    assert not (versions(stopped_root)[0] / "predictions.csv").exists()  # an interrupted fit writes no results

    resume_matches_an_uninterrupted_run(last, LONG_RUN, full_root)


@pytest.mark.slow
def test_sigkill_between_two_scheduled_writes_then_resume_is_bit_identical(tmp_path):
    """``last.ckpt`` every 0.5 s: killed after the run got past its last write, the resume redoes the epochs since
    and ends where an uninterrupted run ends."""
    killed_root, full_root = tmp_path / "killed", tmp_path / "full"
    last = LastCheckpoint(killed_root)
    args = [*LONG_RUN, "--checkpoint.every_n_seconds", "0.5"]
    killed = progress_process(*args, root=killed_root)
    written_before_kill = None
    for line in killed.stdout:
        done = epochs_done(line)
        if done is None or not last.exists():
            continue
        written = torch.load(last, weights_only=True)["epoch"]
        if written < done - 1:  # the run is past the epoch of its last write: kill before the next one
            killed.send_signal(signal.SIGKILL)
            written_before_kill = written
            break
    killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed between two writes"
    killed_at = torch.load(last, weights_only=True)["epoch"]
    assert written_before_kill <= killed_at < 299

    resume_matches_an_uninterrupted_run(last, args, full_root)


def killed_beside_full(args: list, killed_root: Path, full_root: Path, epoch: int = 2):
    """Run ``args`` in a process killed (SIGKILL) just after its checkpoint of ``epoch``, and meanwhile the same
    run uninterrupted in this process; the uninterrupted run's CLI object."""
    last = LastCheckpoint(killed_root)
    killed = cli_process(*args, root=killed_root)
    killer = threading.Thread(target=kill_after_checkpoint, args=(killed, last, epoch))
    killer.start()
    try:
        full = run_cli(*args, root=full_root)
        killer.join()
    finally:
        if killed.poll() is None:
            killed.send_signal(signal.SIGKILL)
        killed.communicate()
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    return full


def kill_after_checkpoint(process: subprocess.Popen, last: Path, epoch: int) -> None:
    """SIGKILL ``process`` just after its ``last`` checkpoint holds ``epoch`` (or a later one): between two
    checkpoints, in the next epoch."""
    seen, deadline = None, time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        if last.exists() and last.stat().st_mtime_ns != seen:
            seen = last.stat().st_mtime_ns
            if torch.load(last, weights_only=True)["epoch"] >= epoch:
                time.sleep(0.03)  # into the next epoch, between two checkpoints
                process.send_signal(signal.SIGKILL)
                return
        time.sleep(0.002)


@pytest.mark.slow
def test_sigkill_then_resume_last_is_bit_identical(tmp_path):
    """With ``last.ckpt`` at every epoch end (``every_n_seconds 0``): the same to the step, curves included."""
    killed_root, full_root = tmp_path / "killed", tmp_path / "full"
    last = LastCheckpoint(killed_root)
    full = killed_beside_full([*RESUME_RUN, "--checkpoint.every_n_seconds", "0"], killed_root, full_root)
    killed_at = torch.load(last, weights_only=True)["epoch"]
    assert 2 <= killed_at < 11

    resumed = cli_process(*RESUME_RUN, "--checkpoint.every_n_seconds", "0", "--ckpt_path", "last", root=killed_root)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "Traceback" not in err

    # one version folder: the resumed run logged on where the killed one stopped, and kept its config
    (run,) = versions(killed_root)
    assert (run / "config.yaml").is_file() and (run / "config-resume-1.yaml").is_file()
    assert yaml.safe_load((run / "config-resume-1.yaml").read_text())["ckpt_path"] == str(last)
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]

    # bit-identical weights and optimizer state
    ours = torch.load(last, weights_only=True)
    theirs = torch.load(versions(full_root)[0] / "checkpoints" / "last.ckpt", weights_only=True)
    assert ours["epoch"] == theirs["epoch"] == 11 and ours["global_step"] == theirs["global_step"] == 96
    assert ours["state_dict"].keys() == theirs["state_dict"].keys()
    for key, value in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][key], value), key
    for key, value in full.model.state_dict().items():
        assert torch.equal(ours["state_dict"][key], value), key
    (adam_ours,), (adam_theirs,) = ours["optimizer_states"], theirs["optimizer_states"]
    for param, state in adam_theirs["state"].items():
        for name, value in state.items():
            assert torch.equal(adam_ours["state"][param][name], value), (param, name)

    # the same curves: every step once in the uninterrupted run; the steps the killed run logged after its last
    # checkpoint were logged again on resume, with the very same values
    full_curves, resumed_curves = all_scalars(versions(full_root)[0]), all_scalars(run)
    assert {"train_loss", "val_loss"} <= set(full_curves)
    assert full_curves.keys() == resumed_curves.keys()
    for tag, steps in full_curves.items():
        assert steps.keys() == resumed_curves[tag].keys(), tag
        for step, values in steps.items():
            assert resumed_curves[tag][step] == values, (tag, step)
    assert len(full_curves["train_loss"]) == 12


def test_resume_continues_the_run_folder_and_a_branch_gets_a_new_one(tmp_path):
    short = [*LINE, "--trainer.max_epochs", "3"]
    run_cli("fit", *short, root=tmp_path)
    (run,) = versions(tmp_path)
    resumed = run_cli("fit", *LINE, "--trainer.max_epochs", "5", "--ckpt_path", "last", root=tmp_path)
    assert versions(tmp_path) == [run] and resumed.trainer.log_dir == str(run)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 4
    assert (run / "config-resume-1.yaml").is_file()
    best = next(p for p in (run / "checkpoints").iterdir() if p.name.startswith("epoch="))
    run_cli("fit", *LINE, "--trainer.max_epochs", "6", "--ckpt_path", best, root=tmp_path)  # a branch, not a resume
    assert len(versions(tmp_path)) == 2 and versions(tmp_path)[0] == run
    assert not (run / "config-resume-2.yaml").exists()


def test_data_order_follows_the_epoch_lightning_sets(tmp_path, monkeypatch):
    """Shuffling depends on the epoch only, and Lightning hands the epoch to TensorBatches (on resume, the restored
    one): so a resumed run sees the same batches as an uninterrupted one."""
    calls = []
    original = TensorBatches.set_epoch

    def recording(self, epoch):
        calls.append((self.shuffle, epoch))
        original(self, epoch)

    monkeypatch.setattr(TensorBatches, "set_epoch", recording)
    run_cli(*RESUME_RUN[:-4], "--trainer.max_epochs", "3", root=tmp_path)
    assert [epoch for shuffle, epoch in calls if shuffle] == [0, 1, 2]
    x = torch.arange(10.0)
    loader = TensorBatches(x, batch_size=4, shuffle=True, seed=42)
    orders = []
    for epoch in (0, 1, 0):
        loader.set_epoch(epoch)
        orders.append(torch.cat([b[0] for b in loader]))
    assert torch.equal(orders[0], orders[2]) and not torch.equal(orders[0], orders[1])


def test_random_state_is_saved_and_restored():
    callback = RandomState()
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    state = callback.state_dict()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(2), np.random.seed(2), random.seed(2)
    callback.load_state_dict(state)
    callback.on_train_start(type("T", (), {"world_size": 1})(), None)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


# --- atomic checkpoint writes ---------------------------------------------------------------------------------
def test_checkpoints_are_written_by_the_atomic_writer_and_load_as_weights_only(ckpts):
    checkpoint = torch.load(ckpts["linear"], weights_only=True)  # plain values and tensors only
    assert "RandomState" in checkpoint["callbacks"]

    def plain(value) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (str, int, float, bool))

    assert plain(checkpoint["hyper_parameters"]) and plain(checkpoint["datamodule_hyper_parameters"])
    assert not [p for p in ckpts["linear"].parent.iterdir() if not p.name.endswith(".ckpt")]


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    atomic_torch_save({"epoch": 1}, target)

    def dies_halfway(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # as if the process were stopped in the middle of the write

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"epoch": 2}, str(target))
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["last.ckpt"]

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".last.ckpt.{dead.pid}.x1y2.tmp"  # left by a writer that was killed
    stale.write_bytes(b"partial")
    atomic_torch_save({"epoch": 3}, target)
    assert os.listdir(tmp_path) == ["last.ckpt"]
    assert torch.load(target, weights_only=True) == {"epoch": 3}


WRITER = """
import sys, torch
from lit_regression.checkpointing import atomic_torch_save
big = torch.arange(float(sys.argv[2]))
atomic_torch_save({"epoch": 0, "x": big[:10]}, sys.argv[1])
print("ready", flush=True)
epoch = 0
while True:
    epoch += 1
    atomic_torch_save({"epoch": epoch, "x": big}, sys.argv[1])
"""


@pytest.mark.slow
def test_sigkill_during_a_write_leaves_a_loadable_checkpoint(tmp_path):
    target = tmp_path / "last.ckpt"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target), "8e6"], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")] and time.monotonic() < deadline:
            time.sleep(0.001)
        writer.send_signal(signal.SIGKILL)  # while a temporary file is being written
    finally:
        writer.kill()
        writer.communicate()
    checkpoint = torch.load(target, weights_only=True)
    assert checkpoint["epoch"] == 0 or len(checkpoint["x"]) == 8_000_000


# --- 2. non-finite loss ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_nan_stops_at_once_with_one_message_and_keeps_the_last_good_checkpoint(tmp_path):
    process = cli_process("fit", "--config", CONFIGS / "line_linear.yaml", "--model.loss", "mse",
                          "--model.lr", "1e30", "--trainer.max_epochs", "20", root=tmp_path)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 2
    assert "Traceback" not in out + err
    (line,) = [line for line in err.splitlines() if line.startswith("lit-regression: error:")]
    assert "training diverged at epoch 1, step 1" in line and "the training loss is inf" in line
    assert "lower learning rate" in line and "standardised inputs" in line
    last = LastCheckpoint(tmp_path)  # written at the end of the first epoch
    assert f"the last good checkpoint is kept: {last}" in line
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["epoch"] == 0 and finite(checkpoint["state_dict"])


def test_nan_is_not_saved_even_with_save_on_exception(tmp_path, capsys):
    code, err = run_main(capsys, "fit", "--config", CONFIGS / "line_linear.yaml", "--model.loss", "mse",
                         "--model.lr", "1e30", "--trainer.max_epochs", "20",
                         "--checkpoint.save_on_exception", "true", root=tmp_path)
    assert code == 2 and "training diverged at epoch 1, step 1" in err
    (ckpt_dir,) = [v / "checkpoints" for v in versions(tmp_path)]
    for path in ckpt_dir.iterdir():
        checkpoint = torch.load(path, weights_only=True)
        assert checkpoint["epoch"] == 0 and finite(checkpoint["state_dict"]), path.name


def test_parameters_that_overflow_are_caught_before_the_epoch_checkpoint(tmp_path, capsys):
    code, err = run_main(capsys, "fit", *LINE, "--model.lr", "1e37", "--data.weight", "100",
                         "--trainer.max_epochs", "3", root=tmp_path)
    assert code == 2
    assert "epoch 0, step 0" in err and "linear.weight became non-finite" in err
    assert "no checkpoint had been written yet" in err
    assert not list(tmp_path.rglob("*.ckpt"))  # Lightning alone would save inf weights here
    assert not versions(tmp_path)  # it logged nothing before it stopped: no run folder is left


def test_finite_check_and_atomic_writer_are_registered(tmp_path):
    cli = run_cli("fit", *LINE, "--trainer.max_epochs", "1", root=tmp_path)
    assert any(isinstance(c, FiniteCheck) for c in cli.trainer.callbacks)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


@pytest.mark.parametrize("fsync", [False, True])
def test_fsync_before_the_rename_is_opt_in(fsync, tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real(fd))
    extra = ["--trainer.plugins", "lit_regression.checkpointing.AtomicCheckpointIO", "--trainer.plugins.fsync",
             "true"] if fsync else []
    cli = run_cli("fit", *LINE, "--trainer.max_epochs", "3", "--plots.enabled", "false", *extra, root=tmp_path)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    writes = len(list((versions(tmp_path)[0] / "checkpoints").iterdir()))
    # last.ckpt and the best epoch's at the end of the first epoch and when fit ends, not at the epoch between
    assert len(synced) == (4 if fsync else 0)
    assert writes == 2


# --- 3./4. unsafe and unsuitable checkpoints; 5. config mistakes ----------------------------------------------
FIT = ["fit", *LINE, "--trainer.max_epochs", "1"]
BAD_INPUTS = [
    # (id, arguments, what the message must say); {name} is replaced by the path of ckpts[name]
    ("unknown key", [*FIT, "--model.lrr", "0.1"], ["lrr"]),
    ("unknown option", [*FIT, "--trainer.nonsense", "3"], ["--trainer.nonsense"]),
    ("wrong type", [*FIT, "--model.lr", "abc"], ['"lr"', "float"]),
    ("wrong type int", [*FIT, "--data.batch_size", "x"], ['"batch_size"', "int"]),
    ("negative lr", [*FIT, "--model.lr", "-0.1"], ["model lr=-0.1 is invalid"]),
    ("negative weight decay", [*FIT, "--model.weight_decay", "-1"], ["weight_decay=-1"]),
    ("negative checkpoint interval", [*FIT, "--checkpoint.every_n_seconds", "-1"],
     ["checkpoint every_n_seconds=-1.0 is invalid", ">= 0"]),
    ("negative optimizer lr", [*FIT, "--optimizer", "SGD", "--optimizer.lr", "-1"], ["optimizer.lr=-1.0 is invalid"]),
    ("max_epochs 0", [*FIT, "--trainer.max_epochs", "0"], ["trainer.max_epochs=0 is invalid"]),
    ("max_epochs -5", [*FIT, "--trainer.max_epochs", "-5"], ["trainer.max_epochs=-5 is invalid"]),
    ("val_size 1", [*FIT, "--data.val_size", "1.0"], ["val_size=1.0 is invalid"]),
    ("val_size 1.5", [*FIT, "--data.val_size", "1.5"], ["val_size=1.5 is invalid"]),
    ("val_size all rows", [*FIT, "--data.val_size", "50"], ["val_size=50 leaves no training rows"]),
    ("batch_size 0", [*FIT, "--data.batch_size", "0"], ["batch_size=0 is invalid"]),
    ("unknown loss", [*FIT, "--model.loss", "cubic"], ['"loss"', "cubic", "'mse', 'l1', 'huber'"]),
    ("end before start", [*FIT, "--data.end", "0"], ["end=0.0 is invalid"]),
    ("task mismatch", ["fit", "--model", "LogisticRegression", "--data", "LineDataModule"], ["does classification"]),
    ("missing config", [*FIT, "--config", "nowhere.yaml"], ["nowhere.yaml"]),
    ("missing checkpoint", ["predict", "--ckpt_path", "nowhere.ckpt"], ["ckpt_path='nowhere.ckpt': no such file"]),
    ("text as checkpoint", ["predict", "--ckpt_path", "{text}"], ["is not a PyTorch checkpoint"]),
    ("directory as checkpoint", ["test", "--ckpt_path", "{base}"], ["no such file"]),
    ("malicious checkpoint", ["predict", "--ckpt_path", "{evil}"], ["is refused", "could run code"]),
    ("diverged checkpoint", ["predict", "--ckpt_path", "{nan}"], ["linear.weight holds non-finite values"]),
    ("other model family", ["validate", "--ckpt_path", "{two_layer}", "--model", "LinearRegression"],
     ["holds a TwoLayerRegression", "model is LinearRegression", "linear1.weight"]),
    ("other family, fit", ["fit", "--ckpt_path", "{linear}", "--model", "TwoLayerRegression"],
     ["holds a LinearRegression", "model is TwoLayerRegression"]),
    ("other shape", ["test", "--ckpt_path", "{linear}", "--data", "MakeRegressionDataModule", "--data.n_features", "3"],
     ["linear.weight has shape (1, 1) in the checkpoint and (1, 3) in the model"]),
    ("last with no run", [*FIT, "--ckpt_path", "last"], ["ckpt_path='last': there is no last.ckpt"]),
    ("huge data", [*FIT, "--data.weight", "1e30"], ["training diverged at epoch 0, step 0", "loss is inf"]),
    ("fewer epochs than resumed", ["fit", "--ckpt_path", "{linear}", "--trainer.max_epochs", "1"],
     ["restored a checkpoint with current_epoch=2", "max_epochs=1"]),
]


@pytest.mark.parametrize("args, expected", [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_gives_one_message_and_status_2(args, expected, ckpts, tmp_path, capsys):
    args = [a.format(**ckpts) if isinstance(a, str) else a for a in args]
    code, err = run_main(capsys, *args, root=tmp_path)
    assert code == 2
    for text in expected:
        assert text.format(**ckpts) in err
    assert not ckpts["pwned"].exists()


def test_malicious_last_checkpoint_is_refused_on_resume(ckpts, tmp_path, capsys):
    planted = tmp_path / "someone" / "2026-01-01_00-00-00" / "checkpoints" / "last.ckpt"
    planted.parent.mkdir(parents=True)
    planted.write_bytes(ckpts["evil"].read_bytes())
    code, err = run_main(capsys, *FIT, "--ckpt_path", "last", root=tmp_path)
    assert code == 2 and f"ckpt_path={str(planted)!r} is refused" in err
    assert not ckpts["pwned"].exists()


@pytest.mark.slow
def test_bad_input_in_a_real_process(ckpts, tmp_path):
    pwned = tmp_path / "pwned"
    torch.save({"state_dict": {}, "payload": CreatesFile(str(pwned))}, tmp_path / "evil.ckpt")
    processes = [
        cli_process(*FIT, "--data.val_size", "1.0", root=tmp_path),
        cli_process("predict", "--ckpt_path", tmp_path / "evil.ckpt", root=tmp_path),
    ]
    results = [p.communicate(timeout=300) for p in processes]
    for process, (out, err) in zip(processes, results):
        assert process.returncode == 2
        assert "Traceback" not in out + err
    assert results[0][1].strip().endswith("lit-regression: error: val_size=1.0 is invalid: a fraction must be below 1")
    assert "is refused" in results[1][1]
    assert not pwned.exists()


# --- 6. concurrent runs ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_concurrent_runs_get_separate_version_folders(tmp_path):
    processes = [cli_process(*FIT, "--trainer.max_epochs", "3", "--model.lr", lr, root=tmp_path)
                 for lr in ("0.01", "0.02")]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    runs = versions(tmp_path)
    assert len(runs) == 2 and runs[0].parent == runs[1].parent and runs[0] != runs[1]
    lrs = sorted(yaml.safe_load((r / "config.yaml").read_text())["model"]["init_args"]["lr"] for r in runs)
    assert lrs == [0.01, 0.02]
    for run in runs:
        assert len(list(run.glob("events.out.tfevents.*"))) == 1
        assert (run / "checkpoints" / "last.ckpt").is_file()
        assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2


def test_the_best_checkpoint_named_on_disk_stays_until_its_replacement_is_written(tmp_path):
    """A new best is held in memory until the next scheduled write: the one it replaces must stay on disk meanwhile,
    so that a kill at any moment leaves a last.ckpt whose best checkpoint exists."""
    import lightning as L

    seen = []

    class Watch(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            last = LastCheckpoint(tmp_path)
            if last.exists():
                state = torch.load(last, weights_only=True)["callbacks"]
                (best,) = [s["best_model_path"] for k, s in state.items() if "ResumableCheckpoint" in k]
                seen.append((trainer.current_epoch, os.path.exists(best)))

    from lit_regression.cli import LitRegressionCLI

    LitRegressionCLI(args=["fit", *LINE, "--model.loss", "mse", "--model.lr", "0.001", "--trainer.max_epochs", "6",
                           "--checkpoint.every_n_seconds", "1000", "--trainer.default_root_dir", str(tmp_path),
                           *QUIET], trainer_defaults={"callbacks": [Watch()]})
    assert [epoch for epoch, _ in seen] == [1, 2, 3, 4, 5]  # last.ckpt from the first epoch's end on
    assert all(exists for _, exists in seen), seen
    files = sorted(p.name for p in (versions(tmp_path)[0] / "checkpoints").iterdir())
    assert files == ["epoch=5-step=6.ckpt", "last.ckpt"]  # the replaced best deleted once the new one was written
