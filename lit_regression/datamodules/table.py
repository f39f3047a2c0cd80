"""Bring your own table: CSV, TSV, any delimiter or Parquet, with numeric and categorical columns and gaps."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch

from lit_regression.batches import process_of
from lit_regression.datamodules.base import TensorDataModule
from lit_regression.datamodules.streamed import TableStream
from lit_regression.errors import InputError, say
from lit_regression.preprocessing import STRATEGIES, Preprocessing, encoded_names, fit_levels, missing, plain
from lit_regression.streaming import refuse_empty_shares, share_out
from lit_regression.tables import (absolute_path, decimal_commas, delimiter, is_number, is_text, listing,
                                   mostly_numeric, numbers, read_table, type_name, values, where_row)

TASKS = ("regression", "classification")
Strategy = str  # "none", "mean" or "median": checked in __init__, whose message names the choices


class TableDataModule(TensorDataModule):
    """Your own table: a ``.csv``, ``.tsv`` (or other delimited text) or ``.parquet`` file, one row per example.

    Every column gets a role, printed at the start of ``fit`` and kept in ``report.json``: numeric feature,
    categorical feature (text or true/false, one-hot encoded), target, id, or ignored with the reason. The rows
    are split at random (scikit-learn's ``train_test_split`` with ``seed``) into training, validation and
    (optionally) test rows; imputation, the categories and the standardisation are fitted on the training rows
    only. The columns are looked up when first needed (the CLI needs their number to build the model), not
    when the module is created. After a fit, the checkpoint carries all of it as plain values, so
    ``predict --ckpt_path CKPT --data.predict_path NEW`` needs nothing else.

    Args:
        path: the training table; ``.parquet`` (or ``.pq``) is read as Parquet, anything else as delimited text
            with a header line (tab for ``.tsv``, comma otherwise, or ``sep``). Every row is predicted when
            ``predict_path`` is not given.
        target: the column to predict, or a list of columns (several regression outputs).
        features: the input columns; default: every other column except ``id_column``, minus those ignored with
            a reason (text with more than ``max_categories`` values, a single level, no values, dates, bytes).
        task: ``regression`` (real-valued targets) or ``classification`` (one label column; labels may be
            text or numbers); default: the model's (classification for LogisticRegression).
        sep: the delimiter of a text table, e.g. ``';'`` for a CSV from a European spreadsheet; default: tab
            for ``.tsv``, comma otherwise.
        decimal: the decimal mark of numbers in a text table: ``','`` for ``29,37`` (with ``sep=';'``).
        categorical: columns to one-hot encode although they hold numbers (postcodes, product codes). Text and
            true/false columns are categorical anyway.
        max_categories: a text column with more distinct values than this in the training rows is not a
            feature (reported as ignored): one-hot columns for an identifier or free text would only add noise.
        impute: how to fill empty cells of the features: ``none`` (an empty cell is an error naming its column
            and row), ``mean`` or ``median`` of the training rows for numeric columns (categorical columns get
            their most frequent level either way); or a mapping ``{column: strategy}``. An empty target cell is
            always an error.
        categories: the levels of each categorical column, in the order of its one-hot columns; default: the
            sorted distinct values of the training rows (filled in, so that checkpoints carry them). A level
            not in this list is encoded as all zeros, with a warning.
        val_fraction: fraction of the rows held out for validation, in [0, 1).
        test_fraction: fraction of the rows held out for ``test``, in [0, 1); 0 makes ``test`` use the
            validation rows.
        stratify: for classification, keep the class proportions equal in every split.
        standardize: scale every numeric feature to mean 0 and standard deviation 1 with the training rows'
            statistics (one-hot columns stay 0/1). The statistics are part of the model (its ``input_mean`` and
            ``input_scale`` buffers, saved with the weights): the datamodule serves the numbers as they are, and
            the model, also when loaded on its own, takes them in their own units.
        standardize_target: regression only: fit the targets scaled the same way (the model's ``target_mean``
            and ``target_scale``); the model's outputs and predictions are in the targets' own units, as are the
            logged metrics (mae, rmse, r2); the logged losses are in the scaled units that training minimises.
        predict_path: a table to predict instead of ``path``, in any of the formats above: it needs the feature
            columns (and ``id_column``), in any order; other columns are ignored (named in one line).
        id_column: a column that identifies the rows; ``predictions.csv`` carries it instead of the features.
        classes: the class labels in the order of the model's outputs; default: the sorted distinct labels of
            the training file. Give them to fix the order or to allow labels that the file lacks.
        batch_size: rows per training step; ``None`` (the default) trains on the full batch.
        shuffle: reshuffle the training rows every epoch (from ``seed``).
        seed: seed of the split and the shuffling.
        on_device: keep all split tensors on the accelerator once (no copy per step).
        streaming: read the table from disk every epoch instead of into memory (README, "Big tables"): ``path``
            (and ``val_path``, ``test_path``, ``predict_path``) may then be a Parquet file, a folder of Parquet
            files or a glob; needs ``batch_size``. Rows are held out by a hash of their global row index.
        val_path: streaming: the validation rows' own files (no rows of ``path`` are then held out for them).
        test_path: streaming: the test rows' own files (likewise).
        shuffle_buffer: streaming with ``shuffle``: rows of consecutive row groups shuffled together.
        cache_dir: streaming: a folder on a local disk where each process keeps the training and validation rows
            it decoded in the first epoch, as the model's float32 inputs, in a scratch file that is deleted when
            the process ends; later epochs read them from there instead of decoding the Parquet files again
            (README, "Big tables"). ``None``: decode every epoch. Checked when a fit or validation first reads
            the rows (a checkpoint loads without the folder: predicting never uses it).
    """

    # known per instance (from the ``task`` argument); None keeps the CLI's class-level check out of the way
    task = None

    def __init__(
        self,
        path: str | None = None,
        target: str | list[str] = "y",
        features: list[str] | None = None,
        task: Literal["regression", "classification"] | None = None,
        sep: str | None = None,
        decimal: str = ".",
        categorical: list[str] | None = None,
        max_categories: int = 50,
        impute: Strategy | dict[str, Strategy] = "none",
        categories: dict[str, list] | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        stratify: bool = True,
        standardize: bool = True,
        standardize_target: bool = False,
        predict_path: str | None = None,
        id_column: str | None = None,
        classes: list | None = None,
        batch_size: int | None = None,
        shuffle: bool = False,
        seed: int = 42,
        on_device: bool = False,
        streaming: bool = False,
        val_path: str | None = None,
        test_path: str | None = None,
        shuffle_buffer: int = 131_072,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, shuffle=shuffle, seed=seed, on_device=on_device)
        self.save_hyperparameters()
        # absolute, so that a checkpoint (which keeps these arguments) finds its tables from any working folder
        # (written into hparams: LightningCLI hands save_hyperparameters the arguments as it was given them)
        for name, value in (("path", path), ("predict_path", predict_path), ("val_path", val_path),
                            ("test_path", test_path), ("cache_dir", cache_dir)):
            self.hparams[name] = absolute_path(value)
        self.streaming = bool(streaming)
        if streaming:
            _check_streaming(batch_size, impute, on_device, shuffle_buffer)
        for name, value in (("val_path", val_path), ("test_path", test_path)):
            if value is not None and not streaming:
                raise InputError(f"data.{name}={value!r} is read with --data.streaming true; without it, the held-out "
                                 "rows come from data.path (data.val_fraction, data.test_fraction)")
        if cache_dir is not None and not streaming:
            raise InputError(f"data.cache_dir={cache_dir!r} keeps streamed rows: it needs --data.streaming true "
                             "(without it the rows are held in memory)")
        task = task or "regression"
        if task not in TASKS:
            raise InputError(f"data.task={task!r} is invalid: expected 'regression' or 'classification'")
        self.task = task
        targets = [target] if isinstance(target, str) else list(target or [])
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise InputError(f"data.target={target!r} is invalid: expected a column name or a list of them")
        if len(set(targets)) != len(targets):
            raise InputError(f"data.target={target!r} names a column twice")
        if task == "classification" and len(targets) != 1:
            raise InputError(f"data.target={target!r} is invalid: classification predicts one label column")
        self._targets = targets
        for name, columns in (("features", features), ("categorical", categorical)):
            if columns is None:
                continue
            if name == "features" and len(columns) == 0:
                raise InputError("data.features=[] is invalid: give at least one column, or leave it out")
            if len(set(columns)) != len(columns):
                raise InputError(f"data.{name}={columns!r} names a column twice")
            overlap = [f for f in columns if f in targets or f == id_column]
            if overlap:
                what = "target" if overlap[0] in targets else "id"
                raise InputError(f"data.{name} names the {what} column {overlap[0]!r}: it cannot be a feature")
        if id_column is not None and id_column in targets:
            raise InputError(f"data.id_column={id_column!r} is the target column")
        if sep is not None and len(sep) != 1:
            raise InputError(f"data.sep={sep!r} is invalid: expected one character, such as ';' or '\\t'")
        if decimal not in (".", ","):
            raise InputError(f"data.decimal={decimal!r} is invalid: expected '.' or ','")
        if sep is not None and sep == decimal:
            raise InputError(f"data.sep and data.decimal are both {sep!r}: a number's decimal mark cannot also "
                             "separate the columns")
        if isinstance(max_categories, bool) or not isinstance(max_categories, int) or max_categories < 2:
            raise InputError(f"data.max_categories={max_categories!r} is invalid: expected a whole number >= 2")
        strategies = impute.values() if isinstance(impute, dict) else [impute]
        bad = [s for s in strategies if s not in STRATEGIES]
        if bad:
            raise InputError(f"data.impute={impute!r} is invalid: expected one of {list(STRATEGIES)} or a mapping "
                             "{column: strategy}")
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if isinstance(value, bool) or not 0 <= value < 1:
                raise InputError(f"data.{name}={value!r} is invalid: expected a fraction in [0, 1)")
        if val_fraction + test_fraction >= 1:
            raise InputError(
                f"data.val_fraction={val_fraction!r} and data.test_fraction={test_fraction!r} add up to "
                f"{val_fraction + test_fraction:g}: that leaves no training rows (they must add up to less than 1)"
            )
        if classes is not None:
            if task != "classification":
                raise InputError("data.classes is only for task=classification")
            if len(classes) < 2 or len({_key(c) for c in classes}) != len(classes):
                raise InputError(f"data.classes={classes!r} is invalid: expected at least 2 distinct labels")
        if standardize_target and task == "classification":
            raise InputError("data.standardize_target is only for task=regression: class labels are not scaled")
        self._table = None  # the training table, read once
        self._predict_table = None
        self._y: np.ndarray | None = None  # targets of every training-file row, float64 (class indices for labels)
        self._roles: list[dict[str, Any]] | None = None  # every column of the training file and its role
        self._preprocessing: Preprocessing | None = None  # fitted, or loaded from a checkpoint
        self.split_rows: dict[str, np.ndarray] = {}  # rows of the training file in each split, as split
        self._stream = TableStream(self) if streaming else None  # the sources and passes when streaming
        self._unseen_said: set[str] = set()  # streamed columns whose unseen categories were reported

    # --- columns: resolved from the training file on first use, then kept in hparams (and so in checkpoints) ---
    @property
    def target_names(self) -> tuple[str, ...]:
        return tuple(self._targets)

    @property
    def input_columns(self) -> tuple[str, ...]:
        """The table's feature columns, before encoding."""
        self._resolve_columns()
        return tuple(self.hparams.features)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The model's inputs: numeric columns by name, one ``column=level`` per level of a categorical one."""
        self._resolve_columns()
        return tuple(encoded_names(self.hparams.features, self.hparams.categories))

    @property
    def classes(self) -> list | None:
        if self.task != "classification":
            return None
        if self.hparams.classes is None:
            if self._stream is not None:
                self._resolve_columns()  # one pass reads the labels with the categorical columns
                if self._stream.labels is None:  # the columns were known: the labels alone
                    self._stream.scan([], self._targets[0], self.hparams.max_categories)
                found = self._stream.labels
            else:
                found = sorted(set(self._labels(self.training_table(), self.hparams.path, "data.path")))
            if len(found) < 2:
                raise InputError(
                    f"data.path={self.hparams.path!r}: target column {self._targets[0]!r} has a single class "
                    f"{found[0]!r}; classification needs at least 2"
                )
            self.hparams["classes"] = found
        return list(self.hparams.classes)

    def column_roles(self) -> list[dict[str, Any]]:
        """Each column of the training table with its role (from the checkpoint's arguments where the table
        was not read)."""
        if self._roles is not None:
            return self._roles
        roles = [{"column": t, "role": "target"} for t in self._targets]
        if self.hparams.id_column is not None:
            roles.append({"column": self.hparams.id_column, "role": "id"})
        for feature in self.input_columns:
            levels = self.hparams.categories.get(feature)
            roles.append({"column": feature, "role": "numeric feature"} if levels is None else
                         {"column": feature, "role": "categorical feature", "levels": len(levels)})
        return roles

    def _resolve_columns(self) -> None:
        """Decide each column's role from the training rows (once); write the features and their categories
        back into hparams."""
        h = self.hparams
        if h.features is not None and h.categories is not None:
            unknown = [c for c in h.categories if c not in h.features]
            if unknown:
                raise InputError(f"data.categories names {listing(unknown)}, which {'is' if len(unknown) == 1 else 'are'}"
                                 f" not among the features {listing(h.features)}")
            return
        # streaming: the first rows tell the columns' kinds (Parquet types hold for the whole column); the levels
        # of the categorical ones come from one pass over those columns alone
        table = self._stream.source("train").sample() if self._stream is not None else self.training_table()
        names = table.column_names
        path = h.path
        if self._stream is not None:
            self._require(table, self._targets, path, "data.path", "target")
            if h.id_column is not None:
                self._require(table, [h.id_column], path, "data.path", "id")
        if h.features is not None:
            self._require(table, list(h.features), path, "data.path", "feature")
        for arg, given in (("categorical", h.categorical), ("impute", h.impute if isinstance(h.impute, dict) else None),
                           ("categories", h.categories)):
            absent = [c for c in (given or []) if c not in names]
            if absent:
                raise InputError(f"data.{arg} names {listing(absent)}, which data.path={path!r} does not have; its "
                                 f"columns are: {listing(names)}")

        def train() -> np.ndarray:  # split only when a column needs the training rows
            self.load_training()
            return self.split_rows["train"]

        explicit = h.features is not None
        candidates = list(h.features) if explicit else [c for c in names if c not in self._targets and c != h.id_column]
        forced = set(h.categorical or [])
        given_levels = dict(h.categories or {})
        roles: dict[str, dict[str, Any]] = {}
        features, categories = [], {}
        kinds = {column: _kind(table[column], column in given_levels, column in forced) for column in candidates}
        if self._stream is not None:
            label = self._targets[0] if self.task == "classification" and h.classes is None else None
            self._stream.scan([c for c, k in kinds.items() if k == "categorical" and c not in given_levels], label,
                              h.max_categories)
        for column in candidates:
            data, kind = table[column], kinds[column]
            if kind == "categorical" and column not in forced and h.decimal == "." and decimal_commas(data):
                raise InputError(f"data.path={path!r}: column {column!r} holds numbers with a decimal comma "
                                 f"({data.drop_null()[0]}): add --data.decimal ','")
            reason = None
            if kind is None:
                reason = f"holds {type_name(data)}"
            elif kind == "numeric":  # streamed: the statistics' pass finds a column without values
                if self._stream is None and is_number(data) and (data.null_count == len(data) or
                                                                 np.isnan(values(data)).all()):
                    reason = "has no values"
            else:
                levels = given_levels.get(column) or (self._stream.categories(column) if self._stream is not None
                                                      else fit_levels(values(data)[train()]))
                if not levels:
                    reason = "has no values in the training rows"
                elif len(levels) == 1:
                    reason = f"has a single level {levels[0]!r} in the training rows: nothing to learn from it"
                elif len(levels) > h.max_categories:  # streamed: counted only until past the limit
                    counted = f"more than {h.max_categories}" if self._stream is not None else len(levels)
                    reason = (f"has {counted} distinct values in the training rows, more than "
                              f"data.max_categories={h.max_categories}")
                    if column in forced or explicit:
                        raise InputError(f"data.path={path!r}: categorical column {column!r} {reason}; raise "
                                         "data.max_categories or leave the column out")
                else:
                    categories[column] = levels
            if reason is not None:
                if explicit and kind is None:
                    raise InputError(f"data.path={path!r}: feature column {column!r} {reason}; it cannot be a feature")
                roles[column] = {"column": column, "role": "ignored", "reason": reason}
                continue
            features.append(column)
            roles[column] = ({"column": column, "role": "numeric feature"} if column not in categories else
                             {"column": column, "role": "categorical feature", "levels": len(categories[column])})
        for column in names:
            if column in self._targets:
                roles[column] = {"column": column, "role": "target"}
            elif column == h.id_column:
                roles[column] = {"column": column, "role": "id"}
            elif column not in roles:
                roles[column] = {"column": column, "role": "ignored", "reason": "not in data.features"}
        if not features:
            raise InputError(
                f"data.path={path!r} has no column to use as a feature besides the target {listing(self._targets)}; "
                f"its columns are: {listing(names)}"
            )
        self._roles = [roles[c] for c in names]
        h["features"], h["categories"] = features, categories

    def describe_columns(self) -> str:
        """The column roles as a few aligned lines."""
        roles = self.column_roles()
        width = max(len(r["column"]) for r in roles) + 2
        lines = [f"Columns of data.path={self.hparams.path!r}:"]
        for r in roles:
            role = r["role"]
            if "levels" in r:
                role += f" ({r['levels']} levels)"
            if "reason" in r:
                role += f": {r['reason']}"
            lines.append(f"  {r['column']:<{width}}{role}")
        return "\n".join(lines)

    # --- reading ----------------------------------------------------------------------------------------------
    def _sep(self, path: str) -> str:
        return delimiter(path, self.hparams.sep)

    def training_table(self):
        """The training table as a pyarrow Table (read once)."""
        if self._table is None:
            self._table = read_table(self.hparams.path, "data.path", self.hparams.sep, self.hparams.decimal)
            self._require(self._table, self._targets, self.hparams.path, "data.path", "target")
            if self.hparams.id_column is not None:
                self._require(self._table, [self.hparams.id_column], self.hparams.path, "data.path", "id")
        return self._table

    def predict_table(self):
        """The table to predict: ``predict_path``, or the training table."""
        if self._predict_table is None:
            h = self.hparams
            if h.predict_path is None:
                self._predict_table = self.training_table()
            else:
                table = read_table(h.predict_path, "data.predict_path", h.sep, h.decimal)
                self._predict_table = self.check_predict_table(table, h.predict_path, "data.predict_path")
        return self._predict_table

    def check_predict_table(self, table, path: str, name: str):
        """``table`` (pyarrow) if it has the feature columns (and the id column): other columns are named in one
        line and left out; ``path`` and ``name`` are what messages call it."""
        h = self.hparams
        needed = list(self.input_columns) + ([h.id_column] if h.id_column is not None else [])
        self._require(table, needed, path, name, "feature")
        extra = [c for c in table.column_names if c not in needed and c not in self._targets]
        if extra:
            say(f"{name}={path!r}: ignoring the columns {listing(extra)}, which the model does not use")
        return table

    def predict_rows(self, table, path: str = "rows", name: str = "rows") -> torch.Tensor:
        """Predict ``table`` (pyarrow) from now on, with the same column checks as ``predict_path``; return its
        rows as model inputs (imputed and one-hot encoded; numbers in their units, as the model takes them)."""
        self._predict_table = self.check_predict_table(table, path, name)
        self.splits.pop("predict", None)
        return self._encode(self._predict_table, {"predict": np.arange(table.num_rows)}, path, name)["predict"]

    @staticmethod
    def _require(table, columns: list[str], path: str, name: str, what: str) -> None:
        absent = [c for c in columns if c not in table.column_names]
        if absent:
            plural = "s" if len(absent) > 1 else ""
            raise InputError(f"{name}={path!r} has no {what} column{plural} {listing(absent)}; its columns are: "
                             f"{listing(table.column_names)}")

    def _where(self, path: str, i: int, where=None) -> str:
        """Row ``i`` of a table read from ``path``; ``where(i)`` names it instead where given (streamed blocks)."""
        return where(i) if where is not None else where_row(path, i, self._sep(path))

    def _labels(self, table, path: str, name: str, where=None) -> list:
        """The label column as plain Python values (ints stay ints)."""
        column = table[self._targets[0]]
        labels = column.to_pylist()
        if column.null_count:
            i = next(i for i, v in enumerate(labels) if v is None)
            raise InputError(f"{name}={path!r}: target column {self._targets[0]!r} has an empty (or NaN) label at "
                             f"{self._where(path, i, where)}")
        return labels

    def _numbers(self, table, column: str, path: str, name: str, what: str, where=None) -> np.ndarray:
        """A numeric column as float64 (NaN for empty cells); a text cell raises, naming the file, column, row."""
        def error_at(i: int, value) -> InputError:
            if value is None:
                return InputError(f"{name}={path!r}: {what} column {column!r} holds {type_name(table[column])}; "
                                  f"{what} columns must hold numbers")
            return InputError(f"{name}={path!r}: {what} column {column!r} has a non-numeric value {str(value)!r} at "
                              f"{self._where(path, i, where)}; {what} columns must hold numbers only")
        return numbers(table[column], error_at)

    def _check_cells(self, values: np.ndarray, column: str, path: str, name: str, what: str, hint: str,
                     where=None) -> None:
        gaps = missing(values)
        if gaps.any():
            i = int(np.flatnonzero(gaps)[0])
            raise InputError(f"{name}={path!r}: {what} column {column!r} has an empty (or NaN) cell at "
                             f"{self._where(path, i, where)}; {hint}")
        if values.dtype.kind == "f":
            bad = np.flatnonzero(~np.isfinite(values))
            if len(bad):
                i = int(bad[0])
                raise InputError(f"{name}={path!r}: {what} column {column!r} has the non-finite value {values[i]} at "
                                 f"{self._where(path, i, where)}; fill in or drop that row")

    def _targets_of(self, table, path: str | None = None, name: str = "data.path", where=None) -> np.ndarray:
        """Training targets: float64 ``(rows, targets)``, or class indices ``(rows, 1)`` for classification;
        ``path`` and ``name`` are what messages call the table (the training path), ``where`` as in
        :meth:`_where`."""
        path = path or self.hparams.path
        if self.task == "regression":
            out = np.empty((table.num_rows, len(self._targets)), dtype=np.float64)
            for j, column in enumerate(self._targets):
                data = table[column]
                if is_text(data) and not mostly_numeric(data):
                    sample = listing(data.drop_null().unique().to_pylist()[:3])
                    raise InputError(f"{name}={path!r}: target column {column!r} holds text ({sample}, ...), which a "
                                     "regression model cannot predict; for classes use --model LogisticRegression")
                out[:, j] = self._numbers(table, column, path, name, "target", where)
                self._check_cells(out[:, j], column, path, name, "target", "fill in or drop that row", where)
            return out
        classes = self.classes
        index = {_key(c): i for i, c in enumerate(classes)}
        labels = self._labels(table, path, name, where)
        out = np.empty((len(labels), 1), dtype=np.float64)
        for i, label in enumerate(labels):
            k = index.get(_key(label))
            if k is None:
                raise InputError(
                    f"{name}={path!r}: label {label!r} in column {self._targets[0]!r} at {self._where(path, i, where)} "
                    f"is not one of data.classes={classes!r}"
                )
            out[i, 0] = k
        return out

    def load_training(self) -> None:
        """Read the training table's targets and split its rows into ``train``, ``val`` and ``test``. Streaming:
        count the rows of each split (from the row index: nothing is read)."""
        if self._stream is not None:
            if not self._stream.n_rows("train"):
                h = self.hparams
                raise InputError(f"data.val_fraction={h.val_fraction!r} and data.test_fraction={h.test_fraction!r} "
                                 f"leave no training rows out of the {self._stream.source('train').num_rows} of "
                                 f"data.path={h.path!r}")
            return
        if self.split_rows:
            return
        from sklearn.model_selection import train_test_split

        h = self.hparams
        table = self.training_table()
        y = self._targets_of(table)
        n = table.num_rows
        n_test, n_val = _count(h.test_fraction, n), _count(h.val_fraction, n)
        if n - n_test - n_val < 1:
            raise InputError(
                f"data.val_fraction={h.val_fraction!r} and data.test_fraction={h.test_fraction!r} leave no training "
                f"rows out of the {n} of data.path={h.path!r}"
            )
        labels = y[:, 0].astype(np.int64) if self.task == "classification" and h.stratify else None
        rows = np.arange(n)
        try:
            rest, test = (rows, rows[:0]) if n_test == 0 else train_test_split(
                rows, test_size=n_test, random_state=self.seed, stratify=labels
            )
            train, val = (rest, rest[:0]) if n_val == 0 else train_test_split(
                rest, test_size=n_val, random_state=self.seed, stratify=None if labels is None else labels[rest]
            )
        except ValueError as err:
            raise InputError(
                f"data.path={h.path!r}: cannot split {n} rows stratified by class ({err}); "
                "use more rows, other fractions, or --data.stratify false"
            ) from None
        self._y = y
        self.split_rows = {"train": train, "val": val, "test": test if n_test else val}

    # --- preprocessing: fitted on the training rows, kept in the checkpoint as plain values -------------------
    def _strategies(self) -> dict[str, str]:
        impute = self.hparams.impute
        if isinstance(impute, dict):
            return dict(impute)
        return {feature: impute for feature in self.input_columns}

    def _cells(self, table, column: str, path: str, name: str, where=None) -> np.ndarray:
        """A feature column's cells: float64 for a numeric feature, values for a categorical one."""
        if column in self.hparams.categories:
            return values(table[column])
        return self._numbers(table, column, path, name, "feature", where)

    def fit_preprocessing(self) -> Preprocessing:
        """Imputation, categories and standardisation, fitted on the training rows unless already known."""
        if self._preprocessing is None and self._stream is not None:
            self._preprocessing = self._streamed_preprocessing()
        if self._preprocessing is None:
            self.load_training()
            table, train = self.training_table(), self.split_rows["train"]
            def cells(feature: str) -> np.ndarray:
                return self._cells(table, feature, self.hparams.path, "data.path")[train]

            targets = None
            if self.hparams.standardize_target and self.task == "regression":
                targets = self._y[train]
            self._preprocessing = Preprocessing.fit(
                list(self.input_columns), dict(self.hparams.categories), cells, self._strategies(),
                self.hparams.standardize, targets)
        return self._preprocessing

    def _streamed_preprocessing(self) -> Preprocessing:
        """The preprocessing from one pass over the training rows, shared out among the processes."""
        h, path = self.hparams, self.hparams.path
        strategies = self._strategies()
        hint = "fill it in, drop that row, or use --data.impute mean"

        def cells(table, column: str, where) -> np.ndarray:
            return self._numbers(table, column, path, "data.path", "feature", where)

        def check(cells: np.ndarray, column: str, where) -> None:
            self._check_cells(cells, column, path, "data.path", "feature", hint, where)

        def targets(table, where) -> np.ndarray:
            return self._targets_of(table, where=where)

        scaled = h.standardize_target and self.task == "regression"
        return self._stream.preprocessing(list(self.input_columns), dict(h.categories), strategies, h.standardize,
                                          cells, check, targets, scaled)

    def state_dict(self) -> dict[str, Any]:
        if self._stream is not None:  # streamed: fitted when fit starts (a pass over the data), never here
            return self._preprocessing.state() if self._preprocessing is not None else {}
        if self._preprocessing is None and self.split_rows:
            self.fit_preprocessing()
        return self._preprocessing.state() if self._preprocessing is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        loaded = Preprocessing.from_state(state_dict)
        if loaded.features != list(self.input_columns) or loaded.names != list(self.feature_names):
            raise InputError(
                f"the checkpoint's preprocessing is for the features {loaded.names!r}, but the data's are "
                f"{list(self.feature_names)!r}"
            )
        self._preprocessing = loaded
        self.splits = {}  # rebuilt with this preprocessing

    def scaling(self) -> dict[str, list[float]]:
        """The standardisation fitted on the training rows, which the model applies (so that it takes the
        columns in their own units): per encoded input (one-hot columns: mean 0, scale 1) and per target."""
        state = self.fit_preprocessing()
        scaling = {}
        if state.mean is not None:
            scaling.update(input_mean=state.mean, input_scale=state.scale)
        if state.target_mean is not None and self.task == "regression":
            scaling.update(target_mean=state.target_mean, target_scale=state.target_scale)
        return scaling

    def _encode(self, table, parts: dict[str, np.ndarray], path: str, name: str) -> dict[str, torch.Tensor]:
        """The model inputs of the rows ``parts[split]`` of ``table``: float32 ``(rows, inputs)`` per split, built
        one column at a time (the table is never copied whole). ``table`` in a list is consumed: the list's
        table is let go column by column as it is encoded. Levels not seen in training are encoded as all zeros
        and reported, one line per column."""
        consume = isinstance(table, list)
        if consume:
            table = table.pop()
        state = self.fit_preprocessing()
        hint = ("fill it in, drop that row, or use --data.impute mean|median" if not state.fill else
                "fill it in or drop that row (this column is not imputed)")
        aliases = {split: next(s for s, r in parts.items() if r is rows) for split, rows in parts.items()}
        parts = {split: rows for split, rows in parts.items() if aliases[split] == split}  # test = val: once
        out = {split: np.empty((len(rows), len(state.names)), dtype=np.float32) for split, rows in parts.items()}
        for feature, cols in state.columns.items():
            cells = state.filled(feature, self._cells(table, feature, path, name))
            if consume:  # hand the column's buffers back: pyarrow's allocator would keep them for itself
                table = table.drop_columns([feature])
                pa.default_memory_pool().release_unused()
            self._check_cells(cells, feature, path, name, "feature", hint)
            for split, rows in parts.items():
                block, unseen = state.encode(feature, cells[rows])
                out[split][:, cols] = block
                if unseen is not None and unseen.any() and split != "train":
                    shown = list(dict.fromkeys(plain(v) for v in cells[rows][unseen]))
                    say(f"{name}={path!r}, {split} rows: column {feature!r} has {int(unseen.sum())} rows with "
                        f"categories not seen in training ({listing(shown[:5])}"
                        f"{', ...' if len(shown) > 5 else ''}); encoded as all zeros", warning=True)
        return {split: torch.from_numpy(out[alias]) for split, alias in aliases.items()}

    # --- TensorDataModule: encoded per group when a dataloader first asks (setup and _batches, not make_splits) ---
    def _training_splits(self) -> dict[str, tuple[torch.Tensor, ...]]:
        """``train``, ``val`` and ``test``, encoded. The training table is let go column by column as it is
        encoded (read again only if rows of it are predicted), so its float64 cells and the float32 model inputs
        are not both held whole."""
        self.fit_preprocessing()
        # the features only, in the only reference left once self._table is dropped: _encode consumes it
        tables = [self.training_table().select(list(self.input_columns))]
        self._table = None
        xs = self._encode(tables, self.split_rows, self.hparams.path, "data.path")
        splits = {}
        for split, rows in self.split_rows.items():
            y = np.ascontiguousarray(self._y[rows], dtype=np.float32)
            splits[split] = (xs[split], torch.from_numpy(y))
        return splits

    def _predict_split(self) -> dict[str, tuple[torch.Tensor, ...]]:
        h, table = self.hparams, self.predict_table()
        path, name = (h.predict_path, "data.predict_path") if h.predict_path else (h.path, "data.path")
        rows = np.arange(table.num_rows)
        return {"predict": (self._encode(table, {"predict": rows}, path, name)["predict"], torch.from_numpy(rows))}

    @property
    def n_train(self) -> int:
        if self._stream is not None:
            return self._stream.n_rows("train")
        train = self.split_rows.get("train")
        return len(train) if train is not None else super().n_train

    def setup(self, stage: str) -> None:
        try:
            self._setup(stage)
        except InputError as err:  # every process checks the same files and arguments alike
            err.everywhere = True
            raise

    def _setup(self, stage: str) -> None:
        # read the data now; encode it when a dataloader is asked for, since Lightning loads the checkpoint's
        # preprocessing (load_state_dict) after setup
        self._check_task()
        h = self.hparams
        if stage == "predict":
            self._predict_source()
        else:
            self.load_training()
            if self._stream is not None:
                self._check_held_out_sources(stage)
                if stage in ("fit", "validate"):
                    self._stream.check_cache_dir()
            if stage == "fit":
                say(self.describe_columns())
                if self._stream is not None:
                    say(self._stream.describe())
                if h.predict_path is not None:
                    self._predict_source()  # a bad predict file fails before training rather than after
                if self._stream is not None:
                    self._check_processes()
            if stage == "test" and not h.test_fraction and h.test_path is None:
                rows = self._stream.n_rows("val") if self._stream is not None else len(self.split_rows["val"])
                say(f"test runs on the {rows} validation rows: data.test_fraction is 0 (give it a fraction to hold "
                    "out rows for test alone)")
        self.splits = {}

    def _check_held_out_sources(self, stage: str) -> None:
        """Streaming: the files of --data.val_path and --data.test_path have the features and the target; the
        split that ``stage`` runs on has rows."""
        h = self.hparams
        for split in ("val", "test"):
            arg = f"{split}_path"
            if h[arg] is not None:
                source = self._stream.source(split)
                self._require(source, list(self.input_columns), h[arg], f"data.{arg}", "feature")
                self._require(source, self._targets, h[arg], f"data.{arg}", "target")
        split = {"validate": "val", "test": "test"}.get(stage)
        if split is not None and not self._stream.n_rows(split):
            raise InputError(f"{getattr(stage, 'value', stage)} has no rows: data.val_fraction={h.val_fraction!r} and "
                             f"data.test_fraction={h.test_fraction!r} hold none out of data.path={h.path!r}; give a "
                             "fraction, or the rows' own files with --data.val_path / --data.test_path")

    def _check_processes(self) -> None:
        """Streaming: every split that fit reads, prediction included, has a row for each process (checked
        before training, so that a long fit is not lost to a prediction file too small for the processes)."""
        world = process_of(self.trainer)[1]
        h = self.hparams
        for split, arg in (("train", "path"), ("val", "val_path"), ("predict", "predict_path")):
            n = self._stream.n_rows(split)
            if n or split == "train":  # a split without rows is not read (validation), or refused elsewhere
                name = f"data.{arg if h.get(arg) is not None else 'path'}={h.get(arg) or h.path!r}"
                refuse_empty_shares([sum(part.rows for part in share) for share in share_out([n], world)], name)

    def _predict_source(self):
        """The table to predict, checked for the feature columns: read whole, or (streaming) its files' schema."""
        if self._stream is None:
            return self.predict_table()
        h = self.hparams
        if h.predict_path is not None:
            needed = list(self.input_columns) + ([h.id_column] if h.id_column is not None else [])
            self._require(self._stream.source("predict"), needed, h.predict_path, "data.predict_path", "feature")
        return self._stream.source("predict")

    # --- streaming: blocks of rows decoded as they are read -----------------------------------------------------
    def _streamed_batches(self, split: str, train: bool):
        """The loader of a streamed split: ``(x, y, global rows)`` batches, or ``(x, global rows, columns)`` to
        predict, where ``columns`` (pyarrow) are the id column or the features as given, for the predictions."""
        h = self.hparams
        features = list(self.input_columns)
        self.fit_preprocessing()
        if split == "predict":
            path, name = (h.predict_path, "data.predict_path") if h.predict_path else (h.path, "data.path")
            kept = [h.id_column] if h.id_column is not None else features

            def decode(block):
                given = block.table.select(kept)
                return (torch.from_numpy(self._encoded_block(block, path, name)), torch.from_numpy(block.rows),
                        given if block.keep is None else given.take(pa.array(block.keep)))
            return self._stream.batches(split, decode, list(dict.fromkeys(features + kept)))
        arg = {"val": "val_path", "test": "test_path"}.get(split)
        path, name = (h[arg], f"data.{arg}") if arg and h[arg] is not None else (h.path, "data.path")
        return self._stream.batches(split, self._training_decoder(path, name), features + self._targets, train=train)

    def _training_decoder(self, path: str, name: str):
        """``decode(block)``: the kept rows of a streamed block as ``(x, y, global rows)`` tensors."""
        def decode(block):
            x = self._encoded_block(block, path, name)
            y = self._targets_of(block.table, path, name, TableStream.where(block.piece, block.offset))
            y = np.ascontiguousarray(y if block.keep is None else y[block.keep], dtype=np.float32)
            return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(block.rows)
        return decode

    def _encoded_block(self, block, path: str, name: str) -> np.ndarray:
        """The model inputs of the kept rows of a streamed block: float32 ``(rows, inputs)``. Every row of the
        block is checked; a column's levels not seen in training are encoded as all zeros and reported once."""
        state, table, keep = self._preprocessing, block.table, block.keep
        where = TableStream.where(block.piece, block.offset)
        hint = ("fill it in, drop that row, or use --data.impute mean" if not state.fill else
                "fill it in or drop that row (this column is not imputed)")
        # column by column into a (inputs, rows) array, so that each column is one contiguous write; the transposed
        # view is what the batches are cut from (the shuffle and the batches copy rows out of it anyway)
        out = np.empty((len(state.names), len(block.rows)), dtype=np.float32)
        for feature, cols in state.columns.items():
            cells = self._cells(table, feature, path, name, where)
            if feature not in state.categories and np.isfinite(cells).all():  # the common case: one pass
                out[cols.start] = cells if keep is None else cells[keep]
                continue
            cells = state.filled(feature, cells)
            self._check_cells(cells, feature, path, name, "feature", hint, where)
            if keep is not None:
                cells = cells[keep]
            if feature not in state.categories:
                out[cols.start] = cells  # cast to float32 as it is copied
                continue
            encoded, unseen = state.encode(feature, cells)
            out[cols] = encoded.T
            if unseen.any() and feature not in self._unseen_said:
                self._unseen_said.add(feature)
                i = int(np.flatnonzero(unseen)[0])
                say(f"{name}={path!r}: column {feature!r} has categories not seen in training (first "
                    f"{plain(cells[i])!r} at {where(i if keep is None else int(keep[i]))}); encoded as all zeros",
                    warning=True)
        return out.T

    def training_chunks(self):
        """One pass over the training rows (streaming: read from disk) as ``(x, y)`` chunks, for the report."""
        if self._stream is None:
            return None
        self.fit_preprocessing()
        return self._stream.chunks(self._training_decoder(self.hparams.path, "data.path"),
                                   list(self.input_columns) + self._targets)

    def _batches(self, split: str, train: bool = False):
        if self._stream is not None:
            return self._streamed_batches(split, train)
        if split not in self.splits:  # encoded when first asked for: predict rows only by predict
            self.splits.update(self._predict_split() if split == "predict" else self._training_splits())
        return super()._batches(split, train)

    def feature_columns(self) -> dict[str, Any] | None:
        """The predicted rows' columns as given (pyarrow columns): the id column, or the feature columns (streaming:
        ``None``, the predict batches carry them)."""
        if self._stream is not None:
            return None
        table = self.predict_table()
        names = [self.hparams.id_column] if self.hparams.id_column is not None else list(self.input_columns)
        return {name: table[name] for name in names}

    def _check_task(self) -> None:
        trainer = self.trainer
        model = trainer.lightning_module if trainer is not None else None
        model_task = getattr(model, "task", None)
        if model_task is not None and model_task != self.task:
            raise InputError(
                f"model {type(model).__name__} does {model_task} but data.task={self.task!r}: choose a matching "
                "pair (LogisticRegression for classification, a regression model otherwise)"
            )


def _kind(data, given_levels: bool, forced: bool) -> str | None:
    """A column's kind from its cells: ``numeric``, ``categorical`` or ``None`` (no feature)."""
    if given_levels:
        return "categorical"
    if not forced and (is_number(data) or (is_text(data) and mostly_numeric(data))):
        return "numeric"
    if forced or is_text(data) or pa.types.is_boolean(data.type):
        return "categorical"
    return None


def _check_streaming(batch_size: int | None, impute, on_device: bool, shuffle_buffer: int) -> None:
    """Arguments that streaming cannot take, each refused in one line."""
    if batch_size is None:
        raise InputError("data.streaming needs data.batch_size: the rows are read from disk a batch at a time "
                         "(e.g. --data.batch_size 65536)")
    if "median" in (impute.values() if isinstance(impute, dict) else [impute]):
        raise InputError(f"data.impute={impute!r}: the median is not available with data.streaming (an exact median "
                         "needs every value in memory); use mean")
    if on_device:
        raise InputError("data.on_device keeps tables in device memory; with data.streaming they are read from disk "
                         "every epoch: leave one of them off")
    if isinstance(shuffle_buffer, bool) or not isinstance(shuffle_buffer, int) or shuffle_buffer < 1:
        raise InputError(f"data.shuffle_buffer={shuffle_buffer!r} is invalid: expected a whole number of rows >= 1")


def _key(label: Any) -> Any:
    """Labels compare as values: 1, 1.0 and numpy's 1 are one label; text stays text."""
    if isinstance(label, (bool, np.bool_)):
        return bool(label)
    if isinstance(label, (int, float, np.integer, np.floating)):
        return float(label)
    return label


def _count(fraction: float, n: int) -> int:
    """Rows that a fraction of ``n`` takes, rounded up as scikit-learn's ``test_size`` is."""
    return math.ceil(round(fraction * n, 9)) if fraction > 0 else 0
