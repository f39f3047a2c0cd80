"""Predictions from Python: the model and its table's preprocessing, both from one checkpoint.

::

    import lit_regression
    predictor = lit_regression.load("last")       # the newest run's last.ckpt under runs/; or a checkpoint's path
    predictor.predict("new_rows.csv")            # or a pandas DataFrame, or a dict of columns
    predictor.predict({"age": [41], "city": ["Lyon"], "income": [52_000]})
    predictor.predict([{"age": 41, "city": "Lyon", "income": 52_000}, {"age": 30, "city": "Nice"}])  # records

The result is a pandas DataFrame with the columns of ``predictions.csv``: ``row``, the id column (or the feature
columns as given), then the prediction in the target's units (for classification, the predicted label and
``prob_<label>`` per class). The rows get the same column checks, imputation and category encoding as
``lit-regression predict --data.predict_path``; the checkpoint is read with ``weights_only=True``.

``predict`` is three steps that a server takes apart (``lit-regression serve`` encodes a batch of requests as one
table where it can, runs the model once on them, and answers each with its own rows): ``encode(rows)`` (the
checks, imputation and encoding), ``outputs(x)`` (the model) and ``table(encoded, outputs)`` (the columns of
``predictions.csv``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch

from lit_regression.cells import missing
from lit_regression.checkpointing import find_checkpoint, read_checkpoint
from lit_regression.errors import InputError, count
from lit_regression.export import lit_class


def _column(values: Any) -> Any:
    """A dict's value as a column: a sequence or array as it is, a single value (one row) as a list of one."""
    if isinstance(values, Iterator):  # a generator: np.ndim would take it for a single value
        return list(values)
    if isinstance(values, (str, bytes)) or np.ndim(values) == 0:
        return [values]
    return values if hasattr(values, "__array__") else list(values)


def outputs_of(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What ``predict`` returns for encoded inputs ``x`` (float32, the columns in their own units): the targets in
    their units, or class probabilities; float32 in and out whatever the model's precision. The exported ONNX and
    torch.export programs are this function."""
    return model.predict_outputs(model(x.to(model.dtype))).float()


def _frame(columns: Mapping):
    """A dict of columns as a DataFrame, or one line naming the column that does not fit."""
    import pandas as pd

    cells = {}
    for name, values in columns.items():
        try:
            cells[str(name)] = _column(values)
        except (TypeError, ValueError):  # np.ndim of lists of uneven lengths, len() of an iterator
            raise InputError(f"rows: column {str(name)!r} is not a list of cells") from None
    first = {}  # a column of each length
    for name, values in cells.items():
        first.setdefault(len(values), name)
    if len(first) > 1:
        raise InputError("rows: the columns differ in length (" + ", ".join(
            f"{name!r} has {count(n, 'value')}" for n, name in first.items()) + "); give each column one value per row")
    try:
        return pd.DataFrame(cells)
    except (TypeError, ValueError) as err:
        raise InputError(f"rows: the columns do not make a table ({err})") from None


def columns_of(records: list[Mapping]) -> dict[str, list]:
    """A list of records as a dict of columns, in the order their names first appear; a name a record lacks is an
    empty cell of that row."""
    columns: dict[str, list] = {}
    for i, record in enumerate(records):
        for name in record:
            if name not in columns:
                columns[name] = [None] * i
        for name, values in columns.items():
            values.append(record.get(name))
    return columns


def _class(hparams: dict | None, what: str, path: str) -> type:
    class_path = (hparams or {}).get("_class_path")
    if not class_path:
        raise InputError(f"{path!r}: the checkpoint names no {what} class (it was not written by lit-regression fit)")
    return lit_class(class_path, what)


def _arrow(frame: Any):
    """A pandas DataFrame as a pyarrow Table, column by column: a column that mixes numbers and text (an object
    column) becomes text, each value as it is written, so that the cell check names a value that is not a
    number, and a category column treats it as a level."""
    import pyarrow as pa

    columns = {}
    for name in frame.columns:
        data = frame[name]
        try:
            columns[str(name)] = pa.array(data, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            gaps = missing(data.to_numpy(dtype=object))
            columns[str(name)] = pa.array([None if gap else str(v) for v, gap in zip(data, gaps)], pa.string())
    return pa.table(columns)


def _blank_is_empty(table):
    """``table`` with its empty text cells (``""``) as empty cells, as the CSV reader reads an empty field: a
    blank is no level of a category, and no number."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for i, name in enumerate(table.column_names):
        column = table.column(i)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            blank = pc.equal(column, "")
            if pc.any(blank).as_py():
                table = table.set_column(i, name, pc.if_else(blank, pa.scalar(None, column.type), column))
    return table


class Encoded(NamedTuple):
    """Rows as :meth:`Predictor.encode` gives them."""

    x: torch.Tensor  # the model's inputs, [rows, n_features]
    given: Any  # a pyarrow Table of the columns kept beside the predictions (the id column, or the features)


class Predictor:
    """A trained model (in eval mode, on the CPU) and the datamodule that encodes its rows.

    Args:
        model: a lit_regression model whose ``forward`` takes the inputs in their own units.
        datamodule: the datamodule it was trained with, with its fitted state (``None``: rows are given as the
            model's inputs, one column per ``n_features``).
        checkpoint: the file both came from, shown in the ``repr``.

    ``repr`` says what it predicts from what: ``Predictor(LinearRegression -> charges, 7 columns: age, sex, bmi,
    ..., checkpoint='runs/.../last.ckpt')``.
    """

    SHOWN_COLUMNS = 4  # input columns named in the repr; more are abbreviated to the first three and "..."

    def __init__(self, model: torch.nn.Module, datamodule: Any | None = None, checkpoint: str | None = None) -> None:
        self.model = model.eval().cpu()
        self.datamodule = datamodule
        self.checkpoint = checkpoint

    def __repr__(self) -> str:
        dm = self.datamodule
        targets = [str(t) for t in getattr(dm, "target_names", None) or []]
        what = type(self.model).__name__ + (f" -> {', '.join(targets)}" if targets else "")
        try:  # a checkpoint's datamodule knows them; a new one reads its table's header (which may be gone)
            columns = [str(c) for c in (getattr(dm, "input_columns", None) or getattr(dm, "feature_names", None)
                                        or [])]
        except InputError:
            columns = []
        if columns:
            shown = columns if len(columns) <= self.SHOWN_COLUMNS else [*columns[:self.SHOWN_COLUMNS - 1], "..."]
            inputs = f"{count(len(columns), 'column')}: {', '.join(shown)}"
        else:
            inputs = count(int(self.model.hparams.get("n_features", 0)), "input")
        where = f", checkpoint={self.checkpoint!r}" if self.checkpoint is not None else ""
        return f"Predictor({what}, {inputs}{where})"

    def inputs(self, rows: Any) -> torch.Tensor:
        """The model inputs of ``rows``: a pandas DataFrame, a dict of columns, a list of records (dicts), a pyarrow
        Table or the path of a table file (a table datamodule encodes them); a dict of single values is one row.
        Without a table datamodule: an array of the model's inputs."""
        return self.encode(rows).x

    def encode(self, rows: Any) -> Encoded:
        """The first step of :meth:`predict`: ``rows`` (as :meth:`inputs` takes them) checked, imputed and encoded,
        with the columns that stand beside their predictions."""
        import pyarrow as pa

        dm = self.datamodule
        if not hasattr(dm, "predict_rows"):  # no table: the rows are the model's inputs
            if hasattr(rows, "to_numpy"):
                rows = rows.to_numpy()
            try:
                x = torch.as_tensor(np.asarray(rows, dtype=np.float32))
            except (TypeError, ValueError) as err:  # text, or rows of different lengths
                raise InputError(f"rows: expected numbers in rows of equal length ({err})") from None
            x = x.reshape(-1, 1) if x.ndim == 1 else x
            n = self.model.hparams.n_features
            if x.ndim != 2 or x.shape[1] != n:
                raise InputError(f"rows have shape {tuple(x.shape)}: the model takes {count(n, 'input column')}")
            names = list(getattr(dm, "feature_names", None) or [])
            if len(names) != x.shape[1]:
                names = [f"x_{i}" for i in range(x.shape[1])]
            return Encoded(x, pa.table({str(name): x[:, i].numpy() for i, name in enumerate(names)}))
        from lit_regression.tables import dense, read_table

        if isinstance(rows, (str, os.PathLike)):
            path = os.fspath(rows)
            return self._encoded(dm.predict_rows(read_table(path, "path", dm.text_format), path, "path"))
        if isinstance(rows, list) and rows and all(isinstance(r, Mapping) for r in rows):
            rows = columns_of(rows)
        if isinstance(rows, Mapping):
            rows = _frame(rows)
        if isinstance(rows, pa.Table):
            table = rows
        elif hasattr(rows, "columns") and hasattr(rows, "to_numpy"):  # a pandas DataFrame
            table = _arrow(rows)
        else:
            raise InputError(f"rows of type {type(rows).__name__}: expected a pandas DataFrame, a dict of columns, "
                             "a pyarrow Table or the path of a .csv/.tsv/.parquet file")
        if table.num_rows == 0:
            raise InputError("rows: no rows to predict")
        return self._encoded(dm.predict_rows(dense(_blank_is_empty(table)), "rows", "rows"))

    def _encoded(self, x: torch.Tensor) -> Encoded:
        """``x`` with the columns that the datamodule keeps of the rows it just encoded, taken now: the next rows
        it encodes replace them."""
        import pyarrow as pa

        given = self.datamodule.feature_columns()
        if given is None:
            return Encoded(x, None)
        return Encoded(x, pa.table({name: values.cpu().numpy() if torch.is_tensor(values) else values
                                    for name, values in given.items()}))

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The second step of :meth:`predict`: the model's outputs (float32) for encoded inputs ``x``, in the
        target's units or as class probabilities."""
        with torch.no_grad():
            return outputs_of(self.model, x)

    def table(self, encoded: Encoded, outputs: torch.Tensor):
        """The last step of :meth:`predict`: the predictions of ``encoded``'s rows as a pyarrow Table with the
        columns of ``predictions.csv`` (rows numbered from 0)."""
        from lit_regression.callbacks.predictions import table

        return table(self.datamodule, torch.arange(len(outputs)), outputs, encoded.given)

    def predict(self, rows: Any):
        """Predictions for ``rows`` (see :meth:`inputs`) as a pandas DataFrame, in the target's units, with class
        probabilities for a classifier."""
        encoded = self.encode(rows)
        return self.table(encoded, self.outputs(encoded.x)).to_pandas()


def load(path: str | os.PathLike = "last", root: str | os.PathLike = "runs") -> Predictor:
    """The :class:`Predictor` of a checkpoint written by ``lit-regression fit`` (or by a ``Trainer`` with the
    package's model and datamodule). ``path`` is the checkpoint's file, or as ``--ckpt_path`` takes them ``last``
    (the newest ``last.ckpt`` under ``root``) or ``best`` (the best checkpoint of that run)."""
    path = os.fspath(path)
    if path in ("last", "best") and not os.path.isfile(path):
        path = find_checkpoint(path, os.fspath(root))
    checkpoint = read_checkpoint(path)  # one message for a missing, unsafe or foreign file
    model = _class(checkpoint.get("hyper_parameters"), "model", path).load_from_checkpoint(
        path, map_location="cpu", weights_only=True)
    datamodule = None
    if checkpoint.get("datamodule_hyper_parameters"):
        cls = _class(checkpoint["datamodule_hyper_parameters"], "datamodule", path)
        datamodule = cls.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    return Predictor(model, datamodule, path)
