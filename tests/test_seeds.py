"""Every seed experiment reproduced from its config through the CLI, to the seeds' printed digits."""

from __future__ import annotations

import pytest
import torch

from conftest import CONFIGS, fit_config, scalars, versions
from lit_regression.cli import LitRegressionCLI

# config -> {epoch: (train_loss, val_loss)}, tolerance
CURVES = {
    "line_parameter.yaml": ({0: (0.312881, 0.481065), 20: (0.089087, 0.217297), 80: (0.031324, 0.072321)}, 2e-6),
    "line_linear.yaml": ({0: (0.555178, 0.573976), 100: (0.006216, 0.014087)}, 2e-6),
    "line_random_split.yaml": ({0: (0.340311, 0.383543), 1300: (0.000485, 0.000300)}, 5e-6),
    "line_two_layer.yaml": ({0: (0.742611, 0.799805), 1000: (0.006811, 0.006619)}, 5e-6),
    "line_exercise.yaml": ({0: (0.127561, 0.336503), 240: (0.003417, 0.007192)}, 2e-6),
}
# config -> (weight, bias), tolerance
PARAMETERS = {
    "line_linear.yaml": ((0.696809, 0.302509), 2e-6),
    "line_random_split.yaml": ((0.699763, 0.299919), 5e-6),
    "line_exercise.yaml": ((0.302815, 0.891010), 2e-6),
    "line_uniform.yaml": ((0.7, 0.3), 0.02),
    "make_regression.yaml": ((70.7728, -4.8500), 0.01),
}
LONG = {"line_random_split.yaml", "line_two_layer.yaml", "line_uniform.yaml", "tiny_table.yaml", "make_regression.yaml"}


def _param(name):
    return pytest.param(name, marks=pytest.mark.slow) if name in LONG else name


@pytest.mark.parametrize("name", [_param(n) for n in sorted(set(CURVES) | set(PARAMETERS))])
def test_seed_config_reproduces_printed_numbers(name, root):
    cli = fit_config(name, root)
    logged = scalars(versions(root)[0])
    curve, tol = CURVES.get(name, ({}, 0))
    for epoch, (train, val) in curve.items():
        assert logged["train_loss"][epoch] == pytest.approx(train, abs=tol), f"train_loss at epoch {epoch}"
        assert logged["val_loss"][epoch] == pytest.approx(val, abs=tol), f"val_loss at epoch {epoch}"
    if name in PARAMETERS:
        (weight, bias), tol = PARAMETERS[name]
        learned_w, learned_b = cli.model.linear_parameters()
        assert learned_w.item() == pytest.approx(weight, abs=tol)
        assert learned_b.item() == pytest.approx(bias, abs=tol)


def test_parameter_form_draws_seed_initialisation():
    cli = LitRegressionCLI(args=["--config", str(CONFIGS / "line_parameter.yaml")], run=False)
    state = cli.model.state_dict()
    assert [name for name, _ in cli.model.named_parameters()] == ["weights", "bias"]
    # beside them, the fitted scaling (the identity: the seed's line is not scaled)
    assert list(state) == ["weights", "bias", "input_mean", "input_scale", "target_mean", "target_scale"]
    assert [state[k].item() for k in ("input_mean", "input_scale", "target_mean", "target_scale")] == [0, 1, 0, 1]
    assert state["weights"].item() == pytest.approx(0.3367, abs=1e-4)  # the seeds' printed initial values
    assert state["bias"].item() == pytest.approx(0.1288, abs=1e-4)


@pytest.mark.slow
def test_tiny_table_predicts_twelve_at_six(root):
    cli = fit_config("tiny_table.yaml", root)
    with torch.no_grad():
        assert cli.model(torch.tensor([[6.0]])).item() == pytest.approx(12.0, abs=0.01)


def test_breast_cancer_logistic_accuracy(root):
    cli = fit_config("breast_cancer.yaml", root)
    assert cli.model.linear.in_features == 30 and cli.model.linear.out_features == 1
    val_acc = scalars(versions(root)[0])["val_acc"][-1]
    assert val_acc >= 0.95
    assert val_acc == pytest.approx(0.9561, abs=1e-4)


def test_autograd_matches_closed_form_mse_gradient():
    """Seed 004 derives dJ/dw = mean(2 x (w x - y)) by hand for y ~ w x; autograd must agree."""
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    y = 2 * x
    w = torch.tensor(0.9472, dtype=torch.float64, requires_grad=True)
    loss = torch.nn.functional.mse_loss(w * x, y)
    loss.backward()
    closed_form = torch.mean(2 * x * (w.detach() * x - y))
    assert w.grad.item() == pytest.approx(closed_form.item(), rel=1e-12)


@pytest.mark.slow
def test_linear_model_matches_least_squares_on_noise_free_data(root):
    cli = fit_config(
        "line_linear.yaml", root, "--model.loss", "mse", "--model.lr", "0.5", "--trainer.max_epochs", "3000",
        "--data.weight", "-1.5", "--data.bias", "2.25",
    )
    x, y = cli.datamodule.splits["train"]
    design = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    exact = torch.linalg.lstsq(design, y.double()).solution.reshape(-1)
    weight, bias = cli.model.linear_parameters()
    assert weight.item() == pytest.approx(exact[0].item(), abs=1e-4)
    assert bias.item() == pytest.approx(exact[1].item(), abs=1e-4)
