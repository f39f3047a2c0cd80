"""CSVDataModule: bring your own CSV, for regression and classification, end to end through the CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_diabetes, load_iris, load_wine
from sklearn.linear_model import LinearRegression as SkLinearRegression
from sklearn.linear_model import LogisticRegression as SkLogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, r2_score
from sklearn.preprocessing import StandardScaler

from conftest import CONFIGS, ROOT, one_line_error, run_cli, scalars, versions
from lit_regression.datamodules import CSVDataModule
from lit_regression.errors import InputError

CSV = ("--data", "CSVDataModule", "--trainer.enable_model_summary", "false")


def final_weights_only(epochs: int) -> tuple[str, ...]:
    """Train ``epochs`` full-batch epochs without validation and checkpoint once, at the end, so ``last.ckpt``
    holds the final weights (Lightning 2.6 otherwise writes ``last.ckpt`` only when ``val_loss`` improves)."""
    return ("--trainer.max_epochs", str(epochs), "--trainer.limit_val_batches", "0",
            "--checkpoint.monitor", "null", "--checkpoint.every_n_epochs", str(epochs))


def write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def diabetes() -> pd.DataFrame:
    """scikit-learn's diabetes table in its own units (not the pre-scaled one), target ``progression``."""
    return load_diabetes(scaled=False, as_frame=True).frame.rename(columns={"target": "progression"})


def last_ckpt(run: Path) -> Path:
    return run / "checkpoints" / "last.ckpt"


# --- against scikit-learn on the same split ---------------------------------------------------------------------
def test_linear_regression_reaches_sklearn_r2(tmp_path, root):
    path = write(diabetes(), tmp_path / "diabetes.csv")
    fit = run_cli("fit", *CSV, "--model", "LinearRegression", "--data.path", path, "--data.target", "progression",
                  "--data.test_fraction", "0.2", "--data.standardize_target", "true",
                  "--optimizer", "SGD", "--optimizer.lr", "0.25", "--optimizer.momentum", "0.9",
                  *final_weights_only(100), root=root)
    test = run_cli("test", "--ckpt_path", last_ckpt(versions(root)[0]), root=root)
    ours = float(test.trainer.callback_metrics["test_r2"])
    assert scalars(versions(root)[-1])["test_r2"] == [pytest.approx(ours)]

    data = fit.datamodule
    np.testing.assert_array_equal(test.datamodule.split_rows["test"], data.split_rows["test"])
    frame = pd.read_csv(path)
    x, y = frame[list(data.feature_names)].to_numpy(), frame["progression"].to_numpy()
    train, held_out = data.split_rows["train"], data.split_rows["test"]
    assert len(held_out) == 89 and len(data.split_rows["val"]) == 89 and len(train) == 264
    sklearn = r2_score(y[held_out], SkLinearRegression().fit(x[train], y[train]).predict(x[held_out]))
    print(f"diabetes test R^2: ours {ours:.6f}, scikit-learn {sklearn:.6f}")
    assert ours == pytest.approx(sklearn, abs=0.01)


def test_logistic_regression_reaches_sklearn_accuracy_with_text_labels(tmp_path, root):
    wine = load_wine(as_frame=True)
    frame = wine.frame.drop(columns="target")
    frame["cultivar"] = [f"cultivar_{'ABC'[t]}" for t in wine.target]
    path = write(frame, tmp_path / "wine.csv")
    fit = run_cli("fit", *CSV, "--model", "LogisticRegression", "--data.path", path, "--data.target", "cultivar",
                  "--data.task", "classification", "--data.test_fraction", "0.3",
                  "--optimizer", "Adam", "--optimizer.lr", "0.1", *final_weights_only(100), root=root)
    data = fit.datamodule
    assert data.classes == ["cultivar_A", "cultivar_B", "cultivar_C"] and fit.model.hparams.n_outputs == 3
    test = run_cli("test", "--ckpt_path", last_ckpt(versions(root)[0]), root=root)
    ours = float(test.trainer.callback_metrics["test_acc"])
    balanced = float(test.trainer.callback_metrics["test_balanced_acc"])

    x, y = frame[list(data.feature_names)].to_numpy(), frame["cultivar"].to_numpy()
    train, held_out = data.split_rows["train"], data.split_rows["test"]
    scaler = StandardScaler().fit(x[train])  # as the datamodule does
    predicted = SkLogisticRegression().fit(scaler.transform(x[train]), y[train]).predict(scaler.transform(x[held_out]))
    # test_acc is plain accuracy, test_balanced_acc scikit-learn's balanced accuracy
    sklearn, sklearn_balanced = accuracy_score(y[held_out], predicted), balanced_accuracy_score(y[held_out], predicted)
    print(f"wine test accuracy: ours {ours:.6f}, scikit-learn {sklearn:.6f}; balanced: ours {balanced:.6f}, "
          f"scikit-learn {sklearn_balanced:.6f}")
    assert ours == pytest.approx(sklearn, abs=0.01) and balanced == pytest.approx(sklearn_balanced, abs=0.01)
    # stratified: every split keeps the class proportions
    counts = pd.Series(y[held_out]).value_counts().sort_index().tolist()
    assert counts == pytest.approx((pd.Series(y).value_counts().sort_index() * 0.3).tolist(), abs=1)


# --- checkpoints carry everything that prediction needs ---------------------------------------------------------
def test_predict_from_checkpoint_alone_reproduces_fit_predictions(tmp_path, root):
    frame = diabetes()
    train = write(frame, tmp_path / "train.csv")
    raw = write(frame.drop(columns="progression"), tmp_path / "raw.csv")  # new rows come without the target
    run_cli("fit", *CSV, "--model", "LinearRegression", "--data.path", train, "--data.target", "progression",
            "--data.standardize_target", "true", "--optimizer", "Adam", "--optimizer.lr", "0.05",
            "--trainer.max_epochs", "10", root=root)
    run = versions(root)[0]
    checkpoint = torch.load(last_ckpt(run), weights_only=True)
    assert checkpoint["epoch"] == 9, "last.ckpt must hold the final weights (val_loss improves every epoch here)"
    saved = checkpoint["datamodule_hyper_parameters"]
    assert saved["features"] == [c for c in frame.columns if c != "progression"]  # resolved from the file
    assert checkpoint["CSVDataModule"]["target_mean"] == [pytest.approx(frame["progression"].mean(), rel=0.05)]

    fitted = pd.read_csv(run / "predictions.csv")
    assert list(fitted.columns) == ["row", "split", *frame.columns]  # the fit's pass: the training table's rows
    assert fitted["row"].tolist() == list(range(len(frame)))
    fitted = fitted.drop(columns="split")  # a table of its own (predict_path) has no split
    pd.testing.assert_frame_equal(fitted[list(frame.columns[:-1])], frame.drop(columns="progression"),
                                  check_dtype=False)  # the features as given, not standardised
    # in the target's own units (mean about 152), not the standardised ones (mean about 0)
    assert fitted["progression"].mean() == pytest.approx(frame["progression"].mean(), rel=0.1)

    run_cli("predict", "--ckpt_path", last_ckpt(run), "--data.predict_path", raw, root=root)
    pd.testing.assert_frame_equal(pd.read_csv(versions(root)[-1] / "predictions.csv"), fitted)

    train.unlink()  # the training file is gone: the checkpoint alone must do
    run_cli("predict", "--ckpt_path", last_ckpt(run), "--data.predict_path", raw, root=root)
    pd.testing.assert_frame_equal(pd.read_csv(versions(root)[-1] / "predictions.csv"), fitted)


def test_predictions_as_parquet_hold_what_the_csv_holds(tmp_path, root):
    frame = diabetes()
    frame.insert(0, "patient", [f"p{i}" for i in range(len(frame))])  # a text id column, kept as given
    train = write(frame, tmp_path / "train.csv")
    common = ("--model", "LinearRegression", "--data.path", train, "--data.target", "progression",
              "--data.id_column", "patient", "--trainer.max_epochs", "3", "--plots.enabled", "false")
    run_cli("fit", *CSV, *common, root=root)
    run_cli("fit", *CSV, *common, "--predictions.filename", "predictions.parquet", root=root)
    as_csv = pd.read_csv(versions(root)[0] / "predictions.csv")
    as_parquet = pd.read_parquet(versions(root)[1] / "predictions.parquet")
    assert not (versions(root)[1] / "predictions.csv").exists()
    assert list(as_parquet.columns) == ["row", "split", "patient", "progression"] == list(as_csv.columns)
    assert as_parquet["patient"].tolist() == frame["patient"].tolist()
    np.testing.assert_allclose(as_parquet["progression"], as_csv["progression"], rtol=1e-6)


def test_big_predictions_are_written_in_chunks_byte_for_byte(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.csv as pcsv

    from lit_regression.callbacks import predictions

    table = pa.table({"row": np.arange(10), "name": [f"a,{i}" if i % 3 else None for i in range(10)],
                      "y": np.linspace(-1, 1, 10, dtype=np.float32)})
    monkeypatch.setattr(predictions, "CSV_CHUNK", 3)  # four chunks, the first with the header
    predictions.write_table(table, str(tmp_path / "chunked.csv"))
    pcsv.write_csv(table, str(tmp_path / "whole.csv"), pcsv.WriteOptions(quoting_style="needed"))
    assert (tmp_path / "chunked.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert pd.read_csv(tmp_path / "chunked.csv")["name"].tolist()[1:3] == ["a,1", "a,2"]


def test_multi_output_regression(tmp_path, root):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    frame = pd.DataFrame(x, columns=["x0", "x1", "x2"])
    frame["note"] = rng.choice(["a", "b"], size=200)  # text: a categorical feature unless data.features says
    frame["y1"] = x @ [1.0, 2.0, -1.0] + 5 + 0.1 * rng.normal(size=200)
    frame["y2"] = x @ [-30.0, 0.0, 5.0] - 200 + rng.normal(size=200)
    path = write(frame, tmp_path / "two.csv")
    fit = run_cli("fit", *CSV, "--model", "LinearRegression", "--data.path", path, "--data.target", "[y1, y2]",
                  "--data.features", "[x0, x1, x2]", "--data.standardize_target", "true", "--optimizer", "SGD", "--optimizer.lr", "1.0",
                  *final_weights_only(50), root=root)
    data = fit.datamodule
    assert data.feature_names == ("x0", "x1", "x2") and data.target_names == ("y1", "y2")
    assert data.n_outputs == 2 and fit.model.hparams.n_outputs == 2

    predictions = pd.read_csv(versions(root)[0] / "predictions.csv")
    assert list(predictions.columns) == ["row", "split", "x0", "x1", "x2", "y1", "y2"]
    train = data.split_rows["train"]
    exact = SkLinearRegression().fit(x[train], frame[["y1", "y2"]].to_numpy()[train]).predict(x)
    np.testing.assert_allclose(predictions[["y1", "y2"]].to_numpy(), exact, atol=0.01 * frame[["y1", "y2"]].std().max())


@pytest.mark.parametrize(
    "labels, ids",
    [(["setosa", "versicolor", "virginica"], [f"plant-{i:03d}" for i in range(150)]),
     ([3, 5, 7], list(range(1000, 1150)))],
    ids=["text-labels", "int-labels"],
)
def test_labels_and_id_column_round_trip(tmp_path, root, labels, ids):
    iris = load_iris(as_frame=True)
    features = [c.replace(" (cm)", "").replace(" ", "_") for c in iris.feature_names]
    frame = iris.data.set_axis(features, axis=1)
    frame.insert(0, "id", ids)  # numeric ids too: id_column keeps them out of the features
    frame["label"] = [labels[t] for t in iris.target]
    train = write(frame, tmp_path / "iris.csv")
    raw = write(frame.drop(columns="label"), tmp_path / "raw.csv")
    fit = run_cli("fit", *CSV, "--model", "LogisticRegression", "--data.path", train, "--data.target", "label",
                  "--data.task", "classification", "--data.id_column", "id",
                  "--optimizer", "Adam", "--optimizer.lr", "0.1", *final_weights_only(30), root=root)
    assert fit.datamodule.feature_names == tuple(features)
    assert fit.datamodule.classes == labels and all(type(c) is type(labels[0]) for c in fit.datamodule.classes)
    run = versions(root)[0]
    fitted = pd.read_csv(run / "predictions.csv")
    assert list(fitted.columns) == ["row", "split", "id", "label", *(f"prob_{c}" for c in labels)]
    assert fitted["id"].tolist() == ids
    assert (fitted["label"] == frame["label"]).mean() > 0.9
    with open(run / "predictions.csv", newline="") as f:
        written = {row["label"] for row in csv.DictReader(f)}
    assert written == {str(label) for label in labels}  # 3, not 3.0
    fitted = fitted.drop(columns="split")  # a table of its own (predict_path) has no split

    train.unlink()
    run_cli("predict", "--ckpt_path", last_ckpt(run), "--data.predict_path", raw, root=root)
    pd.testing.assert_frame_equal(pd.read_csv(versions(root)[-1] / "predictions.csv"), fitted)


def test_example_configs_run(root):
    for config, data in (("csv_regression.yaml", "diabetes.csv"), ("csv_classification.yaml", "iris.csv")):
        run_cli("fit", "--config", CONFIGS / config, "--data.path", ROOT / "examples" / "data" / data,
                "--trainer.max_epochs", "2", root=root)
    regression, classification = (pd.read_csv(run / "predictions.csv") for run in versions(root))
    assert len(regression) == 442 and "progression" in regression.columns
    assert len(classification) == 150
    assert set(classification["species"]) <= {"setosa", "versicolor", "virginica"}


def test_nothing_is_read_before_the_shape_is_needed(tmp_path):
    data = CSVDataModule(path=str(tmp_path / "later.csv"), target="y")
    with pytest.raises(InputError, match="no such file"):
        data.n_features
    write(pd.DataFrame({"a": [1.0, 2.0, 3.0], "id": [7, 8, 9], "y": [0, 1, 0]}), tmp_path / "later.csv")
    data = CSVDataModule(path=str(tmp_path / "later.csv"), target="y", task="classification", id_column="id")
    assert (data.n_features, data.n_outputs) == (1, 2)
    assert data.hparams["features"] == ["a"] and data.hparams["classes"] == [0, 1]


# --- bad input: one clear message, no traceback ------------------------------------------------------------------
GOOD = "a,b,y\n1,2,3\n4,5,6\n7,8,9\n1,1,1\n2,2,2\n"
BAD_INPUTS = {
    # id: (files, arguments, expected message parts)
    "missing-file": ({}, ["--data.path", "{d}/nope.csv"], ["data.path=", "nope.csv", "no such file"]),
    "empty-file": ({"empty.csv": ""}, ["--data.path", "{d}/empty.csv"], ["empty.csv", "is empty"]),
    "header-only": ({"head.csv": "a,b,y\n"}, ["--data.path", "{d}/head.csv"], ["head.csv", "header", "no data rows"]),
    "missing-target": ({"ok.csv": GOOD}, ["--data.path", "{d}/ok.csv", "--data.target", "z"],
                       ["ok.csv", "target column 'z'", "'a', 'b', 'y'"]),
    "missing-feature": ({"ok.csv": GOOD}, ["--data.path", "{d}/ok.csv", "--data.features", "[a, q]"],
                        ["ok.csv", "feature column 'q'", "'a', 'b', 'y'"]),
    "text-in-feature": ({"bad.csv": "a,b,y\n1,2,3\n4,5,6\n7,abc,9\n1,1,1\n2,2,2\n3,3,3\n"},
                        ["--data.path", "{d}/bad.csv"], ["bad.csv", "column 'b'", "'abc'", "data row 3", "line 4"]),
    "text-in-target": ({"bad.csv": "a,b,y\n1,2,3\n4,5,x\n7,8,9\n1,1,1\n"},
                       ["--data.path", "{d}/bad.csv"], ["bad.csv", "target column 'y'", "'x'", "data row 2", "line 3"]),
    "empty-cell": ({"gap.csv": "a,b,y\n1,2,3\n\n4,,6\n7,8,9\n1,1,1\n"},  # a blank line: line != row + 1
                   ["--data.path", "{d}/gap.csv"], ["gap.csv", "column 'b'", "empty", "data row 2", "line 4"]),
    "nan-cell": ({"nan.csv": "a,b,y\n1,2,3\n4,5,6\nNaN,8,9\n1,1,1\n"},
                 ["--data.path", "{d}/nan.csv"], ["nan.csv", "column 'a'", "NaN", "data row 3"]),
    "inf-cell": ({"inf.csv": "a,b,y\n1,2,3\n4,inf,6\n7,8,9\n1,1,1\n"},
                 ["--data.path", "{d}/inf.csv"], ["inf.csv", "column 'b'", "inf", "data row 2", "line 3"]),
    "empty-label": ({"lab.csv": "a,b,y\n1,2,p\n4,5,\n7,8,q\n"},
                    ["--data.path", "{d}/lab.csv", "--data.task", "classification", "--model", "LogisticRegression"],
                    ["lab.csv", "column 'y'", "empty", "data row 2"]),
    "single-class": ({"one.csv": "a,b,y\n1,2,c\n4,5,c\n7,8,c\n"},
                     ["--data.path", "{d}/one.csv", "--data.task", "classification", "--model", "LogisticRegression"],
                     ["one.csv", "column 'y'", "single class 'c'"]),
    "label-not-in-classes": ({"lab.csv": "a,b,y\n1,2,p\n4,5,q\n7,8,r\n"},
                             ["--data.path", "{d}/lab.csv", "--data.task", "classification", "--data.classes",
                              "[p, q]", "--model", "LogisticRegression"], ["lab.csv", "'r'", "data row 3", "['p', 'q']"]),
    "fractions-add-up-to-1": ({"ok.csv": GOOD}, ["--data.path", "{d}/ok.csv", "--data.val_fraction", "0.6",
                                                 "--data.test_fraction", "0.4"],
                              ["val_fraction=0.6", "test_fraction=0.4", "no training rows"]),
    "fractions-leave-no-rows": ({"ok.csv": GOOD}, ["--data.path", "{d}/ok.csv", "--data.val_fraction", "0.5",
                                                   "--data.test_fraction", "0.4"],
                                ["ok.csv", "no training rows", "5"]),
    "predict-file-lacks-feature": ({"ok.csv": GOOD, "new.csv": "a,y\n1,2\n"},
                                   ["--data.path", "{d}/ok.csv", "--data.predict_path", "{d}/new.csv"],
                                   ["data.predict_path=", "new.csv", "feature column 'b'", "'a', 'y'"]),
    "predictions-filename": ({"ok.csv": GOOD}, ["--data.path", "{d}/ok.csv", "--predictions.filename", "out.xlsx"],
                             ["predictions filename='out.xlsx'", ".csv or .parquet"]),
    "model-for-other-task": ({"ok.csv": GOOD}, ["--data.path", "{d}/ok.csv", "--data.task", "classification"],
                             ["LinearRegression", "regression", "classification"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_message(tmp_path, capsys, case):
    files, arguments, expected = BAD_INPUTS[case]
    message = one_line_error(tmp_path, capsys, files, arguments, "CSVDataModule")
    for part in expected:
        assert part in message, message
