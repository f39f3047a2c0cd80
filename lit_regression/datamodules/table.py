"""Bring your own table: CSV, TSV, any delimiter or Parquet, with numeric and categorical columns and gaps.

The data module holds the arguments and the Lightning hooks. Where the rows come from is a
:class:`~lit_regression.sources.TableSource` (in memory, or streamed from Parquet files); the columns' roles are
:mod:`lit_regression.columns`'; cells are checked in :mod:`lit_regression.cells`; the preprocessing is fitted
and applied by :mod:`lit_regression.preprocessing`.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch

from lit_regression import cells, columns
from lit_regression.batches import process_of, refuse_empty_shares, share_out
from lit_regression.cells import Place
from lit_regression.datamodules.base import TensorDataModule
from lit_regression.datamodules.table_arguments import check_arguments
from lit_regression.errors import InputError, count, say
from lit_regression.preprocessing import Preprocessing, encode, encoded_names, fit
from lit_regression.sources import Holdout, TableSource
from lit_regression.sources.memory import MemorySource
from lit_regression.sources.parquet import ParquetSource
from lit_regression.tables import TextFormat, absolute_path, listing

Strategy = str  # "none", "mean" or "median": checked in __init__, whose message names the choices
ARGUMENTS = {"train": "path", "val": "val_path", "test": "test_path", "predict": "predict_path"}  # each split's table
FEW_ROWS = 10  # fewer training rows than this are said, with a warning


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
        thousands: the mark between groups of thousands in a text table's numbers: ``','`` for ``1,890.53``,
            ``'.'`` for ``1.890,53`` (with ``decimal=','``); default: none (such a column is refused, named).
        encoding: the text encoding of a text table: ``latin-1`` or ``cp1252`` for many spreadsheet exports.
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
        drop_first: leave out the one-hot column of each categorical column's first level (the first of
            ``categories``: the first in sorted order by default), its reference level, as statsmodels'
            treatment coding (``C(column)``) and scikit-learn's ``OneHotEncoder(drop="first")`` do. The other
            levels' weights are then their differences from the reference, and the columns are no longer
            collinear with the bias, so that a linear model gets standard errors. The reference level's rows,
            and those of a level not seen in training, are all zeros.
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
        streaming: read the table from disk every epoch instead of into memory (docs/big-tables.md): ``path``
            (and ``val_path``, ``test_path``, ``predict_path``) may then be a Parquet file, a folder of Parquet
            files or a glob; needs ``batch_size``. Rows are held out by a hash of their global row index.
        val_path: streaming: the validation rows' own files (no rows of ``path`` are then held out for them).
        test_path: streaming: the test rows' own files (likewise).
        shuffle_buffer: streaming with ``shuffle``: rows of consecutive row groups shuffled together.
        cache_dir: streaming: a folder on a local disk where each process keeps the training and validation rows
            it decoded in the first epoch, as the model's float32 inputs, in a scratch file that is deleted when
            the process ends; later epochs read them from there instead of decoding the Parquet files again
            (docs/big-tables.md). ``None``: decode every epoch. Checked when a fit or validation first reads
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
        thousands: str | None = None,
        encoding: str = "utf-8",
        categorical: list[str] | None = None,
        max_categories: int = 50,
        impute: Strategy | dict[str, Strategy] = "none",
        categories: dict[str, list] | None = None,
        drop_first: bool = False,
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
        # (LightningCLI adds its own keys, such as _class_path, to hparams)
        self.task, self._targets = check_arguments(**{k: v for k, v in self.hparams.items() if not k.startswith("_")})
        # absolute, so that a checkpoint (which keeps these arguments) finds its tables from any working folder
        # (written into hparams: LightningCLI hands save_hyperparameters the arguments as it was given them)
        for name, value in (("path", path), ("predict_path", predict_path), ("val_path", val_path),
                            ("test_path", test_path), ("cache_dir", cache_dir)):
            self.hparams[name] = absolute_path(value)
        self.streaming = bool(streaming)
        self._sources: dict[str, TableSource] = {}  # by argument (``rows``: rows handed over by predict_rows)
        self._loaders: dict = {}  # the streamed loaders by split, last made
        self._roles: columns.Roles | None = None  # every column of the training table and its role
        self._preprocessing: Preprocessing | None = None  # fitted, or loaded from a checkpoint
        self._unseen_said: set[tuple] = set()  # (table, split, column) whose unseen levels were reported

    # --- columns: resolved from the training table on first use, then kept in hparams (and so in checkpoints) ---
    @property
    def text_format(self) -> TextFormat:
        """How the text tables are read."""
        h = self.hparams
        return TextFormat(h.sep, h.decimal, h.thousands, h.encoding)

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
        return tuple(encoded_names(self.hparams.features, self.hparams.categories, self.hparams.drop_first))

    @property
    def classes(self) -> list | None:
        if self.task != "classification":
            return None
        if self.hparams.classes is None:
            self._require_ids(self.source("train"), True)
            found = columns.distinct_labels(self.source("train"), self._targets[0])
            if len(found) < 2:
                raise InputError(f"data.path={self.hparams.path!r}: target column {self._targets[0]!r} has a single "
                                 f"class {found[0]!r}; classification needs at least 2")
            self.hparams["classes"] = found
        return list(self.hparams.classes)

    def column_roles(self) -> list[dict[str, Any]]:
        """Each column of the training table with its role (from the checkpoint's arguments where the table
        was not read)."""
        h = self.hparams
        roles = (self._roles.roles if self._roles is not None else
                 columns.given_roles(self._targets, h.id_column, self.input_columns, h.categories))
        if h.drop_first:  # the level without a column: the one its weights are differences from
            roles = [{**r, "reference": h.categories[r["column"]][0]} if r["column"] in (h.categories or {}) and
                     r["role"] == "categorical feature" else r for r in roles]
        return roles

    def describe_columns(self) -> str:
        return columns.describe(f"data.path={self.hparams.path!r}", self.column_roles())

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
        self._require_ids(self.source("train"), True)
        self._roles = columns.resolve(self.source("train"), self._targets, h.id_column, h.features, h.categorical,
                                      h.impute, h.categories, h.max_categories, self.text_format)
        h["features"], h["categories"] = self._roles.features, self._roles.categories

    # --- where the rows come from -------------------------------------------------------------------------------
    def source(self, split: str = "train") -> TableSource:
        """The table that ``split`` reads: its own argument where given, else data.path; ``test`` without rows of
        its own reads the validation rows."""
        h = self.hparams
        if split == "test" and h.test_path is None and not h.test_fraction:
            split = "val"
        arg = "rows" if split == "predict" and "rows" in self._sources else ARGUMENTS[split]
        if arg != "rows" and h.get(arg) is None:
            arg = "path"
        if arg not in self._sources:
            self._sources[arg] = self._open(h[arg], f"data.{arg}", None if arg == "path" else split)
        return self._sources[arg]

    def _require_ids(self, source: TableSource, targets: bool) -> None:
        """The training table has the target columns (where ``targets``) and the id column."""
        h = self.hparams
        if targets:
            source.require(self._targets, "target")
        if h.id_column is not None:
            source.require([h.id_column], "id")

    def _open(self, path: str | None, name: str, whole: str | None, table: pa.Table | None = None) -> TableSource:
        h = self.hparams
        if path is None:
            raise InputError(f"{name} is not set: give the table (.csv, .tsv or .parquet) with --{name} FILE")
        holdout = Holdout(h.val_fraction, h.test_fraction, self.seed, h.stratify and self.task == "classification",
                          h.val_path is not None, h.test_path is not None)
        if self.streaming and table is None:  # rows handed over in Python are held, streamed or not
            return ParquetSource(path, name, holdout, whole, batch_size=self.batch_size, shuffle=self.shuffle,
                                 seed=self.seed, shuffle_buffer=h.shuffle_buffer, cache_dir=h.cache_dir,
                                 loaders=self._loaders)
        return MemorySource(path, name, holdout, whole, text=self.text_format, targets=self._targets_of,
                            batch_size=self.batch_size, shuffle=self.shuffle, seed=self.seed,
                            on_device=self.on_device, table=table)

    @property
    def split_rows(self) -> dict[str, np.ndarray]:
        """The training table's row indices in each split."""
        return {split: self.source("train").positions(split) for split in ("train", "val", "test")}

    @property
    def splits(self) -> dict[str, tuple[torch.Tensor, ...]]:
        """The tensors of each split that the sources hold (in memory, once a loader asked for them)."""
        return {split: tensors for source in self._sources.values() for split, tensors in source.held.items()}

    @splits.setter
    def splits(self, value: dict) -> None:  # TensorDataModule's own starts empty; here the sources hold them
        if value:
            raise AttributeError("TableDataModule.splits are its sources' tensors: they cannot be set")

    @property
    def n_train(self) -> int:
        return self.source("train").rows("train")

    # --- preprocessing: fitted on the training rows, kept in the checkpoint as plain values -------------------
    def fit_preprocessing(self) -> Preprocessing:
        """Imputation, categories and standardisation, fitted on one pass over the training rows (shared out to
        the processes) unless already known."""
        if self._preprocessing is None:
            h, source = self.hparams, self.source("train")
            impute = h.impute if isinstance(h.impute, dict) else {f: h.impute for f in self.input_columns}
            levels = dict(self._roles.levels) if self._roles is not None else {}
            uncounted = [f for f in h.categories if impute.get(f, "none") != "none" and f not in levels]
            if uncounted:  # categories given as arguments: their most frequent level is still to be counted
                levels.update(columns.count_levels(source, uncounted, max(len(h.categories[f]) for f in uncounted))[0])
            numeric = [f for f in self.input_columns if f not in h.categories]
            regression = list(self._targets) if self.task == "regression" else []
            self._preprocessing = fit(source.shared_blocks(numeric + self._targets, self.trainer),
                                      lambda value: source.gather(value, self.trainer), list(self.input_columns),
                                      dict(h.categories), levels, impute, h.standardize,
                                      lambda block: self._targets_of(block.table, block.place), regression,
                                      h.standardize_target, source.rows("train"), source.place, h.drop_first)
        return self._preprocessing

    def state_dict(self) -> dict[str, Any]:
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
        for source in self._sources.values():  # encoded again, with this preprocessing
            source.held.clear()

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

    # --- rows into tensors ------------------------------------------------------------------------------------
    def _targets_of(self, table: pa.Table, place: Place) -> np.ndarray:
        """Every row's targets, float64 ``(rows, targets)``, or class indices ``(rows, 1)``; checked."""
        return cells.targets(table, self._targets, self.classes, place, self.text_format)

    def _encoded(self, table, parts: dict, place: Place, column_major: bool) -> dict[str, np.ndarray]:
        """The model inputs of each part's rows; levels not seen in training are reported once per column."""
        xs, unseen = encode(self.fit_preprocessing(), table, {name: keep for name, (keep, _) in parts.items()},
                            place, column_major)
        for name, found in unseen.items():
            for feature, u in found.items():
                said = (place.name, name, feature)  # once per table, split and column (a stream: not every block)
                if said in self._unseen_said:
                    continue
                self._unseen_said.add(said)
                shown = f"{listing(u.shown[:5])}{', ...' if len(u.shown) > 5 else ''}"
                rows = count(u.rows, "row") if name else "rows"  # a streamed block: not all
                encoded = "all zeros"
                if self.hparams.drop_first:
                    encoded += f", as the reference level {self.hparams.categories[feature][0]!r}"
                split = f", {name} rows" if name and place.name == "data.path" else ""  # a table of several splits
                say(f"{place}{split}: column {feature!r} has {rows} with categories not "
                    f"seen in training ({shown}), the first at {place.where(u.first)}; encoded as {encoded}",
                    warning=True)
        return xs

    def _training_decode(self, table, parts: dict, place: Place, column_major: bool) -> dict[str, tuple]:
        """``(x, y, global rows)`` of each part (see :data:`~lit_regression.sources.Decode`)."""
        y = self._targets_of(table[0] if isinstance(table, list) else table, place)  # before table is consumed
        xs = self._encoded(table, parts, place, column_major)
        return {name: (torch.from_numpy(xs[name]),
                       torch.from_numpy(np.ascontiguousarray(y if keep is None else y[keep], dtype=np.float32)),
                       torch.from_numpy(rows)) for name, (keep, rows) in parts.items()}

    def _predict_decode(self, table, parts: dict, place: Place, column_major: bool) -> dict[str, tuple]:
        """``(x, global rows, the columns kept beside the predictions)`` of each part."""
        given = (table[0] if isinstance(table, list) else table).select(self._kept())
        xs = self._encoded(table, parts, place, column_major)
        return {name: (torch.from_numpy(xs[name]), torch.from_numpy(rows),
                       given if keep is None else given.take(pa.array(keep))) for name, (keep, rows) in parts.items()}

    def _kept(self) -> list[str]:
        """The columns written beside the predictions: the id column, else the features."""
        return [self.hparams.id_column] if self.hparams.id_column is not None else list(self.input_columns)

    def _read_columns(self, split: str) -> list[str]:
        if split != "predict":
            return list(self.input_columns) + self._targets
        return list(dict.fromkeys(list(self.input_columns) + self._kept()))

    def _batches(self, split: str, train: bool = False):
        self.fit_preprocessing()  # first: a table in memory is let go as its rows are encoded
        decode = self._predict_decode if split == "predict" else self._training_decode
        return self.source(split).loader(split, decode, self._read_columns(split), self.trainer, train)

    def training_chunks(self):
        """One pass over the training rows as ``(x, y)`` chunks, for the report's exact optimum."""
        self.fit_preprocessing()
        return self.source("train").chunks(self._training_decode, self._read_columns("train"))

    def feature_columns(self) -> dict[str, Any] | None:
        """The predicted rows' columns as given: the id column, or the feature columns (``None`` where the
        predict batches carry them)."""
        return self.source("predict").given()

    def row_splits(self, rows: np.ndarray) -> np.ndarray | None:
        """The split (``train``, ``val``, ``test``) of each predicted row (``rows``: their indices in the table),
        where the rows predicted are the training table's, with its targets (the split is drawn again as fit drew
        it); ``None`` for a table to predict of its own (``predict_path``, rows handed over in Python), whose
        rows were in no split."""
        source = self.source("predict")
        if source.whole is not None or not all(t in source.column_names for t in self._targets):
            return None
        return source.split_of(np.asarray(rows))

    def predict_rows(self, table: pa.Table, path: str = "rows", name: str = "rows") -> torch.Tensor:
        """Predict ``table`` (pyarrow) from now on, with the same column checks as ``predict_path``; return its
        rows as model inputs (imputed and one-hot encoded; numbers in their units, as the model takes them)."""
        source = self._sources["rows"] = self._open(path, name, "predict", table)
        self._unseen_said = {said for said in self._unseen_said if said[0] != name}  # new rows: said again
        self._check_predict_columns(source)
        self.fit_preprocessing()
        return source.tensors_of("predict", self._predict_decode, self._read_columns("predict"))[0]

    # --- Lightning hooks ----------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        try:
            self._setup(stage)
        except InputError as err:  # every process checks the same files and arguments alike
            err.everywhere = True
            raise

    def _setup(self, stage: str) -> None:
        # the rows are read and encoded when a dataloader is asked for: Lightning loads the checkpoint's
        # preprocessing (load_state_dict) after setup
        self._check_task()
        h, train = self.hparams, self.source("train")
        if stage == "predict":
            if self.source("predict").whole is None:  # the training table's rows: the id column beside them
                self._require_ids(train, False)
            self._check_predict_columns(self.source("predict"))
            return
        self._require_ids(train, True)
        if not train.rows("train"):
            raise InputError(f"data.val_fraction={h.val_fraction!r} and data.test_fraction={h.test_fraction!r} leave "
                             f"no training rows out of the {train.rows('predict')} of data.path={h.path!r}")
        for source in (self.source("val"), self.source("test")):  # the held-out splits' own files
            if source.whole is not None:
                source.require(list(self.input_columns), "feature")
                source.require(self._targets, "target")
        train.prepare(stage)
        if stage == "fit":
            say(self.describe_columns())
            held_out = {split: self.source(split).rows(split) for split in ("val", "test")}
            description = train.describe(self.batch_size, self.shuffle, held_out)
            if description is not None:
                say(description)
            self._check_predict_columns(self.source("predict"))  # a bad predict file fails before training
            self._check_processes()
            self._check_problem()
        split = {"validate": "val", "test": "test"}.get(stage)
        if split is not None and not self.source(split).rows(split):
            raise InputError(f"{getattr(stage, 'value', stage)} has no rows: data.val_fraction={h.val_fraction!r} and "
                             f"data.test_fraction={h.test_fraction!r} hold none out of data.path={h.path!r}; give a "
                             "fraction, or the rows' own files with --data.val_path / --data.test_path")
        if stage == "test" and not h.test_fraction and h.test_path is None:
            say(f"test runs on the {count(self.source('val').rows('val'), 'validation row')}: data.test_fraction is 0 "
                "(give it a fraction to hold out rows for test alone)")

    def _check_predict_columns(self, source: TableSource) -> None:
        """The table to predict has the feature columns (and the id column); its other columns are named in one
        line (the training table's target columns aside)."""
        h = self.hparams
        if source.whole is None:
            return  # the training table: its columns are the features' own
        needed = list(self.input_columns) + ([h.id_column] if h.id_column is not None else [])
        source.require(list(self.input_columns), "feature")
        if h.id_column is not None and h.id_column not in source.column_names:
            fix = ("add it to every row" if source.in_python  # the model's own id column: no option changes it here
                   else "add it, or give --data.id_column null to write the features instead")
            raise InputError(f"{source.place} has no id column {h.id_column!r} (data.id_column, written beside each "
                             f"prediction): {fix}")
        extra = [c for c in source.column_names if c not in needed and c not in self._targets]
        if extra:
            say(f"{source.place}: ignoring the column{'s' * (len(extra) > 1)} {listing(extra)}, which the model does "
                "not use")

    def _check_processes(self) -> None:
        """Every split that fit reads, prediction included, has a row for each process (checked before
        training, so that a long fit is not lost to a prediction file too small for the processes)."""
        world = process_of(self.trainer)[1]
        for split in ("train", "val", "predict"):
            source = self.source(split)
            n = source.rows(split)
            if n or split == "train":  # a split without rows is not read (validation), or refused elsewhere
                refuse_empty_shares([sum(part.rows for part in share) for share in share_out([n], world)],
                                    source.place)

    def _check_problem(self) -> None:
        """What the training rows cannot teach, said before training: one row is an error; a handful of rows,
        fewer rows than the model has parameters, a validation split of one row (no R^2) and a true/false target
        for a regression model are warnings."""
        train = self.source("train")
        n, val = train.rows("train"), self.source("val").rows("val")
        if n < 2:
            raise InputError(f"{train.place} leaves {count(n, 'training row')} once data.val_fraction and "
                             "data.test_fraction are held out: a model cannot be fitted to it; give more rows or hold "
                             "out fewer")
        model = self.trainer.lightning_module if self.trainer is not None else None
        parameters = sum(p.numel() for p in model.parameters()) if model is not None else 0
        if n < parameters:
            say(f"{train.place}: {count(n, 'training row')} for {count(parameters, 'parameter')}: the rows do not "
                "pin the parameters down (many fit them exactly), so expect a poor fit on new rows; add rows, drop "
                "columns or set --model.l2", warning=True)
        elif n < FEW_ROWS:
            say(f"{train.place}: only {count(n, 'training row')}: the fit and its metrics will vary a lot with the "
                "split", warning=True)
        if val == 1 and self.task == "regression":
            say(f"{train.place}: 1 validation row: val_r2 is not defined on one row (NaN); hold out more rows",
                warning=True)
        boolean = [t for t in self._targets if pa.types.is_boolean(train.sample()[t].type)]
        if boolean and self.task == "regression":
            say(f"{train.place}: target column {boolean[0]!r} holds true/false, which a regression model predicts as a "
                "number between 0 and 1; for classes use --model LogisticRegression", warning=True)

    def _check_task(self) -> None:
        trainer = self.trainer
        model = trainer.lightning_module if trainer is not None else None
        model_task = getattr(model, "task", None)
        if model_task is not None and model_task != self.task:
            raise InputError(
                f"model {type(model).__name__} does {model_task} but data.task={self.task!r}: choose a matching "
                "pair (LogisticRegression for classification, a regression model otherwise)"
            )
