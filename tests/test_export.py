"""``lit-regression export``: the ONNX file takes the raw columns and gives what ``lit_regression.load(ckpt).predict``
gives, for every model kind, on held-out rows with unseen levels and empty cells; the torch.export program and
TorchScript of the numeric path; the description beside them; one-line errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from conftest import fit_config, run_cli, versions
import lit_regression
from lit_regression.cli import main
from lit_regression.errors import heard

pytestmark = pytest.mark.xdist_group("export")


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A table as people have them: an id, a numeric column with gaps and units in its name, a text category with
    gaps, a category of numbers (a zip code), a price, a text label and a label of whole numbers; and rows to
    predict with levels the training rows never had and empty cells."""
    folder = tmp_path_factory.mktemp("shop")
    rng = np.random.default_rng(3)

    def rows(n, colours, zips):
        table = pd.DataFrame({
            "order id": [f"o-{i}" for i in range(n)],
            "Größe (cm)": rng.normal(170, 10, n).round(1),
            "colour": rng.choice(colours, n),
            "zip": rng.choice(zips, n),
            "age": rng.integers(18, 80, n).astype(float),
        })
        table.loc[rng.random(n) < 0.1, "Größe (cm)"] = np.nan
        table.loc[rng.random(n) < 0.1, "colour"] = None
        table.loc[rng.random(n) < 0.1, "age"] = np.nan
        effect = table["colour"].map({"red": 10.0, "green": -5.0, "blue": 0.0}).fillna(0)
        table["price €"] = (3 * table["Größe (cm)"].fillna(170) + effect + 0.5 * table["age"].fillna(50)
                            + table["zip"].map({75001: 4.0, 69002: 0.0, 13003: -2.0}).fillna(0) + rng.normal(0, 2, n))
        table["kind"] = np.where(table["price €"] > 525, "dear", "cheap")
        table["tier"] = pd.cut(table["price €"], [-np.inf, 505, 540, np.inf], labels=[1, 2, 3]).astype(int)
        return table

    rows(300, ["red", "green", "blue"], [75001, 69002, 13003]).to_csv(folder / "shop.csv", index=False)
    held_out = rows(40, ["red", "green", "blue", "pink"], [75001, 69002, 13003, 99999])
    held_out.loc[0, ["colour", "Größe (cm)", "age"]] = [None, np.nan, np.nan]  # every imputed cell empty
    held_out.loc[1, ["colour", "zip"]] = ["pink", 99999]  # levels not seen in training
    held_out.drop(columns=["price €", "kind", "tier"]).to_csv(folder / "new.csv", index=False)
    return folder


TABLE = ("--data", "TableDataModule", "--data.id_column", "order id", "--data.categorical", "[colour, zip]",
         "--data.impute", "mean", "--data.features", "['Größe (cm)', colour, zip, age]", "--trainer.max_epochs", "4")
MODELS = {
    "linear": ("--model", "LinearRegression", "--data.target", "price €", "--data.drop_first", "true"),
    "two_layer": ("--model", "TwoLayerRegression", "--data.target", "price €", "--data.standardize_target", "true"),
    "binary": ("--model", "LogisticRegression", "--data.target", "kind", "--data.task", "classification"),
    "multiclass": ("--model", "LogisticRegression", "--data.target", "tier", "--data.task", "classification"),
}


@pytest.fixture(scope="module")
def checkpoints(shop, tmp_path_factory):
    """A checkpoint of each model kind, trained on the shop table."""
    found = {}
    for kind, arguments in MODELS.items():
        root = tmp_path_factory.mktemp(kind)
        run_cli("fit", *TABLE, *arguments, "--data.path", shop / "shop.csv", root=root)
        found[kind] = versions(root)[0] / "checkpoints" / "last.ckpt"
    return found


def feeds(frame: pd.DataFrame, description: dict) -> dict[str, np.ndarray]:
    """The ONNX inputs of a table's rows, as the description says: a ``[rows, 1]`` column each, an empty cell NaN
    (numbers) or ``""`` (text)."""
    out = {}
    for entry in description["inputs"]:
        column = frame[entry["name"]]
        if entry["type"] == "string":
            values = np.array(["" if pd.isna(v) else str(v) for v in column], dtype=object)
        else:
            values = column.to_numpy(dtype=entry["type"])
        out[entry["name"]] = values.reshape(-1, 1)
    return out


def exported(checkpoint, tmp_path, format: str = "onnx") -> tuple[str, dict]:
    """The file ``lit-regression export`` writes, and its description."""
    output = str(tmp_path / f"{checkpoint.parent.parent.name}.{ {'onnx': 'onnx', 'torch': 'pt2'}[format]}")
    main(["export", "--ckpt_path", str(checkpoint), "--output", output, "--format", format])  # no SystemExit
    with open(output + ".json", encoding="utf-8") as f:
        return output, json.load(f)


@pytest.mark.parametrize("kind", list(MODELS))
def test_the_onnx_file_predicts_what_predict_does(kind, checkpoints, shop, tmp_path):
    """The file's outputs equal ``load(ckpt).predict`` on held-out rows (float32: atol 1e-5, rtol 1.3e-6),
    unseen levels and empty cells included; the batch size is free (1 row, 40 rows); the graph passes
    ``onnx.checker``; the description names the inputs, outputs and versions."""
    path, description = exported(checkpoints[kind], tmp_path)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    frame = pd.read_csv(shop / "new.csv")
    predictor = lit_regression.load(checkpoints[kind])
    with heard() as warnings:
        expected = predictor.predict(frame)
    assert any("not seen in training" in w for w in warnings)  # the rows do hold unseen levels
    session = ort.InferenceSession(path)
    names = [o.name for o in session.get_outputs()]
    assert names == [o["name"] for o in description["outputs"]]
    assert [i.name for i in session.get_inputs()] == ["Größe (cm)", "colour", "zip", "age"]
    for rows in (frame, frame.iloc[[1]]):
        got = dict(zip(names, session.run(None, feeds(rows, description))))
        want = expected.iloc[rows.index]
        label = description["target"][0] if description["classes"] is not None else None
        for name, values in got.items():
            assert values.shape == (len(rows),)
            if name == label:  # the predicted label, of the classes' own type
                assert list(values) == list(want[name])
            else:
                np.testing.assert_allclose(values, want[name].to_numpy(np.float32), atol=1e-5, rtol=1.3e-6)
    kinds = {i["name"]: i["type"] for i in description["inputs"]}
    assert kinds == {"Größe (cm)": "float32", "colour": "string", "zip": "float64", "age": "float32"}
    assert description["versions"]["opset"] == 21 and description["versions"]["lit_regression"]


def test_an_unseen_level_is_all_zeros_and_the_reference_level_with_drop_first(checkpoints, tmp_path):
    """With ``drop_first``, the first level and an unseen one give the same prediction; the fill replaces an
    empty text cell."""
    path, description = exported(checkpoints["linear"], tmp_path)
    colour = next(i for i in description["inputs"] if i["name"] == "colour")
    assert colour["categories"] == ["blue", "green", "red"] and description["drop_first"]
    frame = pd.DataFrame({"order id": ["a", "b", "c"], "Größe (cm)": [170.0] * 3, "colour": ["blue", "violet", ""],
                          "zip": [75001] * 3, "age": [40.0] * 3})
    out = ort.InferenceSession(path).run(None, feeds(frame, description))[0]
    assert out[0] == out[1]
    assert out[2] == ort.InferenceSession(path).run(
        None, feeds(frame.assign(colour=[colour["fill"]] * 3), description))[0][2]


def test_a_model_without_a_table_exports_one_float_input(tmp_path):
    """A seed config's model: one input ``x``, outputs named after its targets, equal to predict; the torch
    program and TorchScript of the numeric path give the same numbers."""
    fit_config("line_linear.yaml", tmp_path, "--trainer.max_epochs", "3")
    checkpoint = versions(tmp_path)[0] / "checkpoints" / "last.ckpt"
    path, description = exported(checkpoint, tmp_path)
    assert [i["name"] for i in description["inputs"]] == ["x"]
    x = np.linspace(-2, 2, 7, dtype=np.float32).reshape(-1, 1)
    predictor = lit_regression.load(checkpoint)
    expected = predictor.predict(x)["y"].to_numpy()
    (got,) = ort.InferenceSession(path).run(None, {"x": x})
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1.3e-6)

    program, description = exported(checkpoint, tmp_path, "torch")
    assert description["outputs"][0]["columns"] == ["y"]
    loaded = torch.export.load(program).module()
    np.testing.assert_allclose(loaded(torch.from_numpy(x))[:, 0].numpy(), expected, atol=1e-5, rtol=1.3e-6)
    scripted = predictor.model.to_torchscript()
    np.testing.assert_allclose(scripted(torch.from_numpy(x))[:, 0].detach().numpy(), expected, rtol=1e-6)


def test_the_torch_program_takes_the_encoded_columns(checkpoints, shop, tmp_path):
    """``--format torch``: the program of the numeric path, on ``Predictor.inputs``, equals predict's
    probabilities; its description lists the encoded columns."""
    checkpoint = checkpoints["multiclass"]
    program, description = exported(checkpoint, tmp_path, "torch")
    predictor = lit_regression.load(checkpoint)
    frame = pd.read_csv(shop / "new.csv")
    assert description["inputs"][0]["columns"] == list(predictor.datamodule.feature_names)
    with heard():
        x, expected = predictor.inputs(frame), predictor.predict(frame)
    probabilities = torch.export.load(program).module()(x).numpy()
    want = expected[[f"prob_{c}" for c in description["classes"]]].to_numpy()
    np.testing.assert_allclose(probabilities, want, atol=1e-6)


def test_mistakes_get_one_line(checkpoints, tmp_path, capsys):
    """A missing checkpoint, an unknown format, a wrong suffix, a misspelt option: one line each, exit 2, no
    file written."""
    cases = [
        (["--ckpt_path", str(tmp_path / "gone.ckpt")], "gone.ckpt"),
        (["--ckpt_path", str(checkpoints["linear"]), "--format", "tflite"], "format"),
        (["--ckpt_path", str(checkpoints["linear"]), "--output", str(tmp_path / "m.pt2")], ".onnx"),
        (["--ckpt_pat", str(checkpoints["linear"])], "--ckpt_pat"),
    ]
    for arguments, named in cases:
        with pytest.raises(SystemExit) as stop:
            main(["export", *arguments])
        err = capsys.readouterr().err.strip()
        assert stop.value.code == 2 and err.startswith("lit-regression: error:") and len(err.splitlines()) == 1, err
        assert named in err
    assert list(tmp_path.iterdir()) == []


def test_torch_jit_trace_says_why_and_to_torchscript_traces(checkpoints):
    """Scripting is refused in one line; ``to_torchscript()`` traces, at any batch size."""
    model = lit_regression.load(checkpoints["two_layer"]).model
    with pytest.raises(ValueError, match="traced, not scripted"):
        model.to_torchscript(method="script")
    traced = model.to_torchscript()
    x = torch.randn(5, model.hparams.n_features) + torch.as_tensor(model.input_mean)
    torch.testing.assert_close(traced(x), model(x))


def test_true_false_and_blank_cells_read_alike_in_the_file_and_in_predict(tmp_path):
    """A true/false category: the file takes ``true``, ``True``, ``1`` (and ``""``, the empty cell, filled) and
    gives what ``predict`` gives for the same spellings, for ``None`` and for a blank."""
    rng = np.random.default_rng(5)
    n = 120
    frame = pd.DataFrame({"x": rng.normal(size=n), "vip": rng.choice(["true", "false"], n)})
    frame.loc[:9, "vip"] = ""
    frame["y"] = 2 * frame["x"] + np.where(frame["vip"] == "true", 5.0, 0.0) + rng.normal(0, 0.1, n)
    frame.to_csv(tmp_path / "vip.csv", index=False)
    run_cli("fit", "--model", "LinearRegression", "--data", "TableDataModule", "--data.path", tmp_path / "vip.csv",
            "--data.target", "y", "--data.impute", "mean", "--trainer.max_epochs", "3", root=tmp_path / "runs")
    checkpoint = versions(tmp_path / "runs")[0] / "checkpoints" / "last.ckpt"
    path, description = exported(checkpoint, tmp_path)
    vip = next(i for i in description["inputs"] if i["name"] == "vip")
    assert vip["type"] == "string" and vip["categories"] == ["false", "true"]
    predictor = lit_regression.load(checkpoint)
    session = ort.InferenceSession(path)
    spellings = ["true", "True", "TRUE", "1", "false", "False", "0", ""]
    got = session.run(None, {"x": np.zeros((len(spellings), 1), np.float32),
                             "vip": np.array(spellings, dtype=object).reshape(-1, 1)})[0]
    given = [True, "True", "TRUE", 1, False, "False", 0.0, None]
    want = [predictor.predict({"x": 0.0, "vip": [v]})["y"].iloc[0] for v in given]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1.3e-6)
    assert predictor.predict({"x": 0.0, "vip": [""]})["y"].iloc[0] == want[-1]  # a blank is an empty cell
    assert got[0] != got[4]
