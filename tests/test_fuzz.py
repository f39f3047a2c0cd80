"""Random small tables through the real command line and the Python API: every one ends in exit 0 with finite
predictions, or in exit 2 with one line; never a traceback, never a non-finite number.

The tables mix column kinds (numbers, whole numbers beyond 2^53, text, true/false, text in a numeric column),
empty cells, inf, huge and tiny values, unicode and empty column names, duplicate rows and constant columns.
``make test`` runs a bounded number of examples from a fixed seed (the ``ci`` profile); ``make fuzz`` runs the
``fuzz`` profile (``HYPOTHESIS_PROFILE=fuzz``), 2,000 examples and more.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from hypothesis import HealthCheck, event, given, settings, strategies as st

import lit_regression
from lit_regression.cli import main
from lit_regression.errors import InputError

settings.register_profile("ci", max_examples=12, derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "1000")), deadline=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--trainer.accelerator", "cpu", "--trainer.max_epochs", "2", "--plots.enabled", "false"]
ODD = [math.inf, -math.inf, math.nan, 1e39, -1e300, 5e-324, 1e-310, 0.0, -0.0]
NAMES = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=6)


@st.composite
def cells(draw, kind: str, rows: int, odd: bool = True) -> list:
    """One column of ``rows`` cells of a kind; where ``odd``, often with a few of the odd values that kind can
    hold (empty cells, inf, huge and tiny numbers, typos) put in at random rows."""
    if kind == "float":  # distinct values: hypothesis likes zeros, which would make most targets constant
        column = draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=rows, max_size=rows, unique=True))
        clean, odds = st.sampled_from(column), st.sampled_from([*ODD, None])
    elif kind == "int":
        clean, odds = st.integers(-1000, 1000), st.one_of(st.integers(2**53, 2**63 - 1), st.none())
    elif kind == "text":
        clean = st.sampled_from(["north", "south", "Zürich", "東京", "a,b", 'say "hi"'])
        odds = st.one_of(st.sampled_from(["", " "]), st.text(max_size=4), st.none())
    elif kind == "bool":
        clean, odds = st.booleans(), st.none()
    else:  # numbers written as text, a typo among them
        clean = st.floats(-1e4, 1e4, allow_nan=False).map(lambda v: f"{v:.3f}")
        odds = st.one_of(st.sampled_from(["n/a", "1,5", "1e400", "-", "12abc", "1,234.5"]), st.none())
    if draw(st.integers(0, 7)) == 0:  # a constant column
        return [draw(clean)] * rows
    column = column if kind == "float" else draw(st.lists(clean, min_size=rows, max_size=rows))
    if odd and draw(st.booleans()):
        for row in draw(st.lists(st.integers(0, rows - 1), max_size=2)):
            column[row] = draw(odds)
    return column


@st.composite
def tables(draw) -> tuple[pa.Table, str, str]:
    """A table, its target column and the model: a small table of 1 to 4 features of random kinds."""
    rows = draw(st.integers(1, 40))
    kinds = draw(st.lists(st.sampled_from(["float", "int", "text", "bool", "numeric text"]), min_size=1,
                          max_size=4))
    names = draw(st.lists(NAMES, min_size=len(kinds), max_size=len(kinds)))
    columns: dict[str, list] = {}
    for name, kind in zip(names, kinds):
        name = name if name not in columns else f"{name}_{len(columns)}"  # duplicates tested apart
        columns[name] = draw(cells(kind, rows))
    model = draw(st.sampled_from(["LinearRegression", "TwoLayerRegression", "LogisticRegression"]))
    if model == "LogisticRegression":
        target = draw(st.lists(st.sampled_from(["yes", "no", "maybe"]), min_size=rows, max_size=rows))
    else:
        target = draw(cells("float", rows, odd=draw(st.integers(0, 3)) == 0))
    columns["target"] = target
    table = pa.table({name: pa.array(values, from_pandas=True) for name, values in columns.items()})
    if draw(st.booleans()):  # duplicate rows
        table = pa.concat_tables([table, table])
    return table, "target", model, draw(st.sampled_from(["none", "mean", "median"]))


def _write(table: pa.Table, folder: Path, parquet: bool) -> Path:
    if parquet:
        path = folder / "table.parquet"
        pq.write_table(table, path)
    else:
        path = folder / "table.csv"
        pcsv.write_csv(table, path, pcsv.WriteOptions(quoting_style="needed"))
    return path


def _run(*args: str) -> tuple[int, str]:
    """``lit-regression ARGS`` in this process: its exit status and everything it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main([*args, *QUIET])
            code = 0
        except SystemExit as stop:
            code = stop.code or 0
    return code, out.getvalue()


def _kind_of(line: str) -> str:
    """What an error line is about, for the statistics (``--hypothesis-show-statistics``)."""
    for words in ("empty (or NaN)", "non-finite", "beyond what a float32", "non-numeric", "twice", "no column to use",
                  "nothing to learn", "training row", "holds text", "no values", "label", "classes", "decimal comma",
                  "thousands", "process"):
        if words in line:
            return f"error: {words}"
    return "error: " + line[len("lit-regression: error: "):][:60]


def _assert_finite(frame, what: str) -> None:
    """The predictions (not the columns given beside them) are finite numbers."""
    numbers = frame[[c for c in frame.columns if c == "target" or c.startswith("prob_")]].select_dtypes("number")
    assert np.isfinite(numbers.to_numpy(dtype=float)).all(), f"{what}: non-finite predictions\n{frame}"


@given(case=tables(), how=st.sampled_from(["csv", "parquet", "streamed"]))
def test_random_tables_end_in_exit_0_or_one_line(case, how):
    table, target, model, impute = case
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        path = _write(table, folder, how != "csv")
        streamed = ["--data.streaming", "true", "--data.batch_size", "8"] if how == "streamed" else []
        code, printed = _run("fit", "--model", model, "--data", "TableDataModule", "--data.path", str(path),
                             "--data.target", target, "--data.impute", impute, *streamed,
                             "--trainer.default_root_dir", str(folder / "runs"))
        assert "Traceback" not in printed, printed
        assert code in (0, 2), printed
        event(f"exit {code}")
        if code == 2:
            errors = [line for line in printed.splitlines() if line.startswith("lit-regression: error:")]
            assert len(errors) == 1, printed
            event(_kind_of(errors[0]))
            kept = list((folder / "runs").rglob("last.ckpt")) if (folder / "runs").exists() else []
            if kept:  # only a fit stopped by a non-finite loss keeps its last good checkpoint, and names it
                assert "training diverged at epoch" in errors[0] and str(kept[0]) in errors[0], printed
            else:  # a fit refused for its input leaves no checkpoint
                assert not list((folder / "runs").rglob("*.ckpt")) if (folder / "runs").exists() else True, printed
            return
        import pandas as pd

        runs = folder / "runs"  # predictions.csv, or a folder of parts when streamed
        predictions = [p for p in runs.rglob("*.csv") if "predictions" in str(p.relative_to(runs))]
        assert predictions, printed
        for part in predictions:
            _assert_finite(pd.read_csv(part), str(part.relative_to(runs)))
        checkpoint = next((folder / "runs").rglob("last.ckpt"))
        try:  # the same rows through the Python API: finite predictions or the library's own one-line error
            frame = lit_regression.load(checkpoint).predict(table.to_pandas())
        except InputError as err:
            assert "\n" not in str(err)
        else:
            _assert_finite(frame, "Predictor.predict")
