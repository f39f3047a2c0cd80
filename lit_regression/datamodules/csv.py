"""Bring your own data: a CSV file with a header line, for regression or classification."""

from __future__ import annotations

import csv
import math
import os
from typing import Any, Literal

import numpy as np
import torch

from lit_regression.datamodules.base import TensorDataModule
from lit_regression.errors import InputError

TASKS = ("regression", "classification")


def _listing(names) -> str:
    return ", ".join(repr(str(n)) for n in names)


def _line_number(path: str, index: int) -> int | None:
    """Line of the file (1-based, header included) on which data row ``index`` (0-based, as pandas counts rows:
    blank lines skipped) starts; ``None`` if the file cannot be scanned."""
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            reader = csv.reader(f)
            count, consumed, header = -1, 0, False
            for record in reader:
                start, consumed = consumed + 1, reader.line_num
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue
                if not header:
                    header = True
                    continue
                count += 1
                if count == index:
                    return start
    except (OSError, csv.Error):
        return None
    return None


def _where_row(path: str, index: int) -> str:
    """``data row N (line L)`` for a 0-based row position of a table read from ``path``."""
    line = _line_number(path, index)
    where = f"data row {index + 1}"
    return f"{where} (line {line} of the file)" if line is not None else where


def read_table(path: str | None, name: str):
    """Read the CSV at ``path`` (the value of the argument ``name``) with pandas, or raise :class:`InputError`."""
    import pandas as pd

    if path is None:
        raise InputError(f"{name} is not set: give the CSV file with --{name} FILE")
    if not os.path.isfile(path):
        raise InputError(f"{name}={path!r}: no such file")
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise InputError(f"{name}={path!r} is empty: expected a header line of column names, then rows of data") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as err:
        raise InputError(f"{name}={path!r} cannot be read as CSV: {err}") from None
    if len(frame) == 0:
        raise InputError(f"{name}={path!r} has a header line but no data rows")
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _mostly_numeric(column) -> bool:
    """A numeric column, or a text column whose non-empty cells are mostly numbers (a few typos in a numeric
    column must be reported, not make the column silently disappear from the features)."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(column):
        return True
    present = column.dropna()
    if len(present) == 0:
        return False
    return pd.to_numeric(present, errors="coerce").notna().mean() > 0.5


def numeric_values(frame, columns: list[str], path: str, name: str, what: str) -> np.ndarray:
    """The given columns as float64 ``(rows, columns)``; :class:`InputError` names the first bad cell."""
    import pandas as pd

    out = np.empty((len(frame), len(columns)), dtype=np.float64)
    for j, column in enumerate(columns):
        raw = frame[column]
        if pd.api.types.is_bool_dtype(raw) or pd.api.types.is_numeric_dtype(raw):
            values = raw.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            parsed = pd.to_numeric(raw, errors="coerce")
            bad = np.flatnonzero((parsed.isna() & raw.notna()).to_numpy())
            if len(bad):
                i = int(bad[0])
                raise InputError(
                    f"{name}={path!r}: {what} column {column!r} has a non-numeric value {str(raw.iloc[i])!r} at "
                    f"{_where_row(path, i)}; {what} columns must hold numbers only"
                )
            values = parsed.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            i = int(bad[0])
            cell = "an empty (or NaN) cell" if np.isnan(values[i]) else f"the non-finite value {values[i]}"
            raise InputError(
                f"{name}={path!r}: {what} column {column!r} has {cell} at {_where_row(path, i)}; "
                "fill in or drop that row"
            )
        out[:, j] = values
    return out


def require_columns(frame, columns: list[str], path: str, name: str, what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise InputError(
            f"{name}={path!r} has no {what} column{plural} {_listing(missing)}; its columns are: "
            f"{_listing(frame.columns)}"
        )


class CSVDataModule(TensorDataModule):
    """Your own table: a CSV file with a header line of column names, one row per example.

    The rows are split at random (scikit-learn's ``train_test_split`` with ``seed``) into training, validation
    and (optionally) test rows; the features are standardised with statistics of the training rows only. The
    columns are looked up when first needed (the CLI needs their number to build the model), not when the
    module is created. After a fit, the checkpoint carries the column names, the classes and the fitted
    standardisation, so ``predict --ckpt_path CKPT --data.predict_path NEW.csv`` needs nothing else.

    Args:
        path: the training CSV. Every row is predicted when ``predict_path`` is not given.
        target: the column to predict, or a list of columns (several regression outputs).
        features: the input columns; default: every other numeric column, except ``id_column``. A text column
            counts as numeric when most of its cells are numbers (so a typo is reported, not skipped).
        task: ``regression`` (real-valued targets) or ``classification`` (one label column; labels may be
            text or numbers).
        val_fraction: fraction of the rows held out for validation, in [0, 1).
        test_fraction: fraction of the rows held out for ``test``, in [0, 1); 0 makes ``test`` use the
            validation rows.
        stratify: for classification, keep the class proportions equal in every split.
        standardize: scale every feature to mean 0 and standard deviation 1 with the training rows' statistics.
            A checkpoint's fitted statistics are used as saved (they are part of the model).
        standardize_target: regression only: scale the targets the same way for training; predictions are
            written back in the targets' own units (logged losses and errors are in the scaled units).
        predict_path: a CSV to predict instead of ``path``: it needs the feature columns (and ``id_column``);
            the target columns may be absent.
        id_column: a column that identifies the rows; ``predictions.csv`` carries it instead of the features.
        classes: the class labels in the order of the model's outputs; default: the sorted distinct labels of
            the training file. Give them to fix the order or to allow labels that the file lacks.
        **kwargs: batching options of :class:`TensorDataModule` (``batch_size``, ``shuffle``, ``seed``,
            ``on_device``).
    """

    # known per instance (from the ``task`` argument); None keeps the CLI's class-level check out of the way
    task = None

    def __init__(
        self,
        path: str | None = None,
        target: str | list[str] = "y",
        features: list[str] | None = None,
        task: Literal["regression", "classification"] = "regression",
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        stratify: bool = True,
        standardize: bool = True,
        standardize_target: bool = False,
        predict_path: str | None = None,
        id_column: str | None = None,
        classes: list | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
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
        if features is not None:
            if len(features) == 0:
                raise InputError("data.features=[] is invalid: give at least one column, or leave it out")
            if len(set(features)) != len(features):
                raise InputError(f"data.features={features!r} names a column twice")
            overlap = [f for f in features if f in targets]
            if overlap:
                raise InputError(f"data.features names the target column {overlap[0]!r}: a target cannot be a feature")
        if id_column is not None and id_column in targets:
            raise InputError(f"data.id_column={id_column!r} is the target column")
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
        self._frame = None  # the training table, read once
        self._predict_frame = None
        self._raw: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # unscaled splits
        self._preprocessing: dict[str, Any] | None = None  # fitted, or loaded from a checkpoint
        self.split_rows: dict[str, np.ndarray] = {}  # rows of the training file in each split, as split

    # --- columns: read from the training file on first use, then kept in hparams (and so in checkpoints) ------
    @property
    def target_names(self) -> tuple[str, ...]:
        return tuple(self._targets)

    @property
    def feature_names(self) -> tuple[str, ...]:
        if self.hparams.features is None:
            frame = self.training_frame()
            exclude = set(self._targets) | {self.hparams.id_column}
            names = [c for c in frame.columns if c not in exclude and _mostly_numeric(frame[c])]
            if not names:
                raise InputError(
                    f"data.path={self.hparams.path!r} has no numeric column to use as a feature besides the target "
                    f"{_listing(self._targets)}; its columns are: {_listing(frame.columns)}"
                )
            self.hparams["features"] = names
        return tuple(self.hparams.features)

    @property
    def classes(self) -> list | None:
        if self.task != "classification":
            return None
        if self.hparams.classes is None:
            labels = self._labels(self.training_frame(), self.hparams.path, "data.path")
            found = sorted(set(labels))
            if len(found) < 2:
                raise InputError(
                    f"data.path={self.hparams.path!r}: target column {self._targets[0]!r} has a single class "
                    f"{found[0]!r}; classification needs at least 2"
                )
            self.hparams["classes"] = found
        return list(self.hparams.classes)

    # --- reading ----------------------------------------------------------------------------------------------
    def training_frame(self):
        """The training CSV as a pandas DataFrame (read once)."""
        if self._frame is None:
            self._frame = read_table(self.hparams.path, "data.path")
            require_columns(self._frame, self._targets, self.hparams.path, "data.path", "target")
            if self.hparams.id_column is not None:
                require_columns(self._frame, [self.hparams.id_column], self.hparams.path, "data.path", "id")
        return self._frame

    def predict_frame(self):
        """The table to predict: ``predict_path``, or the training CSV."""
        if self._predict_frame is None:
            if self.hparams.predict_path is None:
                self._predict_frame = self.training_frame()
            else:
                frame = read_table(self.hparams.predict_path, "data.predict_path")
                require_columns(frame, list(self.feature_names), self.hparams.predict_path, "data.predict_path", "feature")
                if self.hparams.id_column is not None:
                    require_columns(frame, [self.hparams.id_column], self.hparams.predict_path, "data.predict_path", "id")
                self._predict_frame = frame
        return self._predict_frame

    def _labels(self, frame, path: str, name: str) -> list:
        """The label column as plain Python values (ints stay ints)."""
        column = frame[self._targets[0]]
        empty = np.flatnonzero(column.isna().to_numpy())
        if len(empty):
            raise InputError(
                f"{name}={path!r}: target column {self._targets[0]!r} has an empty (or NaN) label at "
                f"{_where_row(path, int(empty[0]))}"
            )
        return column.tolist()

    def _targets_of(self, frame) -> np.ndarray:
        """Training targets: float64 ``(rows, targets)``, or class indices ``(rows, 1)`` for classification."""
        path = self.hparams.path
        if self.task == "regression":
            return numeric_values(frame, self._targets, path, "data.path", "target")
        classes = self.classes
        index = {_key(c): i for i, c in enumerate(classes)}
        labels = self._labels(frame, path, "data.path")
        out = np.empty((len(labels), 1), dtype=np.float64)
        for i, label in enumerate(labels):
            k = index.get(_key(label))
            if k is None:
                raise InputError(
                    f"data.path={path!r}: label {label!r} in column {self._targets[0]!r} at {_where_row(path, i)} "
                    f"is not one of data.classes={classes!r}"
                )
            out[i, 0] = k
        return out

    def _features_of(self, frame, path: str, name: str) -> np.ndarray:
        names = list(self.feature_names)
        require_columns(frame, names, path, name, "feature")
        return numeric_values(frame, names, path, name, "feature")

    def load_training(self) -> None:
        """Read the training CSV and split its rows into ``train``, ``val`` and ``test`` (unscaled)."""
        if "train" in self._raw:
            return
        from sklearn.model_selection import train_test_split

        h = self.hparams
        frame = self.training_frame()
        x = self._features_of(frame, h.path, "data.path")
        y = self._targets_of(frame)
        n = len(frame)
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
        self.split_rows = {"train": train, "val": val, "test": test if n_test else val}
        self._raw.update({split: (x[r], y[r]) for split, r in self.split_rows.items()})

    def load_predict(self) -> None:
        """Read the rows to predict (unscaled), all of them, in input order."""
        if "predict" in self._raw:
            return
        frame = self.predict_frame()
        name = "data.predict_path" if self.hparams.predict_path is not None else "data.path"
        path = self.hparams.predict_path if self.hparams.predict_path is not None else self.hparams.path
        self._raw["predict"] = (self._features_of(frame, path, name), np.arange(len(frame)))

    # --- preprocessing: fitted on the training rows, kept in the checkpoint as plain lists --------------------
    def fit_preprocessing(self) -> dict[str, Any]:
        """The standardisation, fitted on the training rows (read now if needed) unless already known."""
        if self._preprocessing is None:
            from sklearn.preprocessing import StandardScaler

            self.load_training()
            x, y = self._raw["train"]
            state: dict[str, Any] = {"features": list(self.feature_names), "targets": list(self._targets)}
            state["feature_mean"] = state["feature_scale"] = state["target_mean"] = state["target_scale"] = None
            if self.hparams.standardize:
                scaler = StandardScaler().fit(x)
                state["feature_mean"], state["feature_scale"] = scaler.mean_.tolist(), scaler.scale_.tolist()
            if self.hparams.standardize_target and self.task == "regression":
                scaler = StandardScaler().fit(y)
                state["target_mean"], state["target_scale"] = scaler.mean_.tolist(), scaler.scale_.tolist()
            self._preprocessing = state
        return self._preprocessing

    def state_dict(self) -> dict[str, Any]:
        if self._preprocessing is None and "train" in self._raw:
            self.fit_preprocessing()
        return dict(self._preprocessing) if self._preprocessing is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        features = list(state_dict.get("features") or [])
        if features != list(self.feature_names):
            raise InputError(
                f"the checkpoint's standardisation is for the features {features!r}, but data.features is "
                f"{list(self.feature_names)!r}"
            )
        self._preprocessing = dict(state_dict)
        self.splits = {}  # rebuilt with this standardisation

    def _scale(self, values: np.ndarray, mean, scale) -> torch.Tensor:
        if mean is not None:
            values = (values - np.asarray(mean)) / np.asarray(scale)
        return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        state = self._preprocessing or {}
        if self.task != "regression" or state.get("target_mean") is None:
            return outputs
        mean = torch.tensor(state["target_mean"], dtype=torch.float64)
        scale = torch.tensor(state["target_scale"], dtype=torch.float64)
        return outputs.detach().cpu().double() * scale + mean

    # --- TensorDataModule -------------------------------------------------------------------------------------
    def make_splits(self) -> dict[str, tuple[torch.Tensor, ...]]:
        """The splits read so far, scaled with the current standardisation."""
        state = self.fit_preprocessing()
        splits = {}
        for split, (x, y) in self._raw.items():
            x = self._scale(x, state["feature_mean"], state["feature_scale"])
            if split == "predict":
                splits[split] = (x, torch.as_tensor(y))
            elif self.task == "regression":
                splits[split] = (x, self._scale(y, state["target_mean"], state["target_scale"]))
            else:
                splits[split] = (x, torch.from_numpy(y.astype(np.float32)))
        return splits

    def setup(self, stage: str) -> None:
        # read the data now; scale it when a dataloader is asked for, since Lightning loads the checkpoint's
        # standardisation (load_state_dict) after setup
        self._check_task()
        if stage == "predict":
            self.load_predict()
        else:
            self.load_training()
            if stage == "fit" and self.hparams.predict_path is not None:
                self.predict_frame()  # a bad predict file fails before training rather than after
        self.splits = {}

    def _batches(self, split: str, train: bool = False):
        if not self.splits:
            self.splits = self.make_splits()
        return super()._batches(split, train)

    def feature_columns(self) -> dict[str, Any]:
        frame = self.predict_frame()
        if self.hparams.id_column is not None:
            return {self.hparams.id_column: frame[self.hparams.id_column].to_numpy()}
        return {name: frame[name].to_numpy() for name in self.feature_names}

    def _check_task(self) -> None:
        trainer = self.trainer
        model = trainer.lightning_module if trainer is not None else None
        model_task = getattr(model, "task", None)
        if model_task is not None and model_task != self.task:
            raise InputError(
                f"model {type(model).__name__} does {model_task} but data.task={self.task!r}: choose a matching "
                "pair (LogisticRegression for classification, a regression model otherwise)"
            )


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
