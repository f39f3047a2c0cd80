"""What the numbers say: accuracy and balanced accuracy against scikit-learn, the parameter report's blocks, what
validate and test print, treatment coding (data.drop_first) against statsmodels in memory and streamed, the split
of each predicted row, the Predictor's repr, counted nouns and the loss curves' legend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
import statsmodels.formula.api as smf
import torch
from conftest import fit_config, run_cli
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.preprocessing import StandardScaler

import lit_regression
from lit_regression.callbacks import ParameterReport, PredictionWriter
from lit_regression.callbacks.plots import LOSS_LABELS, confusion_matrix_figure, loss_curves_figure
from lit_regression.callbacks.report import format_report
from lit_regression.errors import InputError, count
from lit_regression.models import LinearRegression
from lit_regression.predictor import Predictor
from lit_regression.splits import held_out

TABLE = ("--data", "TableDataModule", "--plots.enabled", "false")
GRADES = ["low", "mid", "high"]


def written(cli, kind: type) -> Path:
    """The file that a run's callback of ``kind`` wrote (report.json, predictions.csv or their folder)."""
    (found,) = [c for c in cli.trainer.callbacks if isinstance(c, kind)]
    return Path(found.path)


def report_of(cli) -> dict:
    return json.loads(written(cli, ParameterReport).read_text())


def predictions_of(cli) -> pd.DataFrame:
    path = written(cli, PredictionWriter)
    return pd.read_csv(path) if path.is_file() else ds.dataset(path, format="csv").to_table().to_pandas()


def last_ckpt(cli) -> Path:
    return Path(cli.trainer.checkpoint_callback.last_model_path)


# --- accuracy and balanced accuracy --------------------------------------------------------------------------------
def grades(path: Path, n_classes: int, n: int = 400) -> pd.DataFrame:
    """Classes of unequal size (70/30, or 60/30/10) that the features tell apart only in part: plain and balanced
    accuracy differ."""
    rng = np.random.default_rng(n_classes)
    share = [0.7, 0.3] if n_classes == 2 else [0.6, 0.3, 0.1]
    label = rng.choice(n_classes, n, p=share)
    frame = pd.DataFrame({"x1": (rng.normal(0, 1, n) + 0.8 * label).round(3),
                          "x2": (rng.normal(0, 1, n) - 0.6 * (label == 1)).round(3),
                          "shop": rng.choice(["north", "south"], n),
                          "grade": [GRADES[k] for k in label]})
    frame.to_csv(path, index=False)
    return frame


def sklearn_scores(frame: pd.DataFrame, predicted: pd.DataFrame, split: str) -> tuple[float, float]:
    rows = predicted["split"] == split
    truth, guess = frame["grade"][rows], predicted["grade"][rows]
    return accuracy_score(truth, guess), balanced_accuracy_score(truth, guess)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_acc_and_balanced_acc_are_sklearns_in_the_report_figure_validate_and_test(n_classes, tmp_path, capsys):
    path = tmp_path / "grades.csv"
    frame = grades(path, n_classes)
    common = ("--model", "LogisticRegression", "--data", "TableDataModule", "--data.path", path, "--data.target",
              "grade", "--data.test_fraction", "0.25")
    fit = run_cli("fit", *common, "--trainer.max_epochs", "20", root=tmp_path / "fit")
    # the fit's prediction pass uses its final weights, which its last validation scored
    predicted = predictions_of(fit)
    acc, balanced = sklearn_scores(frame, predicted, "val")
    metrics = report_of(fit)["metrics"]
    with capsys.disabled():  # the test's own line, not the run's
        print(f"\n{n_classes} classes, validation rows: val_acc {metrics['val_acc']:.6f} (scikit-learn {acc:.6f}), "
              f"val_balanced_acc {metrics['val_balanced_acc']:.6f} (scikit-learn {balanced:.6f})")
    assert abs(acc - balanced) > 0.02  # unequal classes: the two differ, and each metric is the right one
    assert metrics["val_acc"] == pytest.approx(acc, abs=1e-6)
    assert metrics["val_balanced_acc"] == pytest.approx(balanced, abs=1e-6)
    printed = capsys.readouterr().out
    for name in ("val_acc", "val_balanced_acc"):  # the console's report says the same
        assert f"{name} {metrics[name]:.6g}" in printed, printed

    # the figure's title, for the same predictions
    classes = sorted(set(frame["grade"]))
    val = predicted["split"] == "val"
    index = {c: i for i, c in enumerate(classes)}
    figure = confusion_matrix_figure(torch.tensor(predicted["grade"][val].map(index).to_numpy()),
                                     torch.tensor(frame["grade"][val].map(index).to_numpy()), classes)
    assert f"accuracy {acc:.3f}, balanced accuracy {balanced:.3f}" in figure.axes[0].get_title()

    # validate and test from the checkpoint: Lightning's table alone on the console, the report in report.json
    ckpt = last_ckpt(fit)
    predicted = predictions_of(run_cli("predict", "--ckpt_path", ckpt, root=tmp_path / "predict"))  # its own
    for command, split in (("validate", "val"), ("test", "test")):
        capsys.readouterr()
        done = run_cli(command, "--ckpt_path", ckpt, root=tmp_path / command)
        printed = capsys.readouterr().out
        assert "Parameters of" not in printed and "weight[" not in printed, printed
        acc, balanced = sklearn_scores(frame, predicted, split)
        assert float(done.trainer.callback_metrics[f"{split}_acc"]) == pytest.approx(acc, abs=1e-6)
        assert float(done.trainer.callback_metrics[f"{split}_balanced_acc"]) == pytest.approx(balanced, abs=1e-6)
        report = report_of(done)
        assert report["stage"] == command and report["metrics"][f"{split}_acc"] == pytest.approx(acc, abs=1e-6)


# --- the parameter report -------------------------------------------------------------------------------------------
def test_the_report_lists_learned_parameters_by_column_and_the_scaling_apart(tmp_path, capsys):
    rng = np.random.default_rng(5)
    n = 120
    frame = pd.DataFrame({"age": rng.integers(18, 80, n).astype(float), "bmi": rng.normal(27, 4, n).round(2),
                          "shop": rng.choice(["north", "south"], n)})
    frame["spend"] = 2 * frame["age"] - frame["bmi"] + np.where(frame["shop"] == "north", 5, 0) + rng.normal(0, 1, n)
    frame.to_csv(tmp_path / "spend.csv", index=False)
    fit = run_cli("fit", "--model", "TwoLayerRegression", "--model.hidden", "3", *TABLE, "--data.path",
                  tmp_path / "spend.csv", "--data.target", "spend", "--data.standardize_target", "true",
                  "--trainer.max_epochs", "2", root=tmp_path / "runs")
    report = report_of(fit)
    assert list(report["learned"]) == [name for name, _ in fit.model.named_parameters()]  # no buffers
    assert report["features"] == ["age", "bmi", "shop=north", "shop=south"]

    train = frame.iloc[fit.datamodule.split_rows["train"]]
    scaler = StandardScaler().fit(train[["age", "bmi", "spend"]])
    expected = {name: (mean, scale) for name, mean, scale in zip(("age", "bmi", "spend"), scaler.mean_, scaler.scale_)}
    expected.update({"shop=north": (0.0, 1.0), "shop=south": (0.0, 1.0)})
    assert set(report["scaling"]) == set(expected)
    for name, (mean, scale) in expected.items():  # float32 buffers: 7 significant digits
        assert report["scaling"][name]["mean"] == pytest.approx(mean, rel=1e-6), name
        assert report["scaling"][name]["scale"] == pytest.approx(scale, rel=1e-6), name

    printed = capsys.readouterr().out
    for label in ("linear1.weight[hidden 0, age]", "linear1.weight[hidden 2, shop=south]", "linear1.bias[hidden 1]",
                  "linear2.weight[hidden 2]", "linear2.bias "):
        assert label in printed, printed
    assert "input_mean" not in printed and "input_mean" not in json.dumps(report["learned"])
    assert format_report(report) in printed


# --- treatment coding against statsmodels ---------------------------------------------------------------------------
FORMULA = "y ~ x1 + x2 + x3 + C(city) + C(day)"


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """Three numeric columns and two text ones; every number (targets too) a multiple of 1/64, exact in float32, so
    that the model and statsmodels see the same values. As a CSV file, and as Parquet files for streaming."""
    folder = tmp_path_factory.mktemp("shop")
    rng = np.random.default_rng(11)
    n = 300
    frame = pd.DataFrame({"x1": rng.integers(0, 80, n) / 4, "x2": rng.integers(-40, 40, n) / 8,
                          "x3": rng.integers(0, 10, n).astype(float), "city": rng.choice(["Paris", "Lyon", "Nice"], n),
                          "day": rng.choice(["mon", "sat", "sun"], n)})
    effect = frame["city"].map({"Lyon": 0.0, "Nice": -2.0, "Paris": 3.5}) + frame["day"].map(
        {"mon": 0.0, "sat": 1.25, "sun": -0.75})
    frame["y"] = np.round((1.5 * frame["x1"] - 2 * frame["x2"] + 0.3 * frame["x3"] + effect
                           + rng.normal(0, 1, n)) * 64) / 64
    frame.to_csv(folder / "shop.csv", index=False)
    (folder / "parts").mkdir()
    for k, part in enumerate((frame.iloc[:170], frame.iloc[170:])):
        part.to_parquet(folder / "parts" / f"part-{k}.parquet", index=False, row_group_size=64)
    return folder, frame


@pytest.fixture(scope="module")
def treatment(shop, tmp_path_factory):
    """A linear model with data.drop_first, the table in memory: the fit."""
    folder, _ = shop
    root = tmp_path_factory.mktemp("treatment")
    return run_cli("fit", "--model", "LinearRegression", *TABLE, "--data.path", folder / "shop.csv", "--data.target",
                   "y", "--data.drop_first", "true", "--data.test_fraction", "0.2", "--trainer.max_epochs", "5",
                   root=root)


def statsmodels_name(feature: str) -> str:
    column, _, level = feature.partition("=")
    return f"C({column})[T.{level}]" if level else column


def assert_statsmodels_ols(report: dict, rows: pd.DataFrame) -> None:
    """Coefficients, standard errors, t values and 95% intervals (the raw units column) equal statsmodels' OLS with
    treatment coding on the same rows. Tolerance: the inputs are standardised in float32 before the float64 sums
    and the learned parameters are float32 (7 significant digits); mapped to raw units, the intercept takes in
    ``weight * mean / scale`` of every column, so its error is relative to the largest coefficient, not to itself
    (seen: 1.5e-6 on an intercept of 0.05, the other coefficients within 1e-7, the standard errors within 2e-8
    relative). 1e-5 relative (and 1e-5 of the largest coefficient) leaves room for that and nothing for a wrong
    reference level, scaling or degrees of freedom."""
    ols = smf.ols(FORMULA, data=rows).fit()
    names = [statsmodels_name(f) for f in report["features"]] + ["Intercept"]
    assert sorted(names) == sorted(ols.params.index)  # the same columns: treatment coding, reference levels first
    low, high = ols.conf_int(0.05).T.to_numpy()
    ours = {key: np.append(report[key]["weight"][0], report[key]["bias"][0])
            for key in ("raw_units", "std_err", "t", "ci95_low", "ci95_high")}
    reference = {"raw_units": ols.params, "std_err": ols.bse, "t": ols.tvalues,
                 "ci95_low": pd.Series(low, ols.params.index), "ci95_high": pd.Series(high, ols.params.index)}
    for key, values in ours.items():
        np.testing.assert_allclose(values, reference[key][names].to_numpy(), rtol=1e-5,
                                   atol=1e-5 * float(np.abs(ols.params).max()), err_msg=key)
    assert report["uncertainty"]["dof"] == ols.df_resid


def test_drop_first_gives_statsmodels_treatment_coding_and_its_standard_errors(treatment, shop):
    fit, (_, frame) = treatment, shop
    report = report_of(fit)
    assert report["features"] == ["x1", "x2", "x3", "city=Nice", "city=Paris", "day=sat", "day=sun"]
    assert {c["column"]: c.get("reference") for c in report["columns"]}["city"] == "Lyon"
    assert_statsmodels_ols(report, frame.iloc[fit.datamodule.split_rows["train"]])


def test_without_drop_first_the_report_says_why_there_are_no_standard_errors(shop, tmp_path):
    folder, _ = shop
    report = report_of(run_cli("fit", "--model", "LinearRegression", *TABLE, "--data.path", folder / "shop.csv",
                               "--data.target", "y", "--trainer.max_epochs", "3", root=tmp_path))
    assert "std_err" not in report and "city=Lyon" in report["features"]
    assert report["uncertainty"]["note"] == "no standard errors: the inputs are collinear"


def test_the_checkpoint_encodes_as_the_fit_did_with_unseen_levels_as_the_reference(treatment, shop, capsys):
    fit, (_, frame) = treatment, shop
    ols = smf.ols(FORMULA, data=frame.iloc[fit.datamodule.split_rows["train"]]).fit()
    new = frame.drop(columns="y").head(6).copy()
    predictor = lit_regression.load(last_ckpt(fit))
    np.testing.assert_allclose(predictor.predict(new)["y"], ols.predict(new), rtol=1e-5)
    capsys.readouterr()
    unseen = new.assign(city="Berlin")  # not seen in training: all zeros, as the reference level Lyon
    np.testing.assert_allclose(predictor.predict(unseen)["y"], ols.predict(new.assign(city="Lyon")), rtol=1e-5)
    assert "encoded as all zeros, as the reference level 'Lyon'" in capsys.readouterr().err


def test_drop_first_streamed_from_parquet_equals_statsmodels_too(shop, tmp_path):
    folder, frame = shop
    fit = run_cli("fit", "--model", "LinearRegression", *TABLE, "--data.path", folder / "parts", "--data.target", "y",
                  "--data.streaming", "true", "--data.batch_size", "100000", "--data.drop_first", "true",
                  "--trainer.max_epochs", "5", root=tmp_path)
    splits = held_out(0.2, 0.0, 42, False, False)  # the data module's defaults: val_fraction 0.2, seed 42
    train = np.flatnonzero(splits["train"].mask(0, len(frame)))
    assert_statsmodels_ols(report_of(fit), frame.iloc[train])
    ols = smf.ols(FORMULA, data=frame.iloc[train]).fit()
    new = frame.drop(columns="y").tail(5)
    np.testing.assert_allclose(lit_regression.load(last_ckpt(fit)).predict(new)["y"], ols.predict(new), rtol=1e-5)

    predicted = predictions_of(fit)  # streamed: a folder of parts
    assert predicted["split"].value_counts().to_dict() == {"train": len(train), "val": len(frame) - len(train)}
    assert sorted(predicted["row"][predicted["split"] == "train"]) == train.tolist()


# --- the split of each predicted row --------------------------------------------------------------------------------
def test_predictions_of_the_training_table_say_each_rows_split(treatment, shop, tmp_path):
    fit, (_, frame) = treatment, shop
    split_rows = fit.datamodule.split_rows
    predicted = predictions_of(fit)
    assert list(predicted.columns[:2]) == ["row", "split"]
    assert predicted["split"].value_counts().to_dict() == {s: len(split_rows[s]) for s in ("train", "val", "test")}
    for split in ("train", "val", "test"):
        assert sorted(predicted["row"][predicted["split"] == split]) == sorted(split_rows[split].tolist()), split
    # a table of its own was in no split: no column
    frame.drop(columns="y").to_csv(tmp_path / "new.csv", index=False)
    new = run_cli("predict", "--ckpt_path", last_ckpt(fit), "--data.predict_path", tmp_path / "new.csv",
                  root=tmp_path / "predict")
    assert "split" not in predictions_of(new).columns


def test_the_seed_line_marks_its_last_rows_as_held_out(tmp_path):
    predicted = predictions_of(fit_config("line_linear.yaml", tmp_path, "--trainer.max_epochs", "2"))
    assert predicted["split"].tolist() == ["train"] * 40 + ["val"] * 10  # sequential: X[:int(0.8 * n)] trains


# --- words -----------------------------------------------------------------------------------------------------------
def test_the_predictor_says_what_it_predicts_from_what(treatment):
    ckpt = str(last_ckpt(treatment))
    assert repr(lit_regression.load(ckpt)) == (
        f"Predictor(LinearRegression -> y, 5 columns: x1, x2, x3, ..., checkpoint={ckpt!r})")


def test_counted_nouns_are_singular_for_one():
    assert [count(1, "row"), count(2, "row"), count(0, "row"), count(1, "epoch"), count(3, "epoch")] == [
        "1 row", "2 rows", "0 rows", "1 epoch", "3 epochs"]
    assert [count(2, "class"), count(2, "batch"), count(2, "category"), count(1_000, "row", spec=",")] == [
        "2 classes", "2 batches", "2 categories", "1,000 rows"]
    with pytest.raises(InputError, match=r"the model takes 1 input column$"):
        Predictor(LinearRegression(n_features=1)).inputs(np.zeros((2, 3)))


def test_the_loss_curves_say_when_each_loss_is_taken():
    history = {"train_loss": ([0, 1, 2], [1.8, 0.3, 0.2]), "val_loss": ([0, 1, 2], [0.1, 0.09, 0.08])}
    figure = loss_curves_figure(history, "MSE")
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert labels == [LOSS_LABELS["train_loss"], LOSS_LABELS["val_loss"]]
    assert "before each step" in labels[0] and "after the epoch" in labels[1]
