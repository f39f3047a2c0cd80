"""The parameter report against the truth and the exact solution, the figures, the weights export, and
switching the callbacks off from the command line."""

from __future__ import annotations

import json

import pytest
import torch
from matplotlib.image import imread

from conftest import fit_config, run_cli, scalars, versions
from lit_regression.callbacks import ParameterReport, Plots
from lit_regression.callbacks.report import format_report, least_squares
from lit_regression.export import export_weights, load_run, load_weights, model_config

NOISY_LINE = ("--trainer.log_every_n_steps", "1", "--model", "LinearRegression", "--model.loss", "mse",
              "--model.optimizer", "sgd", "--model.lr", "0.1", "--data", "LineDataModule", "--data.noise", "0.05",
              "--data.split", "random", "--convergence.stop", "false")


def close(actual, expected, atol: float) -> None:
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float64),
                               torch.as_tensor(expected, dtype=torch.float64), rtol=0, atol=atol)


def callback(cli, cls):
    (found,) = [c for c in cli.trainer.callbacks if isinstance(c, cls)]
    return found


def fit_noisy_line(root, epochs: int):
    return run_cli("fit", *NOISY_LINE, "--trainer.max_epochs", str(epochs), root=root)


def lstsq(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference solution, written independently of the package: [x, 1] @ beta ~ y."""
    design = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    beta = torch.linalg.lstsq(design, y.double()).solution
    return beta[:-1].T, beta[-1]


# --- the exact solution ------------------------------------------------------------------------------------------
def test_least_squares_matches_lstsq_multi_output():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, generator=generator)
    y = x @ torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]]).T + torch.tensor([0.3, -1.0])
    y = y + 0.01 * torch.randn(y.shape, generator=generator)
    weight, bias = least_squares(x, y)
    w_ref, b_ref = lstsq(x, y)
    assert weight.shape == (2, 3) and bias.shape == (2,)
    torch.testing.assert_close(weight, w_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(bias, b_ref, rtol=0, atol=1e-10)


def test_exact_is_lstsq_on_the_training_split_and_the_gap_shrinks_with_training(root):
    short = fit_noisy_line(root, 20)
    long = fit_noisy_line(root, 300)
    x, y = long.datamodule.splits["train"]
    assert len(x) == 40  # the random split holds 10 of the 50 rows out
    w_ref, b_ref = lstsq(x, y)
    for cli in (short, long):
        report = callback(cli, ParameterReport).report
        close(report["exact"]["weight"], w_ref, 1e-10)
        close(report["exact"]["bias"], b_ref, 1e-10)
        assert "note" not in report  # MSE without penalty: the exact solution is what training converges to
    # not the solution on every row: the held-out rows are left out
    w_all, _ = lstsq(*[torch.cat([a, b]) for a, b in zip((x, y), long.datamodule.splits["val"])])
    assert abs(w_all.item() - w_ref.item()) > 1e-4

    gap_short = callback(short, ParameterReport).report["gap_to_exact"]
    report = callback(long, ParameterReport).report
    assert gap_short > 0.1 and report["gap_to_exact"] < 0.01
    optimization = report["optimization"]
    assert optimization["objective"] == pytest.approx(optimization["optimum"], rel=1e-2)
    assert optimization["optimum"] <= optimization["objective"]  # nothing beats least squares on its data
    assert callback(short, ParameterReport).report["optimization"]["relative_gap"] > optimization["relative_gap"]

    written = json.loads((versions(root)[1] / "report.json").read_text())
    assert written["gap_to_exact"] == report["gap_to_exact"]
    assert written["true"] == {"weight": [[0.7]], "bias": [0.3]}


def test_report_multi_output_regression(root):
    cli = run_cli("fit", "--trainer.log_every_n_steps", "1", "--model", "LinearRegression", "--model.loss", "mse",
                  "--model.lr", "0.1", "--data", "MakeRegressionDataModule", "--data.n_samples", "60",
                  "--data.n_features", "3", "--data.n_targets", "2", "--data.noise", "1.0", "--data.intercept", "2.0",
                  "--trainer.max_epochs", "5", root=root)
    report = callback(cli, ParameterReport).report
    x, y = cli.datamodule.splits["train"]
    w_ref, b_ref = lstsq(x, y)
    assert torch.tensor(report["exact"]["weight"]).shape == (2, 3)
    close(report["exact"]["weight"], w_ref, 1e-9)
    close(report["exact"]["bias"], b_ref, 1e-9)
    assert torch.tensor(report["true"]["weight"]).shape == (2, 3) and report["true"]["bias"] == [2.0, 2.0]
    text = format_report(report)
    assert "weight[y1, x2]" in text and "bias[y0]" in text
    # predicted vs actual and residuals, not an x-y scatter, for several features
    assert set(callback(cli, Plots).paths) == {"predicted_vs_actual", "residuals", "loss_curves"}


def test_report_logistic_compares_with_its_exact_optimum(root):
    cli = fit_config("breast_cancer.yaml", root, "--trainer.max_epochs", "5")
    report = callback(cli, ParameterReport).report
    assert "true" not in report and len(report["exact"]["weight"][0]) == 30
    assert torch.tensor(report["learned"]["weight"]).shape == (1, 30)
    assert report["features"][0] == "mean radius" and report["outputs"] == ["1"]
    assert 0.5 < report["metrics"]["val_acc"] <= 1
    # 5 epochs of the seed's SGD are far from the optimum of cross-entropy + l2 / 2 ||W||^2, l2 = 1 / 455
    optimization = report["optimization"]
    assert optimization["converged"] is False and optimization["relative_gap"] > 0.1
    assert optimization["optimizer"] == "SGD" and optimization["epochs"] == 5
    assert report["uncertainty"]["statistic"] == "z" and len(report["std_err"]["weight"][0]) == 30
    text = format_report(report)
    assert "weight[mean radius]" in text and "10 more in report.json" in text and "NOT converged" in text
    paths = callback(cli, Plots).paths
    assert set(paths) == {"loss_curves", "roc", "confusion_matrix"}
    assert imread(paths["roc"]).ndim == 3


def test_note_when_the_loss_is_not_squared_error(root):
    cli = fit_config("line_linear.yaml", root, "--trainer.max_epochs", "5")
    report = callback(cli, ParameterReport).report
    assert "l1 loss" in report["note"]
    close(report["exact"]["weight"], [[0.7]], 1e-6)  # noise-free: exact is the truth (float32 data)


# --- figures -------------------------------------------------------------------------------------------------------
def test_figures_of_a_line_run_and_loss_history_matches_tensorboard(root):
    cli = fit_config("line_linear.yaml", root, "--trainer.max_epochs", "12")
    (run,) = versions(root)
    plots = callback(cli, Plots)
    assert set(plots.paths) == {"data_and_predictions", "loss_curves"}
    for name in plots.paths:
        image = imread(run / "figures" / f"{name}.png")
        assert image.shape[0] > 300 and image.shape[1] > 300
    logged = scalars(run)
    for name in ("train_loss", "val_loss"):  # collected from callback_metrics: the values TensorBoard got
        epochs, values = plots.history[name]
        assert epochs == list(range(12))
        assert values == pytest.approx(logged[name], abs=1e-7)


def test_callbacks_switch_off_from_the_command_line(root):
    fit_config("line_linear.yaml", root, "--trainer.max_epochs", "3", "--plots.enabled", "false",
               "--report.enabled", "false")
    (run,) = versions(root)
    assert not (run / "figures").exists()
    assert not (run / "report.json").exists() and not (run / "weights.pt").exists()
    assert (run / "checkpoints" / "last.ckpt").is_file()


# --- save and load the weights -------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", ["line_linear.yaml", "breast_cancer.yaml", "line_two_layer.yaml"])
def test_exported_weights_reload_to_identical_predictions(root, config):
    cli = fit_config(config, root, "--trainer.max_epochs", "7")
    (run,) = versions(root)
    weights = run / "weights.pt"
    state = torch.load(weights, weights_only=True)
    assert set(state) == set(cli.model.state_dict())
    assert all(isinstance(t, torch.Tensor) for t in state.values())

    x = cli.datamodule.splits["predict"][0]
    cli.model.eval()
    with torch.no_grad():
        expected = cli.model(x)
        for model in (load_weights(weights, run / "checkpoints" / "last.ckpt"), load_run(run)):
            assert type(model) is type(cli.model) and not model.training
            assert torch.equal(model(x), expected)  # bit-identical


def test_export_round_trip_without_a_run(tmp_path):
    from lit_regression.models import LinearRegression

    torch.manual_seed(0)
    model = LinearRegression(n_features=3, n_outputs=2, loss="mse")
    path = export_weights(model, tmp_path / "w.pt")
    config = {"class_path": "lit_regression.models.LinearRegression",
              "init_args": {"n_features": 3, "n_outputs": 2, "loss": "mse"}}
    loaded = load_weights(path, config)
    x = torch.randn(5, 3)
    assert torch.equal(loaded(x), model(x))
    assert model_config({"_class_path": config["class_path"], "_instantiator": "x", "n_features": 3}) == {
        "class_path": config["class_path"], "init_args": {"n_features": 3}}


def test_long_noisy_loss_curves_are_drawn_with_a_moving_mean():
    from lit_regression.callbacks.plots import LOSS_LABELS, loss_curves_figure

    epochs = list(range(400))
    flip = [0.01 if e % 2 else 0.001 for e in epochs]  # L1 loss near its minimum jumps every epoch
    figure = loss_curves_figure({"train_loss": (epochs, flip), "val_loss": (epochs, [2 * v for v in flip])}, "L1")
    linear, log = figure.axes[:2]
    assert log.get_yscale() == "log" and linear.get_yscale() == "linear"
    labels = [line.get_label() for line in linear.get_lines()]
    train, val = LOSS_LABELS["train_loss"], LOSS_LABELS["val_loss"]
    assert labels == [f"{train}, each epoch", f"{train}, mean of 8 epochs", f"{val}, each epoch",
                      f"{val}, mean of 8 epochs"]
    assert linear.get_lines()[1].get_ydata() == pytest.approx([0.0055] * 393)


def test_report_columns_stay_apart_for_huge_and_tiny_values():
    """A noise-free line has a t of a million and a standard error of 1e-7: every number keeps its own column."""
    report = {"model": "LinearRegression", "stage": "fit", "features": ["x"], "outputs": ["y"],
              "learned": {"weight": [[0.696809]], "bias": [0.302509]},
              "std_err": {"weight": [[6.655e-7]], "bias": [6.4e-7]}, "t": {"weight": [[1050182.494194]], "bias": [1.0]},
              "uncertainty": {"units": "learned", "statistic": "t"}}
    row = next(line for line in format_report(report).splitlines() if line.strip().startswith("weight[x]"))
    assert row.split() == ["weight[x]", "0.696809", "6.655e-07", "1.05018e+06"]


def test_no_standard_errors_for_a_model_that_does_not_minimise_least_squares(root):
    """The seed line minimises the L1 loss with SGD: least squares' standard errors (from the exact fit's
    residuals, zero on noise-free data) would give intervals that leave out the true line."""
    fit_config("line_linear.yaml", root, "--trainer.max_epochs", "3")
    report = json.loads((versions(root)[0] / "report.json").read_text())
    assert "std_err" not in report and "ci95_low" not in report
    assert report["uncertainty"]["note"].startswith("no standard errors") and "l1 loss" in report["uncertainty"]["note"]
