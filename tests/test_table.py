"""TableDataModule on real-looking tables: categories, gaps, Parquet/TSV/any delimiter, every column accounted for."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression as SkLinearRegression
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from conftest import CONFIGS, ROOT, one_line_error, run_cli, versions

sys.path.insert(0, str(ROOT / "examples" / "data"))
from make_insurance import make as make_insurance  # noqa: E402

TABLE = ("--data", "TableDataModule", "--trainer.enable_model_summary", "false")
LBFGS = ("--optimizer", "LBFGS", "--optimizer.lr", "1", "--optimizer.line_search_fn", "strong_wolfe")
NUMERIC = ["age", "BMI (kg/m2)", "children"]
CATEGORICAL = ["sex", "smoker", "region"]


def last_ckpt(run: Path) -> Path:
    return run / "checkpoints" / "last.ckpt"


def insurance(tmp_path: Path, rows: int = 600) -> Path:
    path = tmp_path / "insurance.csv"
    make_insurance(rows).to_csv(path, index=False)
    return path


def sklearn_pipeline():
    """What an experienced scikit-learn user writes for this table."""
    columns = ColumnTransformer([
        ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), NUMERIC),
        ("categorical", make_pipeline(SimpleImputer(strategy="most_frequent"),
                                      OneHotEncoder(handle_unknown="ignore")), CATEGORICAL),
    ])
    return make_pipeline(columns, SkLinearRegression())


def test_categories_and_gaps_reach_sklearn_pipeline_r2(tmp_path, root, capsys):
    path = insurance(tmp_path)
    fit = run_cli("fit", *TABLE, "--model", "LinearRegression", "--data.path", path, "--data.target", "charges",
                  "--data.impute", "median", "--data.test_fraction", "0.2", "--data.standardize_target", "true",
                  *LBFGS, "--trainer.max_epochs", "30", root=root)
    printed = capsys.readouterr().out
    for line in ("policy id    ignored: has 360 distinct values in the training rows, more than "
                 "data.max_categories=50", "region       categorical feature (4 levels)",
                 "BMI (kg/m2)  numeric feature", "charges      target"):
        assert line in printed, printed
    data = fit.datamodule
    assert data.feature_names == ("age", "sex=female", "sex=male", "BMI (kg/m2)", "children", "smoker=no",
                                  "smoker=yes", "region=northeast", "region=northwest", "region=southeast",
                                  "region=southwest")
    test = run_cli("test", "--ckpt_path", last_ckpt(versions(root)[0]), root=root)
    ours = float(test.trainer.callback_metrics["test_r2"])

    frame = pd.read_csv(path)
    train, held_out = data.split_rows["train"], data.split_rows["test"]
    pipeline = sklearn_pipeline().fit(frame.iloc[train], frame["charges"].iloc[train])
    sklearn = r2_score(frame["charges"].iloc[held_out], pipeline.predict(frame.iloc[held_out]))
    print(f"insurance test R^2: ours {ours:.6f}, scikit-learn pipeline {sklearn:.6f}")
    assert abs(ours - sklearn) < 0.005
    assert ours > 0.8  # the text columns carry most of the signal: without them R^2 is far lower

    report = json.loads((versions(root)[0] / "report.json").read_text())
    roles = {c["column"]: c for c in report["columns"]}
    assert roles["policy id"]["role"] == "ignored" and "max_categories" in roles["policy id"]["reason"]
    assert roles["smoker"] == {"column": "smoker", "role": "categorical feature", "levels": 2}
    assert len(report["columns"]) == frame.shape[1]
    # coefficients in the columns' own units are what the scikit-learn pipeline learns for the numeric columns
    names = report["features"]
    raw = dict(zip(names, report["raw_units"]["weight"][0]))
    sk_coef = pipeline[-1].coef_[: len(NUMERIC)] / pipeline[0].named_transformers_["numeric"][-1].scale_
    for name, coef in zip(NUMERIC, sk_coef):
        assert raw[name] == pytest.approx(coef, rel=1e-3), name
    # one-hot columns and the bias are collinear: the report compares losses, not parameters
    assert "gap_to_exact" not in report and report["optimization"]["relative_gap"] < 1e-6
    assert "collinear" in report["note"]


def test_same_table_in_every_format_learns_identical_weights(tmp_path, root):
    frame = make_insurance(200)
    paths = {"csv": tmp_path / "t.csv", "tsv": tmp_path / "t.tsv", "semicolon": tmp_path / "t_semicolon.csv",
             "parquet": tmp_path / "t.parquet"}
    frame.to_csv(paths["csv"], index=False)
    frame.to_csv(paths["tsv"], index=False, sep="\t")
    frame.to_csv(paths["semicolon"], index=False, sep=";", decimal=",")  # a European spreadsheet's CSV
    frame.to_parquet(paths["parquet"], index=False)
    weights = {}
    for kind, path in paths.items():
        sep = ("--data.sep", ";", "--data.decimal", ",") if kind == "semicolon" else ()
        run_cli("fit", *TABLE, "--model", "LinearRegression", "--data.path", path, "--data.target", "charges",
                "--data.impute", "mean", *sep, "--trainer.max_epochs", "5", "--predictions.enabled", "false",
                "--plots.enabled", "false", root=root / kind)
        state = torch.load(last_ckpt(versions(root / kind)[0]), weights_only=True)
        weights[kind] = state["state_dict"]["linear.weight"]
        assert state["datamodule_hyper_parameters"]["categories"]["region"] == [
            "northeast", "northwest", "southeast", "southwest"]
    for kind in ("tsv", "semicolon", "parquet"):
        assert torch.equal(weights[kind], weights["csv"]), kind


def test_predict_from_checkpoint_alone_with_reordered_extra_and_unseen(tmp_path, root, capsys):
    path = insurance(tmp_path, 300)
    run_cli("fit", *TABLE, "--model", "LinearRegression", "--data.path", path, "--data.target", "charges",
            "--data.impute", "median", "--data.standardize_target", "true", *LBFGS, "--trainer.max_epochs", "10",
            root=root)
    run = versions(root)[0]
    fitted = pd.read_csv(run / "predictions.csv")
    report = json.loads((run / "report.json").read_text())

    new = pd.read_csv(path).drop(columns="charges").head(8)
    new.loc[2, "region"], new.loc[5, "region"] = "Lyon", "Lyon"
    new.loc[6, "region"] = "Mars"
    new = new[list(reversed(new.columns))]  # columns in another order
    new["comment"] = "extra"  # and a column the model does not use
    new_path = tmp_path / "new.parquet"
    new.to_parquet(new_path, index=False)
    path.unlink()  # the checkpoint alone must do
    capsys.readouterr()
    run_cli("predict", "--ckpt_path", last_ckpt(run), "--data.predict_path", new_path, root=root)
    captured = capsys.readouterr()
    assert "ignoring the columns 'policy id', 'comment', which the model does not use" in captured.out
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, captured.err
    assert "column 'region' has 3 rows with categories not seen in training ('Lyon', 'Mars')" in warnings[0]
    assert "all zeros" in warnings[0]

    predicted = pd.read_csv(versions(root)[-1] / "predictions.csv")
    assert predicted["row"].tolist() == list(range(8))
    seen = [0, 1, 3, 4, 7]
    np.testing.assert_allclose(predicted["charges"].to_numpy()[seen], fitted["charges"].to_numpy()[seen], rtol=1e-6)
    # an unseen region counts as no region: the prediction from the raw-unit coefficients without a region term
    names, weight = report["features"], np.asarray(report["raw_units"]["weight"][0])
    bias = report["raw_units"]["bias"][0]
    for i in (2, 5, 6):
        row = new.iloc[i]
        x = np.zeros(len(names))
        for j, name in enumerate(names):
            column, _, level = name.partition("=")
            x[j] = float(row[column]) if not level else float(str(row[column]) == level)
        assert predicted["charges"][i] == pytest.approx(x @ weight + bias, rel=1e-5)


def test_logistic_regression_on_text_labels_without_task(tmp_path, root):
    frame = make_insurance(300)
    path = tmp_path / "smokers.csv"
    frame.to_csv(path, index=False)
    fit = run_cli("fit", *TABLE, "--model", "LogisticRegression", "--data.path", path, "--data.target", "smoker",
                  "--data.impute", "mean", *LBFGS, "--trainer.max_epochs", "5", root=root)
    assert fit.datamodule.task == "classification" and fit.datamodule.classes == ["no", "yes"]
    assert fit.datamodule.hparams.task == "classification"  # written down, so the checkpoint knows it
    predicted = pd.read_csv(versions(root)[0] / "predictions.csv")
    assert set(predicted["smoker"]) <= {"no", "yes"} and (predicted["smoker"] == frame["smoker"]).mean() > 0.9
    run_cli("test", "--ckpt_path", last_ckpt(versions(root)[0]), root=root)


def test_numeric_codes_as_categories_and_bool_columns(tmp_path, root):
    rng = np.random.default_rng(1)
    zips = rng.choice([75001, 13001, 69001], size=120)
    member = rng.choice([True, False], size=120)
    frame = pd.DataFrame({"zip": zips, "member": member, "x": rng.normal(size=120)})
    frame["y"] = 2 * frame["x"] + np.select([zips == 75001, zips == 13001], [5.0, -5.0], 0.0) + 3 * member
    path = tmp_path / "codes.parquet"
    frame.to_parquet(path, index=False)
    fit = run_cli("fit", *TABLE, "--model", "LinearRegression", "--data.path", path, "--data.categorical", "[zip]",
                  *LBFGS, "--trainer.max_epochs", "10", root=root)
    assert fit.datamodule.feature_names == ("zip=13001", "zip=69001", "zip=75001", "member=False", "member=True", "x")
    assert json.loads((versions(root)[0] / "report.json").read_text())["metrics"]["val_r2"] > 0.999


def test_single_level_and_empty_columns_are_ignored_with_the_reason(tmp_path, root, capsys):
    frame = pd.DataFrame({"x": np.arange(40.0), "country": "FR", "blank": np.nan, "y": np.arange(40.0) * 2})
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    fit = run_cli("fit", *TABLE, "--model", "LinearRegression", "--data.path", path, "--trainer.max_epochs", "1",
                  root=root)
    out = capsys.readouterr().out
    assert "country  ignored: has a single level 'FR' in the training rows" in out
    assert "blank    ignored: has no values" in out
    assert fit.datamodule.feature_names == ("x",)


def test_csv_data_module_name_still_works(tmp_path, root):
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": np.arange(30.0), "y": np.arange(30.0)}).to_csv(path, index=False)
    fit = run_cli("fit", "--data", "CSVDataModule", "--model", "LinearRegression", "--data.path", path,
                  "--trainer.max_epochs", "1", root=root)
    assert type(fit.datamodule).__name__ == "CSVDataModule"
    run_cli("predict", "--ckpt_path", last_ckpt(versions(root)[0]), root=root)


def test_insurance_config_runs(root):
    run_cli("fit", "--config", CONFIGS / "insurance.yaml", "--data.path", ROOT / "examples" / "data" / "insurance.csv",
            "--trainer.max_epochs", "3", root=root)
    predicted = pd.read_csv(versions(root)[0] / "predictions.csv")
    assert len(predicted) == 600 and predicted["charges"].notna().all()
    assert list(predicted.columns) == ["row", "split", "policy id", "charges"]  # the config names the id column


# --- bad input: one clear line, exit status 2 ---------------------------------------------------------------------
GOOD = "a,b,city,y\n1,2,Paris,3\n4,5,Lyon,6\n7,8,Paris,9\n1,1,Lyon,1\n2,2,Nice,2\n3,3,Paris,3\n"
BAD = {
    "duplicate-header": ({"d.csv": "a,b,a,y\n1,2,3,4\n5,6,7,8\n"}, ["--data.path", "{d}/d.csv"],
                         ["d.csv", "names the column 'a' twice", "columns 1 and 3"]),
    "not-parquet": ({"fake.parquet": GOOD}, ["--data.path", "{d}/fake.parquet"], ["fake.parquet", "not a Parquet file"]),
    "wrong-delimiter": ({"semi.csv": GOOD.replace(",", ";")}, ["--data.path", "{d}/semi.csv"],
                        ["semi.csv", "single column", "--data.sep ';'"]),
    "wrong-delimiter-ragged": ({"semi.csv": "a;b;y\n1,5;2;3\n4,5;6;7\n"}, ["--data.path", "{d}/semi.csv"],
                               ["semi.csv", "--data.sep ';'"]),
    "decimal-comma": ({"eu.csv": "a;b;y\n1,5;2;3\n4,25;5;6\n7,0;8;9\n"}, ["--data.path", "{d}/eu.csv", "--data.sep", ";"],
                      ["eu.csv", "column 'a'", "decimal comma", "--data.decimal ','"]),
    "categorical-unknown": ({"ok.csv": GOOD}, ["--data.path", "{d}/ok.csv", "--data.categorical", "[zip]"],
                            ["data.categorical names 'zip'", "ok.csv", "'a', 'b', 'city', 'y'"]),
    "impute-unknown": ({"ok.csv": GOOD}, ["--data.path", "{d}/ok.csv", "--data.impute", "{zip: mean}"],
                       ["data.impute names 'zip'", "ok.csv"]),
    "impute-bad-strategy": ({"ok.csv": GOOD}, ["--data.path", "{d}/ok.csv", "--data.impute", "mode"],
                            ["data.impute='mode' is invalid", "'median'"]),
    "text-target-regression": ({"ok.csv": GOOD}, ["--data.path", "{d}/ok.csv", "--data.target", "city"],
                               ["target column 'city' holds text", "LogisticRegression"]),
    "task-contradicts-model": ({"ok.csv": GOOD}, ["--data.path", "{d}/ok.csv", "--data.task", "classification"],
                               ["LinearRegression", "regression", "classification"]),
    "gap-in-target": ({"g.csv": "a,y\n1,2\n3,\n5,6\n7,8\n"}, ["--data.path", "{d}/g.csv", "--data.impute", "mean"],
                      ["g.csv", "target column 'y'", "empty", "data row 2"]),
    "gap-in-category": ({"g.csv": GOOD.replace("Nice", "")}, ["--data.path", "{d}/g.csv", "--data.val_fraction", "0"],
                        ["g.csv", "column 'city'", "empty", "data row 5", "--data.impute"]),
    "too-many-levels-asked": ({"ok.csv": GOOD}, ["--data.path", "{d}/ok.csv", "--data.categorical", "[a]",
                                                 "--data.max_categories", "2"],
                              ["categorical column 'a'", "more than data.max_categories=2"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_table_input_is_one_clear_line(tmp_path, capsys, case):
    files, arguments, expected = BAD[case]
    message = one_line_error(tmp_path, capsys, files, arguments, "TableDataModule")
    for part in expected:
        assert part in message, message


def test_a_true_false_column_without_gaps_takes_imputation(tmp_path):
    """--data.impute mean on a table whose true/false column has no empty cell (pyarrow reads it as bool)."""
    from lit_regression.datamodules import TableDataModule

    path = tmp_path / "pets.csv"
    path.write_text("age,has pet?,y\n" + "".join(f"{20 + i % 7},{'true' if i % 3 else 'false'},{i % 5}\n"
                                                  for i in range(40)))
    dm = TableDataModule(path=str(path), target="y", impute="mean")
    dm.setup("fit")
    assert dm.fit_preprocessing().fill["has pet?"] is True


def test_a_predict_table_without_the_id_column_names_it_and_the_way_out(tmp_path, root, capsys):
    from lit_regression.cli import main

    path = insurance(tmp_path)
    run_cli("fit", "--config", CONFIGS / "insurance.yaml", "--data.path", path, root=root)
    new = tmp_path / "new.csv"
    pd.read_csv(path).drop(columns=["policy id", "charges"]).head(5).to_csv(new, index=False)
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--ckpt_path", "last", "--data.predict_path", str(new), "--trainer.default_root_dir", str(root)])
    assert stop.value.code == 2
    assert "has no id column 'policy id'" in capsys.readouterr().err
    predict = run_cli("predict", "--ckpt_path", "last", "--data.predict_path", new, "--data.id_column", "null", root=root)
    (writer,) = [c for c in predict.trainer.callbacks if type(c).__name__ == "PredictionWriter"]
    assert len(pd.read_csv(writer.path)) == 5
