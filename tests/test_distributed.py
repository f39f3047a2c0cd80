"""The same run on any hardware. Two-process DDP on CPU (gloo) against one process, torchrun, mixed
precision, and the GPU paths (skipped without a GPU)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import CONFIGS, ROOT, fit_config, run_cli, runs, scalars, versions

EPOCHS = "60"
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def cli_process(*args: str, root: Path, launcher: list[str] | None = None, timeout: int = 240):
    """Run the real command line in a fresh process (DDP re-launches it once per rank)."""
    command = [*(launcher or [sys.executable, "-m"]), "lit_regression", *map(str, args),
               "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=ENV, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def parameters(ckpt: Path) -> torch.Tensor:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    return torch.cat([state["linear.weight"].reshape(-1), state["linear.bias"].reshape(-1)])


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("single")
    fit_config("line_linear.yaml", root, "--trainer.max_epochs", EPOCHS)
    return versions(root)[0]


@pytest.fixture(scope="module")
def ddp(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    cli_process("fit", "--config", CONFIGS / "line_linear.yaml", "--trainer.max_epochs", EPOCHS,
                "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp", root=root)
    return root


@pytest.mark.slow
def test_two_processes_learn_what_one_learns(single, ddp):
    (run,) = runs(ddp)  # one version folder for both processes
    assert parameters(run / "checkpoints" / "last.ckpt") == pytest.approx(
        parameters(single / "checkpoints" / "last.ckpt"), abs=1e-6)
    one, two = scalars(single), scalars(run)
    for tag in ("train_loss", "val_loss"):
        assert len(two[tag]) == int(EPOCHS)
        assert two[tag] == pytest.approx(one[tag], abs=1e-6), tag
    assert two["val_r2"] == pytest.approx(one["val_r2"], rel=1e-6)  # float32 sums in another order
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == sorted(
        p.name for p in (single / "checkpoints").iterdir())


@pytest.mark.slow
def test_ddp_predictions_hold_every_row_once_in_order(single, ddp):
    (run,) = runs(ddp)
    two, one = pd.read_csv(run / "predictions.csv"), pd.read_csv(single / "predictions.csv")
    assert two["row"].tolist() == list(range(50))
    assert two["y"].to_numpy() == pytest.approx(one["y"].to_numpy(), abs=1e-6)


@pytest.mark.slow
def test_ddp_test_and_predict_from_checkpoint(single, ddp, tmp_path):
    (run,) = runs(ddp)
    ckpt = run / "checkpoints" / "last.ckpt"
    ddp_flags = ("--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp")
    cli_process("test", "--ckpt_path", ckpt, *ddp_flags, root=tmp_path)
    cli_process("predict", "--ckpt_path", ckpt, *ddp_flags, root=tmp_path)
    tested, predicted = run / "test", run / "predict"  # stages of the checkpoint's run, chosen by the first process
    assert runs(ddp) == [run] and not tmp_path.joinpath("test").exists()
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["checkpoints", "figures", "predict", "test"]
    reference = run_cli("test", "--ckpt_path", ckpt, "--name", "one", root=tmp_path)
    assert scalars(tested)["test_loss"] == [pytest.approx(float(reference.trainer.callback_metrics["test_loss"]), abs=1e-7)]
    assert pd.read_csv(predicted / "predictions.csv")["row"].tolist() == list(range(50))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun")
def test_torchrun_two_processes(single, tmp_path):
    torchrun = str(Path(sys.executable).parent / "torchrun")
    cli_process("fit", "--config", CONFIGS / "line_linear.yaml", "--trainer.max_epochs", EPOCHS,
                "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
                root=tmp_path, launcher=[torchrun, "--standalone", "--nproc_per_node", "2", "-m"])
    (run,) = versions(tmp_path)
    assert parameters(run / "checkpoints" / "last.ckpt") == pytest.approx(
        parameters(single / "checkpoints" / "last.ckpt"), abs=1e-6)


def test_bf16_mixed_precision_on_cpu(root):
    cli = fit_config("breast_cancer.yaml", root, "--trainer.max_epochs", "3", "--trainer.precision", "bf16-mixed")
    logged = scalars(versions(root)[0])
    assert all(torch.isfinite(torch.tensor(logged[tag])).all() for tag in ("train_loss", "val_loss", "val_acc"))
    assert pd.read_csv(versions(root)[0] / "predictions.csv")["prob_1"].between(0, 1).all()
    assert next(cli.model.parameters()).dtype == torch.float32  # weights stay float32; autocast does bf16 math


def test_tests_run_on_cpu_whatever_the_machine(root):
    cli = fit_config("line_parameter.yaml", root, "--trainer.max_epochs", "1")
    assert cli.trainer.strategy.root_device.type == "cpu"
    assert all(t.dtype == torch.float32 for split in cli.datamodule.splits.values() for t in split[:1])


def _gpu() -> str | None:
    if torch.cuda.is_available():
        return "gpu"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return None


@pytest.mark.gpu
@pytest.mark.skipif(_gpu() is None, reason="needs a CUDA or MPS device")
def test_gpu_fit_matches_cpu_and_checkpoint_loads_on_cpu(root, single):
    accelerator = _gpu()
    cli = run_cli("fit", "--config", CONFIGS / "line_linear.yaml", "--trainer.max_epochs", EPOCHS,
                  "--trainer.accelerator", accelerator, "--data.on_device", "true", root=root)
    run = versions(root)[0]
    assert cli.trainer.strategy.root_device.type in ("cuda", "mps")
    assert parameters(run / "checkpoints" / "last.ckpt") == pytest.approx(
        parameters(single / "checkpoints" / "last.ckpt"), abs=1e-5)  # different kernels: not bit-identical
    tested = run_cli("test", "--ckpt_path", run / "checkpoints" / "last.ckpt", "--trainer.accelerator", "cpu",
                     root=root)
    assert tested.trainer.strategy.root_device.type == "cpu"
    assert pd.read_csv(run / "predictions.csv")["row"].tolist() == list(range(50))


@pytest.mark.gpu
@pytest.mark.skipif(_gpu() != "gpu" or torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_gpu_ddp_matches_one_process(single, tmp_path):
    cli_process("fit", "--config", CONFIGS / "line_linear.yaml", "--trainer.max_epochs", EPOCHS,
                "--trainer.accelerator", "gpu", "--trainer.devices", "2", "--trainer.strategy", "ddp", root=tmp_path)
    (run,) = versions(tmp_path)
    assert parameters(run / "checkpoints" / "last.ckpt") == pytest.approx(
        parameters(single / "checkpoints" / "last.ckpt"), abs=1e-5)


@pytest.mark.slow
def test_ddp_on_a_table_with_categories_and_gaps(tmp_path):
    """fit, validate, test and predict on a table with text categories and empty cells, two processes against one."""
    sys.path.insert(0, str(ROOT / "examples" / "data"))
    from make_insurance import make

    table = tmp_path / "insurance.csv"
    make(300).to_csv(table, index=False)
    new = tmp_path / "new.csv"
    make(40, seed=5).assign(region=lambda f: f["region"].replace("northwest", "Lyon")).to_csv(new, index=False)
    flags = ("--model", "LinearRegression", "--data", "TableDataModule", "--data.path", table, "--data.target",
             "charges", "--data.impute", "median", "--data.test_fraction", "0.2", "--data.standardize_target", "true",
             "--optimizer", "Adam", "--optimizer.lr", "0.05", "--trainer.max_epochs", "20")
    ddp_flags = ("--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp")
    run_cli("fit", *flags, root=tmp_path / "one")
    cli_process("fit", *flags, *ddp_flags, root=tmp_path / "two")
    (one,), (two,) = versions(tmp_path / "one"), versions(tmp_path / "two")
    assert parameters(two / "checkpoints" / "last.ckpt") == pytest.approx(
        parameters(one / "checkpoints" / "last.ckpt"), abs=1e-6)
    ckpt = two / "checkpoints" / "last.ckpt"
    for command in ("validate", "test"):
        result = cli_process(command, "--ckpt_path", ckpt, *ddp_flags, root=tmp_path / command)
        reference = run_cli(command, "--ckpt_path", ckpt, "--name", "one", root=tmp_path / f"{command}_one")
        tag = "val_loss" if command == "validate" else "test_loss"
        assert scalars(two / command)[tag] == [
            pytest.approx(float(reference.trainer.callback_metrics[tag]), rel=1e-6)], result.stdout[-2000:]
    result = cli_process("predict", "--ckpt_path", ckpt, "--data.predict_path", new, *ddp_flags,
                         root=tmp_path / "predict")
    assert result.stderr.count("categories not seen in training") == 1  # one line, from one process
    predicted = pd.read_csv(two / "predict" / "predictions.csv")
    run_cli("predict", "--ckpt_path", ckpt, "--data.predict_path", new, "--name", "one", root=tmp_path / "predict_one")
    reference = pd.read_csv(versions(tmp_path / "predict_one")[0] / "predictions.csv")
    assert predicted["row"].tolist() == list(range(40))
    assert predicted["charges"].to_numpy() == pytest.approx(reference["charges"].to_numpy(), rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["lbfgs", "newton"])
def test_ddp_full_batch_converges_like_one_process(tmp_path, optimizer):
    """Two processes must take the same steps (L-BFGS: the closure's loss is averaged over processes, so the line
    searches decide alike; Newton: the pass's sums are summed over them) and reach the optimum of all training
    rows, as one process does."""
    import json

    flags = ("--model", "LinearRegression", "--data", "TableDataModule", "--data.path",
             ROOT / "examples" / "data" / "diabetes.csv", "--data.target", "progression",
             "--model.optimizer", optimizer)
    run_cli("fit", *flags, root=tmp_path / "one")
    cli_process("fit", *flags, "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
                root=tmp_path / "two", timeout=120)
    (one,), (two,) = versions(tmp_path / "one"), versions(tmp_path / "two")  # one version folder for both processes
    single, double = (json.loads((run / "report.json").read_text()) for run in (one, two))
    optimization = double["optimization"]
    assert optimization["optimizer"] == {"lbfgs": "LBFGS", "newton": "Newton"}[optimizer]
    assert optimization["converged"] is True, optimization
    assert optimization["relative_gap"] < (1e-6 if optimizer == "lbfgs" else 1e-9), optimization
    if optimizer == "newton":  # the same float64 sums, added in another order: the same objective
        assert optimization["passes"] == single["optimization"]["passes"] == 2
        assert optimization["objective"] == pytest.approx(single["optimization"]["objective"], rel=1e-9)
    for name in ("weight", "bias"):
        # float32 weights of size ~44 are 4e-6 apart at the least: the processes' sums round differently
        assert torch.tensor(double["learned"][name]) == pytest.approx(
            torch.tensor(single["learned"][name]), rel=1e-5, abs=1e-4), name


@pytest.mark.slow
def test_sigterm_stops_both_processes_at_the_same_epoch_with_its_checkpoint(tmp_path):
    """SIGTERM to the first process (Lightning's launcher passes it on to the second): both finish the epoch, the
    checkpoint is written once, and the command exits with 143, without a hang or a traceback."""
    import signal

    command = [sys.executable, "-m", "lit_regression", "fit", "--config", str(CONFIGS / "line_linear.yaml"),
               "--trainer.max_epochs", "5000", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
               "--trainer.strategy", "ddp", "--trainer.default_root_dir", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                               cwd=ROOT, bufsize=1)
    output = []
    for line in process.stdout:
        output.append(line)
        if line.startswith("epoch ") and "/5000" in line:  # training runs on both processes
            process.send_signal(signal.SIGTERM)
            break
    output += process.stdout.readlines()
    process.wait(timeout=120)
    text = "".join(output)
    assert process.returncode == 143, text[-3000:]
    assert "Traceback" not in text
    (line,) = [line for line in output if line.startswith("lit-regression: stopped by SIGTERM after epoch")]
    epoch = int(line.split("after epoch ")[1].split(";")[0])
    (run,) = versions(tmp_path)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == epoch
