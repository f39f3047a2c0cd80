"""Predictions from Python: the model and its table's preprocessing, both from one checkpoint.

::

    import lit_regression
    predictor = lit_regression.load("last")       # the newest run's last.ckpt under runs/; or a checkpoint's path
    predictor.predict("new_rows.csv")            # or a pandas DataFrame, or a dict of columns
    predictor.predict({"age": [41], "city": ["Lyon"], "income": [52_000]})

The result is a pandas DataFrame with the columns of ``predictions.csv``: ``row``, the id column (or the feature
columns as given), then the prediction in the target's units (for classification, the predicted label and
``prob_<label>`` per class). The rows get the same column checks, imputation and category encoding as
``lit-regression predict --data.predict_path``; the checkpoint is read with ``weights_only=True``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from lit_regression.cells import missing
from lit_regression.checkpointing import find_checkpoint, read_checkpoint
from lit_regression.errors import InputError, count
from lit_regression.export import lit_class


def _column(values: Any) -> Any:
    """A dict's value as a column: a sequence or array as it is, a single value (one row) as a list of one."""
    if isinstance(values, (str, bytes)) or np.ndim(values) == 0:
        return [values]
    return values if hasattr(values, "__array__") else list(values)


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
        """The model inputs of ``rows``: a pandas DataFrame, a dict of columns, a pyarrow Table or the path of a
        table file (a table datamodule encodes them); a dict of single values is one row. Without a table
        datamodule: an array of the model's inputs."""
        import pyarrow as pa

        dm = self.datamodule
        if not hasattr(dm, "predict_rows"):  # no table: the rows are the model's inputs
            if hasattr(rows, "to_numpy"):
                rows = rows.to_numpy()
            x = torch.as_tensor(np.asarray(rows, dtype=np.float32))
            x = x.reshape(-1, 1) if x.ndim == 1 else x
            n = self.model.hparams.n_features
            if x.ndim != 2 or x.shape[1] != n:
                raise InputError(f"rows have shape {tuple(x.shape)}: the model takes {count(n, 'input column')}")
            return x
        from lit_regression.tables import dense, read_table

        if isinstance(rows, (str, os.PathLike)):
            path = os.fspath(rows)
            table = read_table(path, "path", dm.text_format)
            return dm.predict_rows(table, path, "path")
        if isinstance(rows, Mapping):
            import pandas as pd

            try:
                rows = pd.DataFrame({str(k): _column(v) for k, v in rows.items()})
            except (TypeError, ValueError) as err:
                raise InputError(f"rows: the columns do not make a table ({err})") from None
        if isinstance(rows, pa.Table):
            table = rows
        elif hasattr(rows, "columns") and hasattr(rows, "to_numpy"):  # a pandas DataFrame
            table = _arrow(rows)
        else:
            raise InputError(f"rows of type {type(rows).__name__}: expected a pandas DataFrame, a dict of columns, "
                             "a pyarrow Table or the path of a .csv/.tsv/.parquet file")
        if table.num_rows == 0:
            raise InputError("rows: no rows to predict")
        return dm.predict_rows(dense(table), "rows", "rows")

    def predict(self, rows: Any):
        """Predictions for ``rows`` (see :meth:`inputs`) as a pandas DataFrame, in the target's units, with class
        probabilities for a classifier."""
        from lit_regression.callbacks.predictions import table

        x = self.inputs(rows)
        with torch.no_grad():
            outputs = self.model.predict_outputs(self.model(x.to(self.model.dtype)))
        given = None
        if not hasattr(self.datamodule, "predict_rows"):  # no table: the inputs stand beside the predictions
            import pyarrow as pa

            names = list(getattr(self.datamodule, "feature_names", None) or [])
            if len(names) != x.shape[1]:
                names = [f"x_{i}" for i in range(x.shape[1])]
            given = pa.table({str(name): x[:, i].numpy() for i, name in enumerate(names)})
        return table(self.datamodule, torch.arange(len(x)), outputs.float(), given).to_pandas()


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
