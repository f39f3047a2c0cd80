"""Newton's method in passes: the exact optimum whatever the batches are (in memory, streamed, several
processes), against the closed form and scikit-learn, its step-halving and its resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_wine, make_regression
from sklearn.linear_model import LogisticRegression as SkLogisticRegression
from sklearn.preprocessing import StandardScaler

from conftest import ROOT, one_line_error, run_cli, versions
from test_optimum import SKLEARN_TIGHT, TABLE, fit_and_predict, split_rows
from lit_regression.newton import ROUNDING, Newton
from lit_regression.optimum import PassSums, objective_pass

QUIET = ("--plots.enabled", "false", "--trainer.enable_model_summary", "false")


def report_of(root) -> dict:
    return json.loads((versions(root)[-1] / "report.json").read_text())


@pytest.mark.parametrize("batch_size", [None, 512])
@pytest.mark.parametrize("l2", [0.0, 0.05])
def test_least_squares_in_two_passes_whatever_the_batches(root, batch_size, l2, capsys):
    args = ["--data.batch_size", str(batch_size)] if batch_size else []
    run_cli("fit", "--model", "LinearRegression", "--data", "MakeRegressionDataModule", "--data.n_samples", "6000",
            "--data.n_features", "12", "--data.noise", "5", "--model.l2", str(l2), "--trainer.max_epochs", "20",
            *args, *QUIET, root=root)
    optimization = report_of(root)["optimization"]
    assert optimization["optimizer"] == "Newton" and optimization["converged"] is True, optimization
    assert optimization["passes"] <= 2 and optimization["relative_gap"] <= 1e-9, optimization
    assert "solver: newton (auto: a convex objective with 13 parameters" in capsys.readouterr().out


def _classes(tmp_path, root, table: pd.DataFrame, target: str, *args: str) -> dict:
    """Fit a logistic model with Newton on mini-batches; its probabilities against scikit-learn's on the same
    standardised training rows, with the same penalty (C = 1 / (l2 * n_train)), solved to a tight tolerance."""
    path = tmp_path / "classes.csv"
    table.to_csv(path, index=False)
    table, train = split_rows(path, target, task="classification")
    features = [c for c in table.columns if c != target]
    scaler = StandardScaler().fit(table.loc[train, features])
    reference = SkLogisticRegression(C=1.0, **SKLEARN_TIGHT).fit(scaler.transform(table.loc[train, features]),
                                                               table.loc[train, target])
    new = table[features].sample(80, random_state=2)
    report, predicted = fit_and_predict(tmp_path, root, path, target, new, "--model", "LogisticRegression",
                                        "--data.batch_size", "64", *args)
    optimization = report["optimization"]
    assert optimization["converged"] is True and optimization["optimizer"] == "Newton", optimization
    assert optimization["relative_gap"] <= 1e-8 and optimization["passes"] <= 10, optimization
    probs = predicted[[f"prob_{label}" for label in reference.classes_]].to_numpy()
    error = np.abs(probs - reference.predict_proba(scaler.transform(new)))
    assert error.max() < 1e-6, error.max()
    return report


def test_binary_logistic_on_mini_batches_equals_sklearn(tmp_path, root):
    _classes(tmp_path, root, load_breast_cancer(as_frame=True).frame, "target")


def test_multiclass_logistic_on_mini_batches_equals_sklearn(tmp_path, root):
    wine = load_wine(as_frame=True).frame.rename(columns={"od280/od315_of_diluted_wines": "od280_od315"})
    _classes(tmp_path, root, wine, "target")


def test_collinear_one_hot_columns_give_the_smallest_solution(tmp_path, root):
    """A category's one-hot columns and the bias are collinear: without a penalty the Hessian has no full rank,
    and the step lands on the smallest solution, finite, at the optimum's objective."""
    rng = np.random.default_rng(0)
    city = rng.choice(["Lyon", "Nice", "Paris"], 500)
    x = rng.normal(size=500)
    table = pd.DataFrame({"x": x, "city": city, "y": 2 * x + (city == "Paris") * 3 + rng.normal(0, 0.1, 500)})
    table.to_csv(tmp_path / "t.csv", index=False)
    run_cli("fit", *TABLE, "--model", "LinearRegression", "--data.path", tmp_path / "t.csv", "--data.target", "y",
            "--data.batch_size", "100", *QUIET, root=root)
    report = report_of(root)
    assert "collinear" in report["note"]
    assert all(math.isfinite(w) for w in report["learned"]["weight"][0])
    assert report["optimization"]["relative_gap"] <= 1e-9 and report["optimization"]["passes"] <= 2


def test_auto_says_which_solver_and_why(root, capsys):
    run_cli("fit", "--model", "TwoLayerRegression", "--data", "LineDataModule", "--trainer.max_epochs", "2", *QUIET,
            root=root)
    assert "solver: lbfgs (auto: the model is not one affine map; one batch per epoch" in capsys.readouterr().out
    run_cli("fit", "--model", "LinearRegression", "--model.loss", "l1", "--data", "LineDataModule",
            "--data.batch_size", "10", "--trainer.max_epochs", "2", *QUIET, root=root)
    assert "solver: adam (auto: the objective is not smooth; an L1 term)" in capsys.readouterr().out


def test_newton_refuses_a_model_it_cannot_solve(tmp_path, capsys):
    line = one_line_error(tmp_path, capsys, {}, ["--model.optimizer", "newton", "--model.loss", "l1"],
                          "LineDataModule")
    assert "optimizer='newton' needs one affine map and a smooth loss" in line
    line = one_line_error(tmp_path, capsys, {}, ["--model.optimizer", "newton", "--model.lr", "0.1"],
                          "LineDataModule")
    assert "model lr=0.1: Newton's method takes no lr" in line


# --- the solver alone -----------------------------------------------------------------------------------------------
def _passes(newton: Newton, x: torch.Tensor, y: torch.Tensor, count: int, batch: int = 50) -> list[dict]:
    """``count`` passes over ``(x, y)`` in batches; each pass's record."""
    records = []
    for _ in range(count):
        for start in range(0, len(x), batch):
            newton.add(x[start:start + batch], y[start:start + batch])
        newton.due = True
        newton.step()
        records.append(dict(newton.last))
    return records


def _far_logistic() -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
    """A binary logistic model started far from its optimum, where full Newton steps overshoot."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(400, 3, generator=generator)
    y = (x[:, 0] + 0.5 * torch.randn(400, generator=generator) > 0).float()[:, None]
    layer = torch.nn.Linear(3, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-8.0, 6.0, -7.0]]))
        layer.bias.fill_(5.0)
    return layer, x, y


def test_step_halving_never_raises_the_objective_and_resumes_bit_for_bit():
    layer, x, y = _far_logistic()
    newton = Newton(layer.weight, layer.bias, "binary", l2=1e-3)
    records = _passes(newton, x, y, 30)
    accepted = [r["objective"] for r in records if not r["halved"]]
    assert any(r["halved"] for r in records)  # the first full steps overshoot
    assert all(b <= a * (1 + ROUNDING) for a, b in zip(accepted, accepted[1:]))  # at the optimum: rounding
    assert records[-1]["gradient"] < 1e-9

    # kill after the first pass that halved, resume from the state dict: the same steps after it
    first = next(i for i, r in enumerate(records) if r["halved"])
    layer, x, y = _far_logistic()
    newton = Newton(layer.weight, layer.bias, "binary", l2=1e-3)
    _passes(newton, x, y, first + 1)
    state = {"weight": layer.weight.detach().clone(), "bias": layer.bias.detach().clone()}
    saved = newton.state_dict()
    fresh = torch.nn.Linear(3, 1)
    with torch.no_grad():
        fresh.weight.copy_(state["weight"])
        fresh.bias.copy_(state["bias"])
    resumed = Newton(fresh.weight, fresh.bias, "binary", l2=1e-3)
    resumed.load_state_dict(saved)
    assert resumed.anchor["t"] < 1  # in the middle of a step-halving
    rest = _passes(resumed, x, y, len(records) - first - 1)
    assert json.dumps(rest) == json.dumps(records[first + 1:])  # NaN decrements of halved passes too


def test_huber_passes_reach_the_minimum_of_the_huber_objective():
    from scipy.optimize import minimize

    x, y = make_regression(n_samples=300, n_features=4, noise=20, random_state=0)
    y = (y - y.mean()) / y.std() * 3
    y[:15] += 40  # outliers, where the loss is linear
    x64, y64 = torch.tensor(x), torch.tensor(y)[:, None]
    layer = torch.nn.Linear(4, 1).double()
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
    newton = Newton(layer.weight, layer.bias, "huber", l2=0.01)
    records = _passes(newton, x64, y64, 40)
    assert records[-1]["gradient"] < 1e-9
    assert all(b["objective"] <= a["objective"] * (1 + ROUNDING) for a, b in zip(records, records[1:]))

    def objective(theta: np.ndarray) -> float:
        value, grad, _, _ = objective_pass(lambda: [(x64, y64)], torch.tensor(theta)[:, None], "huber", 0.01,
                                           hessian=False)
        return value

    best = minimize(objective, np.zeros(5), method="BFGS", options={"gtol": 1e-12})
    theta = torch.cat([layer.weight.detach()[0], layer.bias.detach()]).numpy()
    assert objective(theta) <= best.fun + 1e-12


def test_pass_sums_of_batches_equal_one_batch_and_the_multiclass_hessian_is_autograd_s():
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(60, 3, generator=generator), torch.randint(0, 4, (60, 1), generator=generator)
    theta = torch.randn(4, 4, generator=generator, dtype=torch.float64)
    whole, parts = PassSums(theta, "multiclass"), PassSums(theta, "multiclass")
    whole.add(x, y)
    for start in range(0, 60, 7):
        parts.add(x[start:start + 7], y[start:start + 7])
    torch.testing.assert_close(whole.packed(), parts.packed(), rtol=1e-12, atol=1e-12)
    value, grad, hess, n = whole.objective(0.1)

    def f(t: torch.Tensor) -> torch.Tensor:
        z = torch.cat([x.double(), torch.ones(60, 1, dtype=torch.float64)], 1)
        t = t.reshape(4, 4)
        return torch.nn.functional.cross_entropy(z @ t, y[:, 0]) + 0.05 * (t[:-1] ** 2).sum()

    flat = theta.reshape(-1)
    assert value == pytest.approx(float(f(flat)), rel=1e-12)
    torch.testing.assert_close(grad, torch.func.grad(f)(flat), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hess, torch.func.hessian(f)(flat), rtol=1e-10, atol=1e-12)


# --- streamed, on several processes ---------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("group", [1_000_000, 700])  # one row group, and three for two processes
def test_ddp_streamed_newton_fit_and_predict_on_any_row_groups(tmp_path, group):
    """2-process DDP over a file of one row group (pyarrow's default for small tables) and of three: fit,
    then predict from the checkpoint, on both processes; the same optimum and predictions as one process."""
    import pyarrow.dataset as ds

    from test_faults import cli_process
    from test_streaming import write_folder

    write_folder(tmp_path / "shop", sizes=(2000,), group=group)
    write_folder(tmp_path / "new", sizes=(301,), group=group, seed=3)
    fit = ["fit", "--model", "LinearRegression", "--data", "TableDataModule", "--data.path", tmp_path / "shop",
           "--data.target", "price", "--data.streaming", "true", "--data.batch_size", "128", "--data.impute", "mean",
           "--data.id_column", "order id", "--data.predict_path", tmp_path / "new", *QUIET]
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2"]
    runs = {}
    for name, extra in (("one", []), ("two", ddp)):
        process = cli_process(*fit, *extra, root=tmp_path / name)
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        (runs[name],) = versions(tmp_path / name)
    one, two = (json.loads((runs[k] / "report.json").read_text())["optimization"] for k in ("one", "two"))
    assert two["passes"] == one["passes"] == 2 and two["relative_gap"] <= 1e-9, two
    assert two["objective"] == pytest.approx(one["objective"], rel=1e-9)
    process = cli_process("predict", "--ckpt_path", runs["two"] / "checkpoints" / "last.ckpt", *ddp,
                          root=tmp_path / "predict")
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    single = pd.read_csv(runs["one"] / "predictions.csv") if (runs["one"] / "predictions.csv").exists() else \
        ds.dataset(runs["one"] / "predictions", format="csv").to_table().to_pandas()
    for folder in (runs["two"] / "predictions", runs["two"] / "predict" / "predictions"):  # predict: a stage of the run
        both = ds.dataset(folder, format="csv").to_table().to_pandas().sort_values("order id")
        assert len(both) == 301 and both["order id"].is_unique
        merged = both.merge(single, on="order id", suffixes=("", "_one"))
        assert np.abs(merged["price"] - merged["price_one"]).max() < 1e-4


@pytest.mark.slow
def test_too_many_processes_for_a_prediction_file_is_one_line_before_training(tmp_path):
    from test_faults import cli_process
    from test_streaming import write_folder

    write_folder(tmp_path / "shop", sizes=(300,), group=100)
    write_folder(tmp_path / "one_row", sizes=(1,))
    process = cli_process("fit", "--model", "LinearRegression", "--data", "TableDataModule", "--data.path",
                          tmp_path / "shop", "--data.target", "price", "--data.streaming", "true", "--data.batch_size",
                          "64", "--data.impute", "mean", "--data.id_column", "order id", "--data.predict_path",
                          tmp_path / "one_row", "--trainer.strategy", "ddp", "--trainer.devices", "2",
                          root=tmp_path / "runs")
    _, err = process.communicate(timeout=300)
    assert process.returncode == 2 and "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("lit-regression: error:")]
    assert len(lines) == 1, err  # said once, not once per process
    assert "1 row of data.predict_path=" in lines[0] and "leaves a process 0 rows" in lines[0]
    assert not list((tmp_path / "runs").rglob("*.ckpt"))  # refused before training


# --- l2 auto --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["LinearRegression", "LogisticRegression"])
def test_l2_auto_picks_what_grid_search_picks_on_the_same_rows(tmp_path, root, model):
    """``--model.l2 auto`` against scikit-learn's GridSearchCV over Ridge (``alpha = l2 * n_train / 2``) or
    LogisticRegression (``C = 1 / (l2 * n_train)``) on the same grid, fitted on the same standardised training
    rows and scored on the same validation rows through a PredefinedSplit: the same choice, the same losses."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV, PredefinedSplit

    from lit_regression.datamodules import TableDataModule
    from lit_regression.newton import GRID_C, l2_grid

    if model == "LinearRegression":
        path, target, task = ROOT / "examples" / "data" / "diabetes.csv", "progression", "regression"
    else:
        path, target, task = tmp_path / "cancer.csv", "target", "classification"
        load_breast_cancer(as_frame=True).frame.to_csv(path, index=False)
    dm = TableDataModule(path=str(path), target=target, task=task)
    dm.setup("fit")
    train, val = dm.split_rows["train"], dm.split_rows["val"]
    table = pd.read_csv(path)
    features = [c for c in table.columns if c != target]
    scaler = StandardScaler().fit(table.loc[train, features])
    rows = np.r_[train, val]
    x, y = scaler.transform(table.loc[rows, features]), table.loc[rows, target].to_numpy()
    folds = PredefinedSplit(np.r_[-np.ones(len(train)), np.zeros(len(val))])
    grid = l2_grid(len(train))
    if model == "LinearRegression":
        search = GridSearchCV(Ridge(), {"alpha": [l2 * len(train) / 2 for l2 in grid]}, cv=folds,
                              scoring="neg_mean_squared_error")
    else:
        def cross_entropy(estimator, x, y) -> float:  # neg_log_loss clips probabilities to eps: the exact one
            z = estimator.decision_function(x)
            return -float(np.mean(np.logaddexp(0, z) - y * z))

        search = GridSearchCV(SkLogisticRegression(**SKLEARN_TIGHT), {"C": list(GRID_C)}, cv=folds,
                              scoring=cross_entropy)
    search.fit(x, y)

    run_cli("fit", *TABLE, "--model", model, "--data.path", path, "--data.target", target, "--data.task", task,
            "--model.l2", "auto", "--data.batch_size", "64", "--trainer.max_epochs", "150", *QUIET, root=root)
    optimization = report_of(root)["optimization"]
    assert [p["l2"] for p in optimization["l2_path"]] == pytest.approx(grid, rel=1e-12)
    assert optimization["l2"] == pytest.approx(grid[search.best_index_], rel=1e-12)
    ours = np.array([p["val_loss"] for p in optimization["l2_path"]])
    # C = 1e4 on the nearly separable cancer rows: scikit-learn's L-BFGS stops at a gradient of 3e-9 in a valley
    # so flat that the validation loss still moves in its fifth digit (float64 Newton agrees with ours)
    assert ours == pytest.approx(-search.cv_results_["mean_test_score"], rel=1e-6 if task == "regression" else 1e-4)
    assert optimization["converged"] is True and optimization["relative_gap"] <= 1e-8, optimization
    if model == "LinearRegression":
        assert optimization["passes"] == 2  # the path in closed form from the first pass and validation


def test_l2_auto_without_validation_rows_or_newton_is_one_line(tmp_path, capsys):
    line = one_line_error(tmp_path, capsys, {}, ["--model.l2", "auto", "--data.val_size", "0"], "LineDataModule")
    assert "model l2='auto' scores each l2 on the validation rows after every pass, but the data have no" in line
    line = one_line_error(tmp_path, capsys, {}, ["--model.l2", "auto", "--model.optimizer", "adam"], "LineDataModule")
    assert "model l2='auto' is chosen by the newton solver's passes, not by adam" in line


@pytest.mark.slow
def test_sigkill_between_two_passes_of_a_logistic_fit_resumes_bit_identical(tmp_path):
    """A logistic Newton fit on mini-batches, killed after its checkpoint of epoch 2 and resumed from last.ckpt,
    ends with the weights and the solver's state of an uninterrupted run, bit for bit."""
    from test_faults import cli_process, killed_beside_full

    path = tmp_path / "cancer.csv"
    load_breast_cancer(as_frame=True).frame.to_csv(path, index=False)
    args = ["fit", *TABLE, "--model", "LogisticRegression", "--data.path", path, "--data.target", "target",
            "--data.task", "classification", "--data.batch_size", "4", "--data.shuffle", "true", "--model.l2", "1e-4",
            "--convergence.stop", "false", "--trainer.max_epochs", "8", "--checkpoint.every_n_seconds", "0",
            "--plots.enabled", "false", "--predictions.enabled", "false"]
    killed_beside_full(args, tmp_path / "killed", tmp_path / "full")
    last = versions(tmp_path / "killed")[0] / "checkpoints" / "last.ckpt"
    assert 2 <= torch.load(last, weights_only=True)["epoch"] < 7
    resumed = cli_process(*args, "--ckpt_path", "last", root=tmp_path / "killed")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0 and "Traceback" not in err, err[-3000:]
    ours = torch.load(last, weights_only=True)
    theirs = torch.load(versions(tmp_path / "full")[0] / "checkpoints" / "last.ckpt", weights_only=True)
    assert ours["epoch"] == theirs["epoch"]
    for key, value in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][key], value), key
    (solver_ours,), (solver_theirs,) = ours["optimizer_states"], theirs["optimizer_states"]
    assert solver_ours["newton"]["passes"] == solver_theirs["newton"]["passes"] == 8
    assert torch.equal(solver_ours["newton"]["anchor"]["theta"], solver_theirs["newton"]["anchor"]["theta"])


def test_a_bad_l2_names_every_value_it_takes(tmp_path, capsys):
    line = one_line_error(tmp_path, capsys, {}, ["--model.l2", "foo"], "LineDataModule")
    assert "key \"l2\" expects float or 'auto' or None, got 'foo'" in line
