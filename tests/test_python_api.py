"""The model carries its fitted scaling, and the package works from Python: load_from_checkpoint, a plain Trainer,
``lit_regression.load(...).predict(...)``; precisions other than float32; what fit feeds to Lightning's metric
dictionaries."""

from __future__ import annotations

import json
import os

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import lit_regression
from lit_regression.callbacks import Convergence
from lit_regression.datamodules import TableDataModule
from lit_regression.errors import InputError
from lit_regression.models import LinearRegression, LogisticRegression
from tests.conftest import CONFIGS, fit_config, run_cli, versions


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """A table as people have them: an id, a text column, a gap, a column name with spaces and units."""
    folder = tmp_path_factory.mktemp("people")
    rng = np.random.default_rng(0)
    n = 240
    table = pd.DataFrame({
        "Customer ID": [f"C{i:04d}" for i in range(n)],
        "age": rng.integers(18, 80, n).astype(float),
        "city": rng.choice(["Lyon", "Paris", "Nice"], n),
        "income (EUR)": rng.normal(50_000, 12_000, n).round(2),
    })
    table.loc[5, "age"] = np.nan
    table["spend"] = (3.0 * table["age"].fillna(40) + 0.002 * table["income (EUR)"]
                      + table["city"].map({"Lyon": 5, "Paris": 20, "Nice": -3}) + rng.normal(0, 2, n))
    table["segment"] = np.where(table["spend"] > table["spend"].median(), "high", "low")
    table.drop(columns=["segment"]).to_csv(folder / "people.csv", index=False)
    table.drop(columns=["spend"]).to_csv(folder / "segments.csv", index=False)
    table.drop(columns=["spend", "segment"]).head(7).to_csv(folder / "new.csv", index=False)
    return folder


TABLE = ("--data", "TableDataModule", "--data.id_column", "Customer ID", "--data.impute", "mean")


@pytest.fixture(scope="module")
def trained(people, tmp_path_factory):
    """A regression fit on the people table with scaled inputs and target: its run folder."""
    root = tmp_path_factory.mktemp("trained")
    run_cli("fit", "--model", "LinearRegression", *TABLE, "--data.path", people / "people.csv", "--data.target", "spend",
            "--data.standardize_target", "true", "--trainer.max_epochs", "30", root=root)
    return versions(root)[0]


def test_load_from_checkpoint_predicts_in_the_targets_units(trained, people):
    """The scaling is the model's: LinearRegression.load_from_checkpoint(ckpt)(x) on the raw numbers gives what
    predict wrote, and the buffers hold the training rows' statistics."""
    ckpt = trained / "checkpoints" / "last.ckpt"
    model = LinearRegression.load_from_checkpoint(ckpt)
    expected = pd.read_csv(trained / "predictions.csv")["spend"].to_numpy()
    datamodule = lit_regression.load(ckpt).datamodule
    x = datamodule.predict_rows(__import__("pyarrow").csv.read_csv(people / "people.csv"))
    assert x[0, 0] == 70.0  # numbers as in the file: the model standardises them
    with torch.no_grad():
        predicted = model(x).reshape(-1).numpy()
    assert predicted == pytest.approx(expected, rel=1e-5)
    table = pd.read_csv(people / "people.csv")
    assert float(model.input_mean[0]) != 0 and float(model.target_scale[0]) == pytest.approx(
        table["spend"].std(ddof=0), rel=0.05)


def test_trainer_predict_with_any_loader(trained, people):
    """trainer.predict gives the targets' units with the datamodule from the checkpoint and with plain loaders of
    raw inputs, with or without targets."""
    ckpt = trained / "checkpoints" / "last.ckpt"
    model = LinearRegression.load_from_checkpoint(ckpt)
    datamodule = TableDataModule.load_from_checkpoint(ckpt)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    expected = pd.read_csv(trained / "predictions.csv")["spend"].to_numpy()
    from_datamodule = torch.cat(trainer.predict(model, datamodule=datamodule)).reshape(-1).numpy()
    assert from_datamodule == pytest.approx(expected, rel=1e-5)
    x = datamodule.splits["predict"][0]
    y = torch.zeros(len(x), 1)
    for loader in (DataLoader(x, batch_size=50), DataLoader(TensorDataset(x), batch_size=50),
                   DataLoader(TensorDataset(x, y), batch_size=50)):
        predicted = torch.cat(trainer.predict(model, loader)).reshape(-1).numpy()
        assert predicted == pytest.approx(expected, rel=1e-5)


def test_a_plain_trainer_fits_the_packages_model_and_datamodule(people, monkeypatch):
    """No CLI: the datamodule knows its inputs before setup, a Trainer fits, and the model predicts raw rows as
    scikit-learn's least squares on the same encoded rows does."""
    from sklearn.linear_model import LinearRegression as SkLinear

    monkeypatch.chdir(people)
    datamodule = TableDataModule(path="people.csv", target="spend", id_column="Customer ID", impute="mean")
    assert datamodule.hparams.path == str(people / "people.csv")  # absolute: checkpoints work from anywhere
    model = LinearRegression(n_features=datamodule.n_features)
    trainer = L.Trainer(max_epochs=50, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", callbacks=[Convergence()])
    trainer.fit(model, datamodule=datamodule)
    x, y = datamodule.splits["train"]
    reference = SkLinear().fit(x.double().numpy(), y.double().numpy())
    with torch.no_grad():
        predicted = model(x).reshape(-1).double().numpy()
    assert predicted == pytest.approx(reference.predict(x.double().numpy()).reshape(-1), abs=1e-3 * float(y.std()))


def test_load_predict_takes_a_dataframe_a_dict_or_a_path(trained, people):
    ckpt = trained / "checkpoints" / "last.ckpt"
    predictor = lit_regression.load(ckpt)
    from_path = predictor.predict(people / "new.csv")
    assert list(from_path.columns) == ["row", "Customer ID", "spend"]
    expected = pd.read_csv(trained / "predictions.csv")["spend"].to_numpy()[:7]
    assert from_path["spend"].to_numpy() == pytest.approx(expected, rel=1e-5)
    frame = pd.read_csv(people / "new.csv")[["income (EUR)", "city", "age", "Customer ID"]]  # any column order
    assert predictor.predict(frame)["spend"].to_numpy() == pytest.approx(expected, rel=1e-5)
    one = predictor.predict({"Customer ID": ["new"], "age": [None], "city": ["Paris"], "income (EUR)": [52_000.0]})
    assert one["Customer ID"].tolist() == ["new"] and np.isfinite(one["spend"]).all()  # the gap imputed
    row = pd.read_csv(people / "new.csv").iloc[0].to_dict()  # one row as single values
    assert predictor.predict(row)["spend"].tolist() == pytest.approx(from_path["spend"].tolist()[:1], rel=1e-5)
    with pytest.raises(InputError, match="'city'"):
        predictor.predict({"Customer ID": ["x"], "age": [30.0], "income (EUR)": [1.0]})
    with pytest.raises(InputError, match=r"^rows has no id column 'Customer ID' \(data.id_column, .*\): add it to every "
                                         r"row$"):  # the model's id column: no --data option changes it here
        predictor.predict({"age": [30.0], "city": ["Paris"], "income (EUR)": [1.0]})
    uneven = {"Customer ID": ["a", "b"], "age": [[30.0, 1.0], [40.0]], "city": "Paris", "income (EUR)": (1.0, 2.0)}
    with pytest.raises(InputError, match=r"^rows: column 'age' is not a list of cells$"):
        predictor.predict(uneven)
    with pytest.raises(InputError, match=r"^rows: the columns differ in length \('Customer ID' has 2 values, 'city' "
                                         r"has 1 value\); give each column one value per row$"):
        predictor.predict({**uneven, "age": (a for a in (30.0, 40.0))})  # a generator is a column too
    # as --ckpt_path takes it: the newest last.ckpt under root
    assert lit_regression.load("last", root=trained.parents[1]).checkpoint == str(ckpt)


def test_a_category_column_without_any_value_is_filled_as_text(trained):
    """Rows whose text category is empty in every row (a column of nulls, which reads as numbers) get its most
    frequent level, as a gap among other values does."""
    predictor = lit_regression.load(trained / "checkpoints" / "last.ckpt")
    fill = predictor.datamodule.fit_preprocessing().fill["city"]
    row = {"Customer ID": "C9999", "age": 40.0, "city": None, "income (EUR)": 50_000.0}
    assert predictor.predict(row)["spend"].tolist() == predictor.predict({**row, "city": fill})["spend"].tolist()


def test_every_prediction_call_names_its_unseen_categories(trained, capsys):
    predictor = lit_regression.load(trained / "checkpoints" / "last.ckpt")
    row = {"Customer ID": "C9999", "age": 40.0, "city": "Berlin", "income (EUR)": 50_000.0}
    for city in ("Berlin", "Oslo"):
        predictor.predict({**row, "city": city})
        err = capsys.readouterr().err
        assert f"column 'city' has 1 row with categories not seen in training ('{city}')" in err, err


def test_load_predict_gives_class_probabilities(people, tmp_path):
    run_cli("fit", "--model", "LogisticRegression", *TABLE, "--data.path", people / "segments.csv",
            "--data.target", "segment", "--trainer.max_epochs", "30", root=tmp_path)
    run = versions(tmp_path)[0]
    predicted = lit_regression.load(run / "checkpoints" / "last.ckpt").predict(people / "new.csv")
    assert list(predicted.columns) == ["row", "Customer ID", "segment", "prob_high", "prob_low"]
    assert (predicted["prob_high"] + predicted["prob_low"]).to_numpy() == pytest.approx(1.0, abs=1e-6)
    written = pd.read_csv(run / "predictions.csv").head(7)
    assert predicted["segment"].tolist() == written["segment"].tolist()
    assert isinstance(LogisticRegression.load_from_checkpoint(run / "checkpoints" / "last.ckpt"), LogisticRegression)


def test_checkpoint_without_scaling_buffers_takes_them_from_its_datamodule_state(trained, tmp_path):
    """Checkpoints written before the scaling was the model's applied it in the datamodule: they load, and
    predict the same."""
    ckpt = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    for name in ("input_mean", "input_scale", "target_mean", "target_scale"):
        del ckpt["state_dict"][name]
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    new_model = LinearRegression.load_from_checkpoint(trained / "checkpoints" / "last.ckpt")
    old_model = LinearRegression.load_from_checkpoint(old)
    x = torch.tensor([[40.0, 1.0, 0.0, 0.0, 50_000.0]])
    assert float(old_model(x)) == pytest.approx(float(new_model(x)), rel=1e-6)


@pytest.mark.parametrize("precision", ["64-true", "bf16-true"])
@pytest.mark.parametrize("config", ["csv_regression.yaml", "csv_classification.yaml", "line_linear.yaml"])
def test_other_precisions_fit_and_report(config, precision, tmp_path):
    cli = fit_config(config, tmp_path, "--trainer.max_epochs", "3", "--trainer.precision", precision)
    run = versions(tmp_path)[0]
    report = json.loads((run / "report.json").read_text())
    assert report["stage"] == "fit" and (run / "predictions.csv").exists() and (run / "figures").is_dir()
    assert next(cli.model.parameters()).dtype == (torch.float64 if precision == "64-true" else torch.bfloat16)


def test_fit_feeds_the_progress_bar_and_logged_metrics(tmp_path):
    # (the prediction pass after fit would reset them, as any trainer.predict does)
    cli = fit_config("csv_regression.yaml", tmp_path, "--trainer.max_epochs", "3", "--predictions.enabled", "false")
    bar, logged = cli.trainer.progress_bar_metrics, cli.trainer.logged_metrics
    assert {"train_loss", "val_loss", "val_r2"} <= set(bar) and all(isinstance(v, float) for v in bar.values())
    assert {"train_loss", "val_loss", "val_r2", "val_mae", "epoch"} <= set(logged)
    assert float(logged["val_loss"]) == pytest.approx(float(cli.trainer.callback_metrics["val_loss"]))


def test_test_on_the_validation_rows_is_announced(tmp_path, capsys):
    fit_config("csv_regression.yaml", tmp_path, "--trainer.max_epochs", "2")
    ckpt = versions(tmp_path)[0] / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    run_cli("test", "--ckpt_path", ckpt, "--data.init_args.test_fraction", "0", root=tmp_path / "test")
    assert "test runs on the 89 validation rows" in capsys.readouterr().out
    run_cli("test", "--ckpt_path", ckpt, root=tmp_path / "test2")  # the config holds out 20% for test
    assert "test runs on the" not in capsys.readouterr().out


def test_checkpoint_paths_are_absolute_and_work_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)  # the config's table path is relative to the repository
    fit_config("csv_regression.yaml", tmp_path / "runs", "--trainer.max_epochs", "2")
    ckpt = versions(tmp_path / "runs")[0] / "checkpoints" / "last.ckpt"
    path = torch.load(ckpt, weights_only=True)["datamodule_hyper_parameters"]["path"]
    assert os.path.isabs(path) and path.endswith("diabetes.csv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cli = run_cli("test", "--ckpt_path", ckpt, root=tmp_path / "test")
    assert "test_loss" in cli.trainer.callback_metrics


def test_no_validation_rows_with_a_text_column(people, tmp_path, capsys):
    """--data.val_fraction 0 on a table with a category: the empty split is encoded (scikit-learn refuses zero
    rows), only last.ckpt is kept, and the console says so."""
    run_cli("fit", "--model", "LinearRegression", *TABLE, "--data.path", people / "people.csv", "--data.target",
            "spend", "--data.val_fraction", "0", "--trainer.max_epochs", "5", root=tmp_path)
    assert "no validation rows" in capsys.readouterr().out
    assert [p.name for p in (versions(tmp_path)[0] / "checkpoints").iterdir()] == ["last.ckpt"]


def test_callbacks_see_the_epochs_own_training_values(people):
    """Callbacks' on_train_epoch_end run before the module's: the training values must be this epoch's by then,
    as with self.log(on_epoch=True) (a progress bar or EarlyStopping on train_loss would lag an epoch)."""
    seen = []

    class Spy(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            seen.append(float(trainer.progress_bar_metrics["train_loss"]))

    datamodule = TableDataModule(path=str(people / "people.csv"), target="spend", id_column="Customer ID",
                                 impute="mean", standardize_target=True)
    model = LinearRegression(n_features=datamodule.n_features, optimizer="sgd", lr=0.05)
    trainer = L.Trainer(max_epochs=3, callbacks=[Spy()], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, datamodule=datamodule)
    assert len(seen) == 3 and seen[0] > seen[1] > seen[2]
    assert seen[-1] == float(trainer.progress_bar_metrics["train_loss"])
