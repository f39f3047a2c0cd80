"""Hostile input and hostile machines, each kind through the real command line (or the Python API): one line and
exit 2, or a run that finishes with the warning that says what it did. Never a traceback, never a silent
result."""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lit_regression
from lit_regression.cli import main
from lit_regression.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--trainer.accelerator", "cpu", "--plots.enabled", "false"]
FIT = ["fit", "--model", "LinearRegression", "--data", "TableDataModule", "--data.target", "charges",
       "--trainer.max_epochs", "3"]


def run(*args, root: Path) -> tuple[int, str]:
    """``lit-regression ARGS`` in this process: exit status and all it printed, which holds no traceback."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main([*map(str, args), "--trainer.default_root_dir", str(root), *QUIET])
            code = 0
        except SystemExit as stop:
            code = stop.code or 0
    printed = out.getvalue()
    assert "Traceback" not in printed
    return code, printed


def error_line(printed: str) -> str:
    lines = [line for line in printed.splitlines() if line.startswith("lit-regression: error:")]
    assert len(lines) == 1, printed
    return lines[0]


def insurance(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"age": rng.integers(18, 65, n), "bmi": rng.normal(30, 5, n).round(1),
                          "region": rng.choice(["north", "south", "east"], n)})
    frame["charges"] = (250 * frame["age"] + 300 * frame["bmi"] + frame["region"].map(
        {"north": 1000, "south": 0, "east": -500}) + rng.normal(0, 500, n)).round(2)
    return frame


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    insurance().to_csv(folder / "train.csv", index=False)
    code, printed = run(*FIT, "--data.path", folder / "train.csv", root=folder / "runs")
    assert code == 0, printed
    return next((folder / "runs").rglob("last.ckpt"))


# --- cells ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["inf", "-inf", "1e39", "nan"])
def test_a_cell_a_float32_cannot_hold_is_named_with_its_row(tmp_path, value):
    """A value beyond float32 or not finite: one line naming the file, column, row and value, standardised or
    not (the check runs before any scaling)."""
    rows = "\n".join(f"{i},{i * 2 + 1}" for i in range(8))
    path = tmp_path / "t.csv"
    path.write_text("x,y\n" + rows + f"\n{value},3\n")
    for standardize in ("true", "false"):
        code, printed = run("fit", "--model", "LinearRegression", "--data", "TableDataModule", "--data.path", path,
                            "--data.target", "y", "--data.standardize", standardize, root=tmp_path / "runs")
        assert code == 2, printed
        line = error_line(printed)
        assert "'x'" in line and "data row 9 (line 10 of the file)" in line and "t.csv" in line, line
        if value == "nan":
            assert "empty (or NaN)" in line
        else:
            assert (value.lstrip("-") in line) or "1e+39" in line, line


def test_a_value_beyond_float32_in_a_predicted_table_is_named(checkpoint, tmp_path):
    frame = insurance(10, seed=1).drop(columns="charges")
    frame.loc[3, "bmi"] = 1e300
    frame.to_csv(tmp_path / "new.csv", index=False)
    code, printed = run("predict", "--ckpt_path", checkpoint, "--data.predict_path", tmp_path / "new.csv",
                        root=tmp_path / "runs")
    line = error_line(printed)
    assert code == 2
    assert "new.csv" in line and "'bmi'" in line and "1e+300" in line and "data row 4 (line 5 of the file)" in line
    assert not list((tmp_path / "runs").rglob("predictions.csv"))


def test_an_empty_cell_in_a_predicted_table_says_the_model_fills_no_gaps(checkpoint, tmp_path):
    """The preprocessing is the checkpoint's: the fix is in the table, or in a model fitted with imputation."""
    frame = insurance(10, seed=1).drop(columns="charges")
    frame.loc[2, "bmi"] = np.nan
    frame.to_csv(tmp_path / "new.csv", index=False)
    code, printed = run("predict", "--ckpt_path", checkpoint, "--data.predict_path", tmp_path / "new.csv",
                        root=tmp_path / "runs")
    assert code == 2 and error_line(printed).endswith(
        "feature column 'bmi' has an empty (or NaN) cell at data row 3 (line 4 of the file); fill it in or drop that "
        "row: the model fills no gaps (one fitted with --data.impute mean does)"), printed


@pytest.mark.parametrize("how", ["csv int64", "parquet int64", "parquet uint64"])
def test_integers_beyond_2_53_are_an_ignored_identifier_or_a_rounded_feature(tmp_path, how):
    frame = insurance()
    big = [2**53 + 1 + 7 * i for i in range(len(frame))]
    if how == "csv int64":
        frame.insert(0, "serial", big)
        frame.to_csv(path := tmp_path / "t.csv", index=False)
    else:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        table = table.add_column(0, "serial", pa.array(big, pa.uint64() if "uint" in how else pa.int64()))
        pq.write_table(table, path := tmp_path / "t.parquet")
    code, printed = run(*FIT, "--data.path", path, root=tmp_path / "runs")
    assert code == 0, printed
    assert "serial" in printed and "beyond 2^53" in printed and "--data.id_column" in printed
    report = json.loads(next((tmp_path / "runs").rglob("report.json")).read_text())
    serial = next(r for r in report["columns"] if r["column"] == "serial")
    assert serial["role"] == "ignored" and "2^53" in serial["reason"]
    code, printed = run(*FIT, "--data.path", path, "--data.features", "[serial, age, bmi]", root=tmp_path / "again")
    assert code == 0, printed
    assert "warning:" in printed and f"'serial' holds whole numbers beyond 2^53 ({big[-1]}): used as floats" in printed


def test_a_latin1_table_is_one_line_then_reads_with_its_encoding(tmp_path):
    frame = insurance().rename(columns={"bmi": "Größe"})
    frame["region"] = frame["region"].map({"north": "Zürich", "south": "Genève", "east": "Bern"})
    frame.to_csv(path := tmp_path / "t.csv", index=False, encoding="latin-1")
    code, printed = run(*FIT, "--data.path", path, root=tmp_path / "runs")
    line = error_line(printed)
    assert code == 2 and "is not UTF-8 text (byte 0xf6 on line 1)" in line and "--data.encoding latin-1" in line
    code, printed = run(*FIT, "--data.path", path, "--data.encoding", "latin-1", root=tmp_path / "runs")
    assert code == 0, printed
    assert "weight[Größe]" in printed and "weight[region=Zürich]" in printed


def test_an_unknown_encoding_or_thousands_mark_is_refused(tmp_path):
    insurance().to_csv(path := tmp_path / "t.csv", index=False)
    code, printed = run(*FIT, "--data.path", path, "--data.encoding", "klingon", root=tmp_path / "runs")
    assert code == 2 and "data.encoding='klingon' is not an encoding" in error_line(printed)
    code, printed = run(*FIT, "--data.path", path, "--data.thousands", ".", root=tmp_path / "runs")
    assert code == 2 and "data.thousands='.' is invalid" in error_line(printed)


@pytest.mark.parametrize("column", ["bmi", "charges"])
def test_thousands_separators_are_named_with_the_flag_then_read(tmp_path, column):
    frame = insurance()
    frame["bmi"] = frame["bmi"] * 100  # thousands
    frame[column] = frame[column].map(lambda v: f"{v:,.2f}")
    frame.to_csv(path := tmp_path / "t.csv", index=False)
    code, printed = run(*FIT, "--data.path", path, root=tmp_path / "runs")
    line = error_line(printed)
    assert code == 2 and f"column {column!r} holds numbers with ',' between groups of thousands" in line
    assert "--data.thousands ','" in line
    code, printed = run(*FIT, "--data.path", path, "--data.thousands", ",", root=tmp_path / "runs")
    assert code == 0, printed
    report = json.loads(next((tmp_path / "runs").rglob("report.json")).read_text())
    assert {"column": "bmi", "role": "numeric feature"} in report["columns"]
    assert report["metrics"]["val_r2"] > 0.9


def test_streamed_files_with_int_and_double_columns_are_unified(tmp_path):
    frame = insurance()
    folder = tmp_path / "parts"
    folder.mkdir()
    first, second = frame.iloc[:60].copy(), frame.iloc[60:].copy()
    second["age"] = second["age"].astype(float)  # int64 in one file, double in the other
    first.to_parquet(folder / "part-0.parquet", index=False)
    second.to_parquet(folder / "part-1.parquet", index=False)
    (folder / "notes.txt").write_text("where the data came from\n")
    code, printed = run(*FIT, "--data.path", folder, "--data.streaming", "true", "--data.batch_size", "32",
                        root=tmp_path / "runs")
    assert code == 0, printed
    assert "reading its 2 Parquet files only; not read: 'notes.txt'" in printed
    parts = list((tmp_path / "runs").rglob("part-*.csv"))
    assert sum(len(pd.read_csv(p)) for p in parts) == len(frame)
    second["age"] = second["age"].astype(str)  # text against numbers: refused before training
    second.to_parquet(folder / "part-1.parquet", index=False)
    code, printed = run(*FIT, "--data.path", folder, "--data.streaming", "true", "--data.batch_size", "32",
                        root=tmp_path / "text")
    assert code == 2 and "the files' schemas disagree: column 'age'" in error_line(printed)
    assert not list((tmp_path / "text").rglob("*.ckpt"))


def test_a_folder_without_parquet_names_what_it_holds(tmp_path):
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "rows.csv").write_text("a,b\n1,2\n")
    code, printed = run(*FIT, "--data.path", tmp_path / "parts", "--data.streaming", "true", "--data.batch_size", "8",
                        root=tmp_path / "runs")
    assert code == 2 and "without Parquet files (*.parquet, *.pq); it holds 'rows.csv'" in error_line(printed)


def test_predicted_values_of_another_kind(checkpoint, tmp_path):
    """Numbers in a category column are unseen levels (warning); text in a numeric column is an error; the same
    from the CLI and from Python, also for a column that mixes numbers and text."""
    frame = insurance(10, seed=2).drop(columns="charges")
    frame["region"] = [1, 2] * 5
    frame.to_csv(tmp_path / "numbers.csv", index=False)
    code, printed = run("predict", "--ckpt_path", checkpoint, "--data.predict_path", tmp_path / "numbers.csv",
                        root=tmp_path / "runs")
    assert code == 0, printed
    assert "column 'region' has 10 rows with categories not seen in training ('1', '2')" in printed
    predictor = lit_regression.load(checkpoint)
    assert np.isfinite(predictor.predict(frame)["charges"]).all()
    frame["region"] = pd.Series(["north", 1, 2.5, "south", "west", "east", "north", 3, "south", "east"], dtype=object)
    assert np.isfinite(predictor.predict(frame)["charges"]).all()
    frame["bmi"] = pd.Series([31.2, "25.5", 30, "abc", 28, 27, 26, 25, 24, 23], dtype=object)
    with pytest.raises(InputError, match="feature column 'bmi' has a non-numeric value 'abc' at row 3;"):
        predictor.predict(frame)
    frame["bmi"] = pd.Series(["30"] * 2 + ["thirty"] + ["30"] * 7, dtype=object)
    frame["region"] = "north"
    frame.to_csv(tmp_path / "text.csv", index=False)
    code, printed = run("predict", "--ckpt_path", checkpoint, "--data.predict_path", tmp_path / "text.csv",
                        root=tmp_path / "runs")
    assert code == 2 and "'bmi' has a non-numeric value 'thirty' at data row 3" in error_line(printed)


# --- problems that cannot be learned as asked -------------------------------------------------------------------
def test_a_constant_target_and_a_single_training_row_are_errors(tmp_path):
    frame = insurance(30)
    frame.assign(charges=1000.0).to_csv(tmp_path / "constant.csv", index=False)
    code, printed = run(*FIT, "--data.path", tmp_path / "constant.csv", root=tmp_path / "runs")
    assert code == 2 and "target column 'charges' has the value 1000 in every training row" in error_line(printed)
    frame.head(3).to_csv(tmp_path / "three.csv", index=False)
    code, printed = run(*FIT, "--data.path", tmp_path / "three.csv", "--data.val_fraction", "0.5",
                        root=tmp_path / "runs")
    assert code == 2 and "leaves 1 training row" in error_line(printed)
    assert not list((tmp_path / "runs").rglob("*.ckpt"))


def test_few_rows_wide_tables_and_true_false_targets_are_warned(tmp_path):
    rng = np.random.default_rng(0)
    wide = pd.DataFrame(rng.normal(size=(10, 12)), columns=[f"x{i}" for i in range(12)])
    wide["charges"] = rng.normal(size=10)
    wide.to_csv(tmp_path / "wide.csv", index=False)
    code, printed = run(*FIT, "--data.path", tmp_path / "wide.csv", root=tmp_path / "runs")
    assert code == 0, printed
    assert "warning:" in printed and "8 training rows for 13 parameters" in printed
    insurance(3).to_csv(tmp_path / "three.csv", index=False)
    code, printed = run(*FIT, "--data.path", tmp_path / "three.csv", "--data.features", "[age]",
                        root=tmp_path / "few")
    assert code == 0, printed
    assert "only 2 training rows" in printed and "1 validation row: val_r2 is not defined" in printed
    report = json.loads(next((tmp_path / "few").rglob("report.json")).read_text())  # strict JSON: no NaN
    assert report["metrics"]["val_r2"] is None
    frame = insurance()
    frame["charges"] = frame["charges"] > frame["charges"].median()
    frame.to_csv(tmp_path / "bool.csv", index=False)
    code, printed = run(*FIT, "--data.path", tmp_path / "bool.csv", root=tmp_path / "bool")
    assert code == 0, printed
    assert "target column 'charges' holds true/false" in printed and "--model LogisticRegression" in printed


# --- the machine ----------------------------------------------------------------------------------------------------
def test_a_root_folder_that_cannot_be_made_is_one_line(tmp_path):
    insurance().to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "afile").write_text("")
    code, printed = run(*FIT, "--data.path", tmp_path / "t.csv", root=tmp_path / "afile" / "runs")
    line = error_line(printed)
    assert code == 2 and f"cannot make the folder '{tmp_path / 'afile' / 'runs'}" in line
    assert "nothing of this run was saved" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_root_folder_is_one_line(tmp_path):
    insurance().to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "locked").mkdir(mode=0o555)
    code, printed = run(*FIT, "--data.path", tmp_path / "t.csv", root=tmp_path / "locked")
    assert code == 2 and "Permission denied" in error_line(printed)


@pytest.mark.slow
def test_a_full_disk_is_one_line_that_says_what_was_saved(tmp_path):
    """A file-size limit makes every write past it fail as a full disk does (EFBIG instead of ENOSPC): the first
    checkpoints fit, the big one does not."""
    frame = insurance(2000)
    for i in range(40):  # about 40 KB of weights and optimizer state
        frame[f"x{i}"] = np.random.default_rng(i).normal(size=len(frame))
    frame.to_csv(tmp_path / "t.csv", index=False)

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))

    done = subprocess.run([sys.executable, "-m", "lit_regression", *FIT, "--data.path", str(tmp_path / "t.csv"),
                           "--trainer.default_root_dir", str(tmp_path / "runs"), *QUIET],
                          cwd=ROOT, capture_output=True, text=True, preexec_fn=limit, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    line = error_line(done.stderr)
    assert "cannot write '" in line and "(File too large): it was not saved" in line
    assert "saved in '" in line and "config.yaml" in line
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.name.endswith(".tmp")]


def test_a_failed_write_leaves_no_partial_predictions(tmp_path, monkeypatch):
    """Predictions go through a temporary file: a write that fails half way leaves neither a truncated
    predictions.csv nor the temporary file."""
    import pyarrow.csv as pcsv

    from lit_regression.callbacks import predictions

    monkeypatch.setattr(predictions, "CSV_CHUNK", 10)
    calls = {"n": 0}
    write_csv = pcsv.write_csv

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(28, "No space left on device")
        return write_csv(*args, **kwargs)

    monkeypatch.setattr(pcsv, "write_csv", failing)
    table = pa.table({"row": np.arange(100), "charges": np.ones(100)})
    with pytest.raises(InputError, match="no space left on the device"):
        predictions.write_table(table, str(tmp_path / "predictions.csv"))
    assert os.listdir(tmp_path) == []
