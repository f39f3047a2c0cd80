"""The CLI end to end on the seed-002 nn.Linear run, and the artifacts of every subcommand."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml

from conftest import CONFIGS, fit_config, run_cli, scalars, versions

SHORT = ("--trainer.max_epochs", "5")


def test_line_linear_reproduces_seed_002(root):
    cli = fit_config("line_linear.yaml", root)
    weight, bias = cli.model.linear_parameters()
    assert weight.item() == pytest.approx(0.696809, abs=2e-6)
    assert bias.item() == pytest.approx(0.302509, abs=2e-6)
    logged = scalars(versions(root)[0])
    assert len(logged["train_loss"]) == 1000 and len(logged["val_loss"]) == 1000
    for epoch, train, val in ((0, 0.555178, 0.573976), (100, 0.006216, 0.014087)):
        assert logged["train_loss"][epoch] == pytest.approx(train, abs=2e-6)
        assert logged["val_loss"][epoch] == pytest.approx(val, abs=2e-6)


def test_fit_writes_every_artifact_under_root(root):
    fit_config("line_linear.yaml", root, *SHORT)
    (run,) = versions(root)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list(run.glob("events.out.tfevents.*"))
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["max_epochs"] == 5
    assert {"train_loss", "val_loss"} <= set(scalars(run))
    predictions = pd.read_csv(run / "predictions.csv")
    x = torch.arange(0.0, 1.0, 0.02)
    assert predictions["row"].tolist() == list(range(50))
    assert predictions["x"].to_numpy() == pytest.approx(x.numpy())


def test_second_run_gets_new_version_and_overwrites_nothing(root):
    fit_config("line_linear.yaml", root, *SHORT)
    first = versions(root)[0]
    before = {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()}
    fit_config("line_linear.yaml", root, *SHORT)
    assert len(versions(root)) == 2 and versions(root)[0] == first
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()} == before


def test_validate_test_predict_from_checkpoint_alone(root):
    fit = fit_config("line_linear.yaml", root, "--trainer.max_epochs", "20")
    run = versions(root)[0]
    ckpt = run / "checkpoints" / "last.ckpt"
    fitted = pd.read_csv(run / "predictions.csv")

    validate = run_cli("validate", "--ckpt_path", ckpt, root=root)
    assert isinstance(validate.model, type(fit.model))
    assert "val_loss" in validate.trainer.callback_metrics

    test = run_cli("test", "--ckpt_path", ckpt, root=root)
    test_loss = float(test.trainer.callback_metrics["test_loss"])
    assert test_loss == pytest.approx(scalars(run)["val_loss"][-1], rel=1e-6)  # the held-out split serves both
    assert scalars(versions(root)[-1])["test_loss"] == [pytest.approx(test_loss)]

    run_cli("predict", "--ckpt_path", ckpt, root=root)
    predicted = pd.read_csv(versions(root)[-1] / "predictions.csv")
    pd.testing.assert_frame_equal(predicted, fitted)
    assert len(versions(root)) == 4  # fit, validate, test, predict: one folder each


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "lit_regression", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "fit" in result.stdout and "predict" in result.stdout


def test_configs_dir_has_default():
    assert (CONFIGS / "line_linear.yaml").is_file()


def test_a_scheduler_without_optimizer_schedules_the_models_own(root):
    cli = fit_config("line_linear.yaml", root, "--trainer.max_epochs", "4", "--plots.enabled", "false",
                     "--lr_scheduler", "StepLR", "--lr_scheduler.step_size", "2", "--lr_scheduler.gamma", "0.1")
    assert type(cli.trainer.optimizers[0]).__name__ == "SGD"
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.01 * 0.1**2)
