"""Standard Lightning flags honoured, one-line errors with a suggestion, a quiet console that says at the
end where things went."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import CONFIGS, ROOT, fit_config, run_cli, runs, versions
from lit_regression.callbacks import ParameterReport, Plots, PredictionWriter
from lit_regression.checkpointing import ResumableCheckpoint
from lit_regression.cli import LitRegressionCLI, main

SHORT = ("--trainer.max_epochs", "3")
LINE = ("--model", "LinearRegression", "--data", "LineDataModule")
QUIET = ("--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false")
NUMBERS = "a,b,y\n" + "".join(f"{i},{(i * 7) % 5},{2 * i + (i * 7) % 5 + 0.1 * (i % 3)}\n" for i in range(12))


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def error_line(capsys, *args: str) -> str:
    """``lit-regression ARGS`` in this process: assert exit status 2 and that stderr is one line; return it."""
    with pytest.raises(SystemExit) as exit_info:
        main([*map(str, args), *QUIET])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lit-regression: error: "), captured.err
    return lines[0]


# --- 1. --trainer.enable_checkpointing false ---------------------------------------------------------------------
def test_enable_checkpointing_false_runs_without_checkpoints(root):
    cli = fit_config("line_linear.yaml", root, *SHORT, "--trainer.enable_checkpointing", "false")
    assert cli.trainer.checkpoint_callback is None
    assert not [c for c in cli.trainer.callbacks if isinstance(c, ResumableCheckpoint)]
    assert not list(root.rglob("*.ckpt"))
    (run,) = versions(root)
    assert (run / "predictions.csv").is_file()  # the prediction pass after the fit ran


# --- 2. --trainer.fast_dev_run ------------------------------------------------------------------------------------
def test_fast_dev_run_writes_nothing(root, capsys):
    cli = fit_config("line_linear.yaml", root, "--trainer.fast_dev_run", "true")
    assert cli.trainer.global_step == 1
    assert files(root) == []
    for kind in (PredictionWriter, ParameterReport, Plots):
        assert not [c for c in cli.trainer.callbacks if isinstance(c, kind) and c.enabled]
    run_cli("test", "--config", CONFIGS / "line_linear.yaml", "--trainer.fast_dev_run", "true", root=root)
    assert files(root) == []


# --- 3. --trainer.logger false, twice into one folder -------------------------------------------------------------
def test_logger_false_never_overwrites_an_earlier_config(root):
    fit_config("line_linear.yaml", root, *SHORT, "--trainer.logger", "false")
    first = (root / "config.yaml").read_text()
    fit_config("line_linear.yaml", root, "--trainer.max_epochs", "2", "--trainer.logger", "false")
    run_cli("predict", "--ckpt_path", root / "checkpoints" / "last.ckpt", "--trainer.logger", "false", root=root)
    assert (root / "config.yaml").read_text() == first
    assert yaml.safe_load((root / "config-v1.yaml").read_text())["trainer"]["max_epochs"] == 2
    assert (root / "config-v2.yaml").is_file()


def test_logger_false_runs_never_overwrite_each_others_files(root):
    """Runs that share a folder: each one's predictions, report, weights and figures get a fresh name, as
    ModelCheckpoint names last-v1.ckpt; --ckpt_path last finds the newest there, without a config."""
    fit_config("line_linear.yaml", root, *SHORT, "--trainer.logger", "false")
    first = {name: (root / name).read_bytes() for name in ("predictions.csv", "report.json", "weights.pt")}
    fit_config("line_linear.yaml", root, "--trainer.max_epochs", "2", "--trainer.logger", "false")
    assert {name: (root / name).read_bytes() for name in first} == first
    for name in ("predictions-v1.csv", "report-v1.json", "weights-v1.pt", "figures-v1/loss_curves.png"):
        assert (root / name).is_file(), name
    cli = run_cli("predict", "--ckpt_path", "last", "--trainer.logger", "false", root=root)
    assert cli.config.predict.ckpt_path == str(root / "checkpoints" / "last-v1.ckpt")
    assert (root / "predictions-v2.csv").is_file()


# --- 4. --ckpt_path last / best without a config ------------------------------------------------------------------
def test_last_and_best_supply_model_and_data_without_a_config(root, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the shipped config names its table relative to the repository
    fit = fit_config("csv_regression.yaml", root, *SHORT)
    last, best = fit.trainer.checkpoint_callback.last_model_path, fit.trainer.checkpoint_callback.best_model_path
    assert Path(best).name.startswith("epoch=")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    tested = run_cli("test", "--ckpt_path", "last", root=root)
    assert os.path.samefile(tested.config.test.ckpt_path, last)
    assert type(tested.datamodule).__name__ == "TableDataModule" and "test_loss" in tested.trainer.callback_metrics
    validated = run_cli("validate", "--ckpt_path", "best", root=root)
    assert os.path.samefile(validated.config.validate.ckpt_path, best)
    predicted = run_cli("predict", "--ckpt_path", "best", root=root)
    assert (versions(root)[-1] / "predictions.csv").is_file()
    assert isinstance(predicted.model, type(fit.model))


def test_best_without_a_run_is_one_line(tmp_path, capsys):
    line = error_line(capsys, "test", "--ckpt_path", "best", "--trainer.default_root_dir", tmp_path)
    assert "ckpt_path='best': there is no last.ckpt" in line


# --- 5. mistyped keys -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("yaml_text, arguments, expected", [
    ("trainer:\n  max_epoch: 3\n", [], ["trainer.max_epoch", "did you mean 'max_epochs'?"]),
    ("model:\n  class_path: LinearRegression\n  init_args:\n    standardise_target: true\n", [],
     ["model.init_args.standardise_target", "did you mean 'data.init_args.standardize_target'?"]),
    (None, ["--trainer.max_epoch", "3"], ["'--trainer.max_epoch'", "did you mean '--trainer.max_epochs'?"]),
    (None, ["--data.init_args.standardise_target", "true"],
     ["data.init_args.standardise_target", "did you mean 'standardize_target'?"]),
    (None, ["--model.lr", "abc"], ['"lr"', "float", "'abc'"]),
    (None, ["--model.init_args.loss", "cubic"], ['"loss"', "'mse', 'l1', 'huber'", "'cubic'"]),
    (None, ["--trainer.callbacks+=EarlyStoping"], ["EarlyStoping", "did you mean 'EarlyStopping'?"]),
    (None, ["--model", "LinearRegresion"], ["LinearRegresion", "did you mean 'LinearRegression'?"]),
], ids=["yaml trainer", "yaml model", "option", "option init_args", "type", "choice", "class", "model class"])
def test_a_mistyped_key_is_one_line_with_the_nearest_valid_key(yaml_text, arguments, expected, tmp_path, capsys):
    config = ["--config", CONFIGS / "csv_regression.yaml"]
    if yaml_text is not None:
        (tmp_path / "typo.yaml").write_text(yaml_text)
        config += ["--config", tmp_path / "typo.yaml"]
    line = error_line(capsys, "fit", *config, *arguments, "--trainer.default_root_dir", tmp_path)
    for text in expected:
        assert text in line


def test_help_still_works(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--help"])
    assert exit_info.value.code == 0
    assert "--trainer.max_epochs" in capsys.readouterr().out


# --- 6. optional packages -----------------------------------------------------------------------------------------
def test_rich_progress_bar_works(root):
    # run_cli switches the progress bar off, which Lightning refuses beside a progress bar callback
    cli = LitRegressionCLI(args=["fit", *LINE, *SHORT, "--trainer.callbacks+=RichProgressBar",
                                 "--trainer.default_root_dir", str(root), "--trainer.accelerator", "cpu"])
    assert any(type(c).__name__ == "RichProgressBar" for c in cli.trainer.callbacks)


def test_a_missing_package_of_a_callback_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "needs_package.py").write_text(textwrap.dedent("""
        from lightning.pytorch import Callback

        class NeedsPackage(Callback):
            def __init__(self):
                import lit_regression_absent_package  # noqa: F401
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    line = error_line(capsys, "fit", *LINE, *SHORT, "--trainer.callbacks+=needs_package.NeedsPackage",
                      "--trainer.default_root_dir", tmp_path)
    assert "'lit_regression_absent_package' is not installed" in line and "pip install" in line


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_a_logger_without_its_package_is_one_line(tmp_path, capsys):
    line = error_line(capsys, "fit", *LINE, *SHORT, "--trainer.logger", "WandbLogger",
                      "--trainer.default_root_dir", tmp_path)
    assert "wandb" in line and "pip install" in line


# --- 7. the model's optimizer arguments beside --optimizer --------------------------------------------------------
def test_model_lr_with_optimizer_is_refused(tmp_path, capsys):
    line = error_line(capsys, "fit", *LINE, *SHORT, "--model.lr", "5.0", "--optimizer", "Adam",
                      "--trainer.default_root_dir", tmp_path)
    assert "model.lr=5.0" in line and "--optimizer.lr 5.0" in line
    line = error_line(capsys, "fit", *LINE, *SHORT, "--model.init_args.weight_decay", "0.1", "--optimizer", "SGD",
                      "--optimizer.lr", "0.1", "--trainer.default_root_dir", tmp_path)
    assert "model.weight_decay=0.1" in line and "--optimizer.weight_decay 0.1" in line
    with pytest.raises(SystemExit):  # no max_epochs: the note on the default epochs does not precede the error
        main(["fit", *LINE, "--model.lr", "5.0", "--optimizer", "Adam", "--trainer.default_root_dir", str(tmp_path),
              *QUIET])
    assert "max_epochs is not set" not in capsys.readouterr().out


def test_optimizer_on_the_command_line_replaces_a_configs_own(root, capsys):
    cli = fit_config("line_linear.yaml", root, *SHORT, "--optimizer", "Adam", "--optimizer.lr", "0.05")
    assert "model.lr=0.01, model.optimizer='sgd' of the config left out" in capsys.readouterr().out
    assert type(cli.trainer.optimizers[0]).__name__ == "Adam"
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == 0.05
    saved = yaml.safe_load((versions(root)[0] / "config.yaml").read_text())["model"]["init_args"]
    assert saved["lr"] is None and saved["optimizer"] == "auto"


# --- 8. paths in the saved config ---------------------------------------------------------------------------------
def test_saved_config_serves_from_another_working_folder(root, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    fit = fit_config("csv_regression.yaml", root, *SHORT)
    run = versions(root)[0]
    saved = yaml.safe_load((run / "config.yaml").read_text())["data"]["init_args"]["path"]
    assert saved == str(ROOT / "examples" / "data" / "diabetes.csv")
    monkeypatch.chdir(tmp_path)
    last = fit.trainer.checkpoint_callback.last_model_path
    tested = run_cli("test", "--config", run / "config.yaml", "--ckpt_path", last, root=root)
    assert "test_loss" in tested.trainer.callback_metrics


# --- 9. a quiet console -------------------------------------------------------------------------------------------
NOISE = ("GPU available", "TPU available", "HPU available", "Tip:", "litlogger", "will be overridden", "smaller than the logging interval", "dirpath has changed",
         "Did you call", "shuffling", "Unable to serialize", "was not set. Setting it", "Total length of", "Traceback")

SCRIPT = """
import sys
from lit_regression.cli import LitRegressionCLI, main
for args in {commands!r}:
    print("=== " + " ".join(args), flush=True)
    try:
        main(args + ["--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"])
    except SystemExit as stop:
        print("exit", stop.code, flush=True)
"""


def test_no_noise_on_any_command(tmp_path):
    """The real console (warnings as Python prints them, not as pytest records them) of fit, validate, test and
    predict, on the line and on tables, with the flags that used to bring each warning."""
    (tmp_path / "numbers.csv").write_text(NUMBERS)
    root, line, table = str(tmp_path / "runs"), str(CONFIGS / "line_linear.yaml"), str(CONFIGS / "csv_regression.yaml")
    last = "last"  # the fit's, the newest last.ckpt under root
    commands = [
        ["fit", "--config", line, "--trainer.max_epochs", "3", "--trainer.default_root_dir", root],
        ["validate", "--ckpt_path", last, "--trainer.default_root_dir", root],
        ["test", "--ckpt_path", last, "--trainer.default_root_dir", root],
        ["predict", "--ckpt_path", last, "--trainer.default_root_dir", root],
        ["fit", "--config", table, "--trainer.max_epochs", "3", "--trainer.log_every_n_steps", "50",
         "--optimizer", "Adam", "--trainer.overfit_batches", "1", "--trainer.default_root_dir", root],
        ["fit", *LINE, "--trainer.default_root_dir", root],  # no max_epochs: stops when converged
        ["fit", "--model", "LinearRegression", "--data", "TableDataModule", "--data.path",
         str(tmp_path / "numbers.csv"), "--data.val_fraction", "0", *SHORT, "--trainer.default_root_dir", root],
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("PYTHONWARNINGS", None)
    result = subprocess.run([sys.executable, "-c", SCRIPT.format(commands=commands)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    console = result.stdout + result.stderr
    assert result.returncode == 0 and "exit" not in result.stdout, console
    console = "\n".join(line for line in console.splitlines() if not line.startswith("=== "))  # not the commands
    for noise in NOISE:
        assert noise not in console, (noise, console)
    assert console.count("trainer.max_epochs is not set: at most 1000 epochs") == 1
    assert console.count("no validation rows: checkpoints are not ranked by val_loss; only last.ckpt is kept") == 1
    (ckpt_folder,) = [v / "checkpoints" for v in versions(Path(root))[-1:]]
    assert sorted(p.name for p in ckpt_folder.iterdir()) == ["last.ckpt"]


# --- 10. where things went ----------------------------------------------------------------------------------------
def test_every_command_says_where_things_went(root, capsys):
    fit = fit_config("line_linear.yaml", root, *SHORT)
    out = capsys.readouterr().out
    run = versions(root)[0]
    checkpoint = fit.trainer.checkpoint_callback
    expected = [f"run folder:      {run}", f"best checkpoint: {checkpoint.best_model_path}",
                f"last checkpoint: {checkpoint.last_model_path}", f"predictions:     {run / 'predictions.csv'}",
                f"tensorboard --logdir {root}   (the losses together: its Custom Scalars tab)"]
    (plots,) = [c for c in fit.trainer.callbacks if isinstance(c, Plots)]
    expected.append(f"figures:         {run / 'figures'} ({', '.join(Path(p).name for p in plots.paths.values())})")
    (report,) = [c for c in fit.trainer.callbacks if isinstance(c, ParameterReport)]
    if getattr(report, "path", None):
        expected.append(f"report:          {report.path}")
    lines = out.splitlines()
    for line in expected:
        assert line in lines, (line, out)
    assert lines[-1].startswith(f"tensorboard --logdir {root} ")

    run_cli("predict", "--ckpt_path", checkpoint.last_model_path, root=root)
    lines = capsys.readouterr().out.splitlines()
    predicted = versions(root)[-1]
    assert predicted == run / "predict"  # a stage of the checkpoint's run, not a run of its own
    assert not list(predicted.glob("events.out.tfevents.*"))  # it logged nothing: no empty run in TensorBoard
    assert f"run folder:      {predicted}" in lines
    assert f"checkpoint:      {checkpoint.last_model_path} (loaded)" in lines
    assert f"predictions:     {predicted / 'predictions.csv'}" in lines
    assert not [line for line in lines if line.startswith(("best checkpoint", "last checkpoint", "figures"))]


def test_nothing_is_said_of_files_that_do_not_exist(root, capsys):
    fit_config("line_linear.yaml", root, *SHORT, "--trainer.enable_checkpointing", "false", "--predictions.enabled",
               "false", "--plots.enabled", "false", "--trainer.logger", "false")
    lines = capsys.readouterr().out.splitlines()
    assert f"run folder:      {root}" in lines
    assert not [line for line in lines if line.startswith(("best checkpoint", "last checkpoint", "predictions:",
                                                           "figures:", "tensorboard"))]


# --- 11. run folders named after what ran; test, validate and predict as stages of their fit's run -------------------
RUN_NAME = r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d(-\d+)?"


def test_run_folders_are_named_after_config_model_and_target(root, tmp_path):
    import re

    fit_config("line_linear.yaml", root, *SHORT)
    fit_config("line_linear.yaml", root, *SHORT)  # within the same second, most likely: a -2 then
    table = tmp_path / "prices.csv"
    table.write_text("size (m2),city,price $\n" + "".join(f"{40 + i},{'ab'[i % 2]},{100 + 3 * i}\n" for i in range(30)))
    run_cli("fit", "--model", "LinearRegression", "--data", "TableDataModule", "--data.path", table,
            "--data.target", "price $", *SHORT, root=root)
    first, second, third = (r.relative_to(root) for r in runs(root))
    assert first.parent.as_posix() == second.parent.as_posix() == "line_linear/LinearRegression-y"
    assert third.parent.as_posix() == "LinearRegression-price"  # no config: model and target; '$' and ' ' left out
    for run in (first, second, third):
        assert re.fullmatch(RUN_NAME, run.name), run
    assert first != second


def test_name_chooses_the_folder_and_is_checked(root, capsys):
    cli = fit_config("line_linear.yaml", root, *SHORT, "--name", "baseline/sgd")
    (run,) = runs(root)
    assert run.parent == root / "baseline" / "sgd" and cli.trainer.log_dir == str(run)
    for name in ("../outside", "/tmp/x", " "):
        with pytest.raises(SystemExit) as stop:
            main(["fit", "--config", str(CONFIGS / "line_linear.yaml"), "--name", name,
                  "--trainer.default_root_dir", str(root)])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert f"name={name!r} is invalid" in err and "Traceback" not in err
    assert runs(root) == [run]


def test_test_validate_and_predict_are_stages_of_the_checkpoints_run(root, tmp_path):
    fit_config("line_linear.yaml", root, *SHORT)
    (run,) = runs(root)
    for command in ("test", "validate", "predict", "test"):
        run_cli(command, "--ckpt_path", "last", root=root)
    assert runs(root) == [run]  # one run folder in all
    assert [v.relative_to(run).as_posix() for v in versions(root)[1:]] == ["test", "validate", "predict", "test-2"]
    for stage in ("test", "validate", "predict", "test-2"):
        assert (run / stage / "config.yaml").is_file()
    assert (run / "predict" / "predictions.csv").is_file() and (run / "predictions.csv").is_file()
    # a checkpoint copied elsewhere still logs into its own run, wherever that is
    elsewhere = tmp_path / "elsewhere"
    run_cli("test", "--ckpt_path", run / "checkpoints" / "last.ckpt", root=elsewhere)
    assert (run / "test-3").is_dir() and not elsewhere.exists()
    # --name asks for a run of its own
    run_cli("test", "--ckpt_path", "last", "--name", "tested", root=root)
    assert [r.parent.name for r in runs(root)] == ["LinearRegression-y", "tested"]


def test_a_refused_command_leaves_nothing_behind(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,y\n" + "".join(f"{i},{i + 1},{2 * i}\n" for i in range(20)) + "3,x,4\n")
    root = tmp_path / "runs"
    for args in (["fit", "--model", "LinearRegression", "--data", "TableDataModule", "--data.path", str(bad),
                  "--data.target", "y", "--data.categorical", "[]"],
                 ["fit", "--config", str(CONFIGS / "line_linear.yaml"), "--data.n_points", "1"]):
        with pytest.raises(SystemExit) as stop:
            main([*args, "--trainer.default_root_dir", str(root)])
        assert stop.value.code == 2 and "Traceback" not in capsys.readouterr().err
        assert not root.exists(), sorted(root.rglob("*"))
    fit_config("line_linear.yaml", root, *SHORT)
    (run,) = runs(root)
    before = sorted(run.rglob("*"))
    with pytest.raises(SystemExit) as stop:  # a predict refused for its table: no predict stage
        main(["predict", "--ckpt_path", "last", "--data", "TableDataModule", "--data.predict_path", str(bad),
              "--trainer.default_root_dir", str(root)])
    assert stop.value.code == 2
    assert sorted(run.rglob("*")) == before


def test_a_table_argument_without_the_table_module_says_to_add_it(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--model", "LinearRegression", "--data.path", "x.csv", "--trainer.default_root_dir",
              str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert err == ("lit-regression: error: data.init_args.path: TensorDataModule has no such argument "
                   "(it is a table's: add --data TableDataModule; TensorDataModule is the default)")


def test_test_and_predict_say_their_results_once_without_bars_in_a_log(root, capsys):
    """Without a terminal: no Lightning bar (carriage returns in a log), no second naming of the checkpoint, the
    test metrics once (Lightning's table), not the parameter report again."""
    fit_config("line_linear.yaml", root, *SHORT)
    capsys.readouterr()
    for command in ("test", "predict"):
        main([command, "--ckpt_path", "last", "--trainer.default_root_dir", str(root)])
        out = "".join(capsys.readouterr())
        assert "it/s" not in out and "\r" not in out, out
        assert "Restoring states" not in out and "Loaded model weights" not in out
        assert out.count("(loaded)") == 1
        if command == "test":
            assert out.count("test_loss") == 1 and "Parameters of" not in out, out
