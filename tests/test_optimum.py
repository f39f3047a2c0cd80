"""The right answer by default: the default optimizer reaches the optimum of the stated objective (checked against
scikit-learn fitted to convergence), the report says so, and the coefficients' uncertainty matches statsmodels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import torch
from sklearn.datasets import load_breast_cancer, make_classification, make_regression
from sklearn.linear_model import LinearRegression as SkLinearRegression
from sklearn.linear_model import LogisticRegression as SkLogisticRegression
from sklearn.preprocessing import StandardScaler

from conftest import ROOT, run_cli, scalars, versions
from lit_regression.datamodules import TableDataModule
from lit_regression.newton import Newton
from lit_regression.optimum import Moments, least_squares_optimum, logistic_optimum

TABLE = ("--data", "TableDataModule", "--trainer.enable_model_summary", "false")
SKLEARN_TIGHT = {"tol": 1e-12, "max_iter": 100_000}


def split_rows(path: Path, target: str, **kwargs) -> tuple[pd.DataFrame, np.ndarray]:
    """The table and the training rows that TableDataModule picks with its defaults."""
    dm = TableDataModule(path=str(path), target=target, **kwargs)
    dm.setup("fit")
    return pd.read_csv(path), dm.split_rows["train"]


def fit_and_predict(tmp_path: Path, root: Path, path: Path, target: str, new: pd.DataFrame, *args: str):
    """``fit`` with no optimizer or epoch flags, then ``predict`` the rows ``new``; the fit's report and the
    predictions."""
    run_cli("fit", *TABLE, *args, "--data.path", path, "--data.target", target, root=root)
    run = versions(root)[-1]
    report = json.loads((run / "report.json").read_text())
    new_path = tmp_path / "new.csv"
    new.to_csv(new_path, index=False)
    run_cli("predict", "--ckpt_path", run / "checkpoints" / "last.ckpt", "--data.predict_path", new_path, root=root)
    return report, pd.read_csv(versions(root)[-1] / "predictions.csv")


def test_diabetes_in_raw_units_matches_sklearn_linear_regression(tmp_path, root, capsys):
    path = ROOT / "examples" / "data" / "diabetes.csv"
    table, train = split_rows(path, "progression")
    features = [c for c in table.columns if c != "progression"]
    reference = SkLinearRegression().fit(table.loc[train, features], table.loc[train, "progression"])
    new = table.drop(columns="progression").sample(50, random_state=0)
    report, predicted = fit_and_predict(tmp_path, root, path, "progression", new, "--model", "LinearRegression")
    assert report["optimization"]["converged"] is True and report["optimization"]["optimizer"] == "Newton"
    assert report["optimization"]["relative_gap"] < 1e-9 and report["optimization"]["passes"] <= 2
    assert "converged after" in capsys.readouterr().out
    error = np.abs(predicted["progression"].to_numpy() - reference.predict(new))
    assert error.max() < 1e-4 * table.loc[train, "progression"].std(), error.max()


def test_ill_conditioned_table_matches_sklearn_linear_regression(tmp_path, root):
    x, y = make_regression(n_samples=600, n_features=12, effective_rank=3, tail_strength=0.02, noise=1.0,
                           random_state=0)
    x = x * np.logspace(-3, 3, 12)  # columns over six orders of magnitude
    table = pd.DataFrame(x, columns=[f"f{i}" for i in range(12)]).assign(y=y)
    path = tmp_path / "ill.csv"
    table.to_csv(path, index=False)
    assert np.linalg.cond(x) > 1e7 and np.linalg.cond((x - x.mean(0)) / x.std(0)) > 50
    table, train = split_rows(path, "y")
    # scikit-learn 1.9 passes LinearRegression's tol (1e-6) to lstsq as its cutoff for small singular values,
    # which on these raw columns gives up most of the fit (3.4x the optimum's MSE): a tight tol is the optimum
    reference = SkLinearRegression(tol=1e-14).fit(table.drop(columns="y").loc[train], table.loc[train, "y"])
    new = table.drop(columns="y").sample(60, random_state=1)
    report, predicted = fit_and_predict(tmp_path, root, path, "y", new, "--model", "LinearRegression")
    assert report["optimization"]["converged"] is True
    error = np.abs(predicted["y"].to_numpy() - reference.predict(new))
    assert error.max() < 1e-4 * table.loc[train, "y"].std(), error.max()


def _logistic_case(tmp_path, root, table: pd.DataFrame, target: str, l2: float | None):
    path = tmp_path / "classes.csv"
    table.to_csv(path, index=False)
    table, train = split_rows(path, target, task="classification")
    features = [c for c in table.columns if c != target]
    scaler = StandardScaler().fit(table.loc[train, features])
    c = 1.0 if l2 is None else 1 / (l2 * len(train))
    reference = SkLogisticRegression(C=c, **SKLEARN_TIGHT).fit(scaler.transform(table.loc[train, features]),
                                                              table.loc[train, target])
    new = table[features].sample(80, random_state=2)
    args = ["--model", "LogisticRegression"] + ([] if l2 is None else ["--model.l2", str(l2)])
    report, predicted = fit_and_predict(tmp_path, root, path, target, new, *args)
    assert report["optimization"]["converged"] is True, report["optimization"]
    probs = predicted[[f"prob_{label}" for label in reference.classes_]].to_numpy()
    error = np.abs(probs - reference.predict_proba(scaler.transform(new)))
    assert error.max() < 1e-4, error.max()
    return report


def test_binary_logistic_with_l2_matches_sklearn(tmp_path, root):
    data = load_breast_cancer(as_frame=True).frame
    _logistic_case(tmp_path, root, data, "target", l2=0.01)


def test_default_logistic_is_sklearn_c_1(tmp_path, root):
    data = load_breast_cancer(as_frame=True).frame
    report = _logistic_case(tmp_path, root, data, "target", l2=None)
    # breast cancer is nearly separable: without the default penalty the weights would run off
    assert max(abs(w) for w in report["learned"]["weight"][0]) < 10


def test_multiclass_logistic_matches_sklearn(tmp_path, root):
    x, y = make_classification(n_samples=400, n_features=6, n_informative=4, n_classes=3, random_state=3)
    table = pd.DataFrame(x, columns=[f"x{i}" for i in range(6)]).assign(label=np.array(["a", "b", "c"])[y])
    _logistic_case(tmp_path, root, table, "label", l2=0.005)
    _logistic_case(tmp_path, root / "default", table, "label", l2=None)


def test_short_run_reports_not_converged(tmp_path, root, capsys):
    run_cli("fit", *TABLE, "--model", "LinearRegression", "--data.path", ROOT / "examples" / "data" / "diabetes.csv",
            "--data.target", "progression", "--optimizer", "SGD", "--trainer.max_epochs", "2", root=root)
    report = json.loads((versions(root)[-1] / "report.json").read_text())
    assert report["optimization"]["converged"] is False and report["optimization"]["relative_gap"] > 1e-3
    assert report["optimization"]["optimizer"] == "SGD" and report["optimization"]["epochs"] == 2
    err = capsys.readouterr().err
    assert "warning: the fit did not converge" in err and "--trainer.max_epochs" in err


def test_standard_errors_match_statsmodels_ols(tmp_path, root):
    path = ROOT / "examples" / "data" / "diabetes.csv"
    table, train = split_rows(path, "progression")
    features = [c for c in table.columns if c != "progression"]
    ols = sm.OLS(table.loc[train, "progression"], sm.add_constant(table.loc[train, features], prepend=False)).fit()
    run_cli("fit", *TABLE, "--model", "LinearRegression", "--data.path", path, "--data.target", "progression",
            root=root)
    report = json.loads((versions(root)[-1] / "report.json").read_text())
    se = np.array(report["std_err"]["weight"][0] + report["std_err"]["bias"])
    assert np.allclose(se, ols.bse.to_numpy(), rtol=1e-6), (se, ols.bse.to_numpy())
    low = np.array(report["ci95_low"]["weight"][0] + report["ci95_low"]["bias"])
    assert np.allclose(low, ols.conf_int()[0].to_numpy(), rtol=1e-4, atol=1e-3)
    assert np.allclose(report["t"]["weight"][0], ols.tvalues.to_numpy()[:-1], rtol=1e-4)
    assert report["uncertainty"]["dof"] == len(train) - len(features) - 1


def test_standard_errors_match_statsmodels_logit(tmp_path, root):
    x, y = make_classification(n_samples=500, n_features=4, n_informative=3, n_redundant=0, flip_y=0.2,
                               class_sep=0.5, random_state=4)
    table = pd.DataFrame(x * [1, 10, 100, 0.1] + [0, 5, -50, 1], columns=["a", "b", "c", "d"]).assign(y=y)
    path = tmp_path / "logit.csv"
    table.to_csv(path, index=False)
    table, train = split_rows(path, "y", task="classification")
    logit = sm.Logit(table.loc[train, "y"], sm.add_constant(table.loc[train, ["a", "b", "c", "d"]], prepend=False))
    result = logit.fit(disp=0, tol=1e-12)
    run_cli("fit", *TABLE, "--model", "LogisticRegression", "--model.l2", "0", "--data.path", path,
            "--data.target", "y", root=root)
    report = json.loads((versions(root)[-1] / "report.json").read_text())
    assert report["uncertainty"]["statistic"] == "z"
    se = np.array(report["std_err"]["weight"][0] + report["std_err"]["bias"])
    assert np.allclose(se, result.bse.to_numpy(), rtol=1e-5), (se, result.bse.to_numpy())
    assert np.allclose(report["raw_units"]["weight"][0], result.params.to_numpy()[:-1], rtol=1e-3, atol=1e-4)


def test_optimum_solvers_against_references():
    """The float64 solvers alone: ridge against the normal equations, logistic against scikit-learn."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 5, generator=gen), torch.randn(300, 2, generator=gen)
    moments = Moments()
    for i in range(0, 300, 70):  # in chunks, as a stream would come
        moments.update(x[i:i + 70], y[i:i + 70])
    l2 = 0.3
    optimum = least_squares_optimum(moments, l2)
    z = torch.cat([x.double(), torch.ones(300, 1, dtype=torch.float64)], dim=1)
    d = torch.diag(torch.tensor([1.0] * 5 + [0.0], dtype=torch.float64))
    # mean over 300 rows and 2 outputs: gradient (2 / (300 * 2)) Z^T (Z theta - y) + l2 D theta = 0
    expected = torch.linalg.solve(z.T @ z / 300 + l2 * d, z.T @ y.double() / 300)
    assert torch.allclose(optimum.theta, expected, atol=1e-10)
    residual = z @ optimum.theta - y.double()
    direct = float((residual**2).mean() + l2 / 2 * (optimum.theta[:-1] ** 2).sum())
    assert abs(optimum.objective - direct) < 1e-10 and abs(optimum.objective_at(optimum.theta) - direct) < 1e-10
    labels = (x[:, 0] + 0.5 * torch.randn(300, generator=gen) > 0).long()
    found, why = logistic_optimum(lambda: [(x[:150], labels[:150]), (x[150:], labels[150:])], 5, 2, 0.01)
    assert why is None
    reference = SkLogisticRegression(C=1 / (0.01 * 300), **SKLEARN_TIGHT).fit(x.double().numpy(), labels.numpy())
    assert np.allclose(found.theta[:-1, 0].numpy(), reference.coef_[0], atol=1e-6)
    separable = (x[:, 0] > 0).long()
    assert logistic_optimum(lambda: [(x, separable)], 5, 2, 0.0)[0] is None


@pytest.mark.parametrize("config", ["csv_regression.yaml", "insurance.yaml"])
def test_shipped_table_configs_converge(root, config):
    from conftest import fit_config

    fit_config(config, root)
    report = json.loads((versions(root)[-1] / "report.json").read_text())
    assert report["optimization"]["converged"] is True, report["optimization"]


def test_two_layer_says_why_no_optimum(root, capsys):
    run_cli("fit", *TABLE, "--model", "TwoLayerRegression", "--data.path", ROOT / "examples" / "data" / "diabetes.csv",
            "--data.target", "progression", "--trainer.max_epochs", "5", root=root)
    optimization = json.loads((versions(root)[-1] / "report.json").read_text())["optimization"]
    assert optimization["optimum"] is None and "not convex" in optimization["note"]
    assert optimization["objective"] > 0


@pytest.mark.parametrize("optimizer, kind", [("lbfgs", torch.optim.LBFGS), ("newton", Newton)])
def test_resume_is_bit_identical_and_tensorboard_gets_the_gap(root, optimizer, kind):
    """The optimizers keep their state in the checkpoint (L-BFGS its history, Newton its last accepted point and
    step): 3 epochs, then 3 more from last.ckpt, end exactly where 6 uninterrupted epochs end."""
    args = (*TABLE, "--model", "LogisticRegression", "--data.path", ROOT / "examples" / "data" / "iris.csv",
            "--data.target", "species", "--convergence.stop", "false", "--plots.enabled", "false",
            "--predictions.enabled", "false", "--model.optimizer", optimizer)
    whole = run_cli("fit", *args, "--trainer.max_epochs", "6", root=root / "whole")
    run_cli("fit", *args, "--trainer.max_epochs", "3", root=root / "split")
    resumed = run_cli("fit", *args, "--trainer.max_epochs", "6", "--ckpt_path", "last", root=root / "split")
    assert isinstance(resumed.trainer.optimizers[0], kind)
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert scalars(versions(root / "whole")[-1])["optimization/relative_gap"][-1] >= 0
