"""The preprocessing of a table, the one place where it is fitted and applied: imputation (the training rows'
mean or median, or a categorical column's most frequent level, as scikit-learn's ``SimpleImputer``), one-hot
encoding (``OneHotEncoder(handle_unknown="ignore")``) and standardisation (as ``StandardScaler``).

:func:`fit` takes one pass over the training rows, whatever holds them (a table in memory is one block, streamed
files a block per row group, shared out to the processes); :class:`ColumnStats` merges the blocks' statistics
exactly. :func:`encode` turns a block's cells into the model's float32 inputs. The fitted state is kept as plain
values (so a checkpoint carries it and still loads with ``weights_only=True``).

Encoded columns keep the table's order; a categorical column becomes one 0/1 column per level, named
``column=level``, or, with ``drop_first``, one per level but the first (the reference level, encoded as all zeros:
statsmodels' treatment coding), so that the columns and the bias are not collinear. Numeric columns keep their
units: the standardisation fitted here (mean and scale per column and target) is applied by the model, which
carries it as buffers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from lit_regression.cells import Place, check, features as feature_cells, in_range, missing, numbers
from lit_regression.errors import InputError
from lit_regression.sources import Block

STRATEGIES = ("none", "mean", "median")


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value it stands for; a whole float as an int (level ``75001``, not
    ``75001.0``)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def encoded_names(features: list[str], categories: dict[str, list], drop_first: bool = False) -> list[str]:
    """One name per model input: the numeric columns by their name, one ``column=level`` per level (but the
    first, with ``drop_first``)."""
    names = []
    for feature in features:
        levels = categories.get(feature)
        names.extend([feature] if levels is None else [f"{feature}={level}" for level in levels[int(drop_first):]])
    return names


def fit_levels(values: np.ndarray) -> list:
    """The distinct non-empty values of a column's training rows, sorted, as plain values."""
    from sklearn.preprocessing import OneHotEncoder

    present = values[~missing(values)]
    if len(present) == 0:
        return []
    encoder = OneHotEncoder().fit(present.reshape(-1, 1))
    return [plain(v) for v in encoder.categories_[0]]


TRUE_FALSE = {"true": True, "false": False, "1": True, "0": False}  # how a true/false level may be written


def are_numbers(values: list) -> bool:
    """Whether every value is a number (true/false is not): levels compared as numbers, classes of a number type."""
    return all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
               for v in values)


def like_levels(values: np.ndarray, levels: list) -> np.ndarray:
    """A categorical column's cells as the same kind of values as its levels, where the table to predict has
    another (numbers in a column whose levels are text, or text where they are numbers): a number is the text it
    is written as (``7``, not ``7.0``), a text cell the number it spells; true/false levels take ``true``,
    ``True``, ``1`` and the like; what has no such form (a list, a mapping) matches no level."""
    if levels and all(isinstance(v, bool) for v in levels):
        return np.array([_true_false(v) for v in values], dtype=object)
    numeric = are_numbers(levels)
    if numeric and values.dtype.kind != "f":
        import pandas as pd

        # True is no 1, and a list or a mapping no number
        cells = pd.Series(values, dtype=object).map(lambda v: v if isinstance(v, (str, int, float, np.number))
                                                    and not isinstance(v, (bool, np.bool_)) else None)
        return pd.to_numeric(cells, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)  # NaN: no level
    if not numeric and (values.dtype.kind == "f" or not all(isinstance(v, str) for v in values)):
        return np.array([v if isinstance(v, str) else str(plain(v)) for v in values], dtype=object)
    return values


def _true_false(value: Any) -> Any:
    """A cell of a true/false column as a bool where it spells one, else as it is (no level)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.number)) and value in (0, 1):
        return bool(value)
    return TRUE_FALSE.get(value.strip().lower(), value) if isinstance(value, str) else str(value)


def level_encoder(levels: list):
    """scikit-learn's ``OneHotEncoder`` of a column's levels (``handle_unknown="ignore"``: another value is all
    zeros), fitted once: fitting costs as much as encoding a block of a few rows."""
    from sklearn.preprocessing import OneHotEncoder

    numeric = are_numbers(levels)
    known = np.asarray(levels, dtype=np.float64 if numeric else object).reshape(-1, 1)
    encoder = OneHotEncoder(categories=[known[:, 0]], handle_unknown="ignore", sparse_output=False, dtype=np.float32)
    return encoder.fit(known)


def one_hot(values: np.ndarray, levels: list, drop_first: bool = False, encoder=None) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``(rows, levels)`` 0/1 columns (``levels - 1``, the first level's left out, with ``drop_first``)
    and the mask of rows whose value is not a level (all zeros). ``encoder``: :func:`level_encoder` of ``levels``,
    where the caller keeps one."""
    if len(values) == 0:  # a split without rows (no validation rows, say): scikit-learn refuses to transform it
        return np.zeros((0, len(levels) - int(drop_first)), dtype=np.float32), np.zeros(0, dtype=bool)
    values = like_levels(values, levels)  # the levels' kind: float64 for numbers, objects for text
    block = (encoder or level_encoder(levels)).transform(values.reshape(-1, 1))
    unseen = block.sum(axis=1) == 0
    return (block[:, 1:] if drop_first else block), unseen


class Preprocessing:
    """Fitted preprocessing of the feature and target columns, as plain values.

    Args:
        features: the table's feature columns, in the model's order.
        categories: levels of each categorical feature, in the order of its one-hot columns.
        fill: the value that fills the empty cells of a column (absent: empty cells are an error).
        mean, scale: per encoded column (``None``: not standardised); one-hot columns have mean 0 and scale 1.
        target_mean, target_scale: per regression target (``None``: targets not scaled).
        drop_first: a categorical feature's first level (its reference) gets no column: its rows, and those of a
            level not seen in training, are all zeros.
    """

    def __init__(self, features: list[str], categories: dict[str, list] | None = None,
                 fill: dict[str, Any] | None = None, mean: list[float] | None = None,
                 scale: list[float] | None = None, target_mean: list[float] | None = None,
                 target_scale: list[float] | None = None, drop_first: bool = False) -> None:
        self.features = list(features)
        self.categories = dict(categories or {})
        self.fill = dict(fill or {})
        self.mean, self.scale = mean, scale
        self.target_mean, self.target_scale = target_mean, target_scale
        self.drop_first = bool(drop_first)
        self._encoders: dict[str, Any] = {}  # each categorical feature's fitted OneHotEncoder, made on first use
        self.columns: dict[str, slice] = {}  # each feature's encoded columns
        start = 0
        for feature in self.features:
            levels = self.categories.get(feature)
            width = 1 if levels is None else len(levels) - int(self.drop_first)
            self.columns[feature] = slice(start, start + width)
            start += width

    @property
    def names(self) -> list[str]:
        return encoded_names(self.features, self.categories, self.drop_first)

    # --- applying -----------------------------------------------------------------------------------------------
    def filled(self, feature: str, values: np.ndarray) -> np.ndarray:
        """``values`` with the empty cells filled with the training rows' statistic (if imputed)."""
        value = self.fill.get(feature)
        if value is None:
            return values
        gaps = missing(values)
        if not gaps.any():
            return values
        # a column with no value at all reads as numbers (NaN): a text level fills it as text
        text = values.dtype.kind == "f" and isinstance(value, (str, bool))
        values = values.astype(object) if text else values.copy()
        values[gaps] = value
        return values

    def encode(self, feature: str, values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """A feature's filled cells as its float32 model inputs ``(rows, width)``, and for a categorical one the
        mask of rows with a level not seen in training. Numbers stay in their units: the model standardises
        them with ``mean`` and ``scale`` (its ``input_mean`` and ``input_scale`` buffers)."""
        if feature in self.categories:
            levels = self.categories[feature]
            if feature not in self._encoders:
                self._encoders[feature] = level_encoder(levels)
            return one_hot(values, levels, self.drop_first, self._encoders[feature])
        return values.astype(np.float32).reshape(-1, 1), None

    # --- as plain values (the datamodule's state_dict) ----------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"features": self.features, "categories": self.categories, "fill": self.fill,
                "feature_mean": self.mean, "feature_scale": self.scale,
                "target_mean": self.target_mean, "target_scale": self.target_scale, "drop_first": self.drop_first}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Preprocessing:
        """From :meth:`state`; also reads the state of CSVDataModule checkpoints made before categories,
        imputation and ``drop_first`` existed (no ``categories``, no ``fill``: every level has its column)."""
        return cls(state.get("features") or [], state.get("categories"), state.get("fill"),
                   state.get("feature_mean"), state.get("feature_scale"), state.get("target_mean"),
                   state.get("target_scale"), bool(state.get("drop_first", False)))


# --- fitting: one pass over the training rows -------------------------------------------------------------------
class ColumnStats:
    """Per column: rows with a value, their mean and sum of squared deviations (``m2``), in float64. Pieces merge
    exactly in any grouping (Chan, Golub and LeVeque's update); merged in piece order, every process gets the same
    bits whatever the number of processes."""

    def __init__(self, width: int) -> None:
        self.n = np.zeros(width)
        self.mean = np.zeros(width)
        self.m2 = np.zeros(width)

    @classmethod
    def of(cls, columns: list[np.ndarray]) -> ColumnStats:
        """Of float64 columns of equal length, NaN cells left out."""
        out = cls(len(columns))
        for j, values in enumerate(columns):
            gaps = np.isnan(values)
            present = values[~gaps] if gaps.any() else values
            out.n[j] = len(present)
            if len(present):
                out.mean[j] = present.mean()
                deviation = present - out.mean[j]
                out.m2[j] = np.dot(deviation, deviation)
        return out

    def merge(self, other: ColumnStats) -> None:
        n = self.n + other.n
        delta = other.mean - self.mean
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(n > 0, other.n / np.maximum(n, 1), 0.0)
        self.mean = self.mean + delta * share
        self.m2 = self.m2 + other.m2 + delta**2 * self.n * share
        self.n = n

    def set(self, j: int, other: ColumnStats) -> None:
        """Column ``j`` becomes ``other``'s only column."""
        self.n[j], self.mean[j], self.m2[j] = other.n[0], other.mean[0], other.m2[0]

    def scale(self, rows: np.ndarray | float) -> np.ndarray:
        """Standard deviations (``ddof=0``) over ``rows`` rows per column (missing cells counted as filled with the
        mean), 1 where a column is constant, as scikit-learn's ``StandardScaler``."""
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.sqrt(self.m2 / np.maximum(rows, 1))
        return np.where(std < 10 * np.finfo(np.float64).eps, 1.0, std)


IMPUTE_HINT = "fill it in, drop that row, or use --data.impute mean"  # the training rows, while fitting
# rows encoded with a fitted preprocessing (validation, test, predict): --data.impute no longer changes it
FITTED_HINT = "fill it in or drop that row: the model fills no gaps (one fitted with --data.impute mean does)"
NOT_IMPUTED_HINT = "fill it in or drop that row (this column is not imputed)"


def fit(blocks: Iterator[tuple[int, Block]], gather: Callable[[Any], list], features: list[str],
        categories: dict[str, list], levels: dict[str, Counter], strategies: dict[str, str], standardize: bool,
        targets: Callable[[Block], np.ndarray], regression: list[str], scale_targets: bool, rows: int,
        place: str, drop_first: bool = False) -> Preprocessing:
    """The preprocessing of ``features`` fitted on one pass over the training rows: ``blocks`` gives this
    process's ``(piece, block)`` of them (the blocks' numeric columns are read, every row checked, the kept rows
    counted) and ``gather`` every process's statistics, merged in piece order: the same bits on any number of
    processes. ``levels`` counts each categorical column's values (its most frequent level fills its gaps).
    ``targets(block)`` checks a block's targets; the ``regression`` ones (their names; none for classes) are
    standardised where ``scale_targets``, and one with the same value in every row is an error. A median
    needs every value: its columns' training cells are kept until the pass ends. ``rows``: training rows in all;
    ``place``: what messages call the training table; ``drop_first``: see :class:`Preprocessing`."""
    numeric = [f for f in features if f not in categories]
    medians = [f for f in numeric if strategies.get(f) == "median"]
    hint = IMPUTE_HINT if all(strategies.get(f, "none") == "none" for f in features) else NOT_IMPUTED_HINT
    mine: dict[int, tuple] = {}  # each piece this process read: its statistics and the cells of median columns
    error = None
    try:
        for piece, block in blocks:
            stats, target_stats, held = mine.setdefault(
                piece, (ColumnStats(len(numeric)), ColumnStats(len(regression)), {m: [] for m in medians}))
            found = ColumnStats(len(numeric))
            for j, column in enumerate(numeric):  # every row of the block checked, the kept rows counted
                cells = numbers(block.table, column, block.place)
                imputed = strategies.get(column, "none") != "none"
                check(np.where(np.isnan(cells), 0.0, cells) if imputed else cells, column, block.place, "feature",
                      hint)
                kept = cells if block.keep is None else cells[block.keep]
                found.set(j, ColumnStats.of([kept]))  # a column at a time: a block in memory is the whole table
                if column in held:
                    held[column].append(kept)
            stats.merge(found)
            y = targets(block)  # checked on every row, scaled or not: a bad target stops here
            if regression:
                target_stats.merge(ColumnStats.of([t if block.keep is None else t[block.keep] for t in y.T]))
    except InputError as err:
        error = str(err)
    pa.default_memory_pool().release_unused()  # what the pass decoded: pyarrow's pool would keep it
    parts = gather((error, mine))
    errors = [e for e, _ in parts if e]
    if errors:
        raise InputError(errors[0], everywhere=True)  # the same on every process
    merged: dict[int, tuple] = {}
    for _, part in parts:
        merged.update(part)
    stats, target_stats = ColumnStats(len(numeric)), ColumnStats(len(regression))
    for i in sorted(merged):
        stats.merge(merged[i][0])
        target_stats.merge(merged[i][1])
    for j, name in enumerate(regression):
        spread = np.sqrt(target_stats.m2[j] / max(target_stats.n[j], 1))
        if target_stats.n[j] > 1 and spread <= 1e-12 * abs(target_stats.mean[j]):  # rounding's deviations aside
            raise InputError(f"{place}: target column {name!r} has the value {plain(target_stats.mean[j])!r} in every "
                             "training row: there is nothing to learn", everywhere=True)
    out = Preprocessing(features, categories, drop_first=drop_first)
    mean = []
    for feature in features:
        strategy = strategies.get(feature, "none")
        if feature in categories:
            counter = levels.get(feature) or Counter()
            if strategy != "none" and counter:
                top = max(counter.values())
                out.fill[feature] = plain(min(v for v, c in counter.items() if c == top))
            mean += [0.0] * (out.columns[feature].stop - out.columns[feature].start)
            continue
        j = numeric.index(feature)
        if stats.n[j] == 0:
            raise InputError(f"{place}: feature column {feature!r} has no values in the training rows")
        if strategy == "median":  # the gaps filled with the median move the mean and the deviations
            cells = np.concatenate([part for i in sorted(merged) for part in merged[i][2][feature]])
            out.fill[feature] = float(np.nanmedian(cells))
            stats.set(j, ColumnStats.of([np.where(np.isnan(cells), out.fill[feature], cells)]))
        elif strategy != "none":  # filled at the mean: neither the mean nor the deviations move
            out.fill[feature] = float(stats.mean[j])
        mean.append(float(stats.mean[j]))
    if standardize:
        scales = stats.scale(rows)
        out.mean = mean
        out.scale = [1.0 if f in categories else float(scales[numeric.index(f)])
                     for f in features for _ in range(out.columns[f].stop - out.columns[f].start)]
    if scale_targets:
        out.target_mean, out.target_scale = target_stats.mean.tolist(), target_stats.scale(rows).tolist()
    return out


# --- applying ------------------------------------------------------------------------------------------------------
@dataclass
class Unseen:
    """Rows of a part whose value of a categorical column is not one of its levels: how many, the distinct
    values (in order of appearance) and the position of the first in the table."""

    rows: int
    shown: list
    first: int


def encode(state: Preprocessing, table: pa.Table | list[pa.Table], parts: dict[str, np.ndarray | None],
           place: Place, column_major: bool = False) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Unseen]]]:
    """The model inputs of the rows ``parts[name]`` (positions; ``None``: all) of ``table``: float32 ``(rows,
    inputs)`` per part, built a column at a time; parts given as the same array are encoded once. Every cell is
    filled and checked first. ``column_major``: each part is the transposed view of an ``(inputs, rows)`` array (a
    column is then one contiguous write). ``table`` in a list is consumed: let go column by column as it is
    encoded, so that its cells and the inputs are not both held whole. Also returns, per part and column, the
    rows whose level was not seen in training (encoded as all zeros)."""
    if isinstance(table, list):
        table, consume = table.pop(), True
    else:
        consume = False
    hint = FITTED_HINT if not state.fill else NOT_IMPUTED_HINT
    aliases = {name: next(n for n, r in parts.items() if r is rows) for name, rows in parts.items()}
    parts = {name: rows for name, rows in parts.items() if aliases[name] == name}
    width = len(state.names)
    out = {}
    for name, rows in parts.items():
        n = table.num_rows if rows is None else len(rows)
        out[name] = np.empty((width, n) if column_major else (n, width), dtype=np.float32)
    unseen: dict[str, dict[str, Unseen]] = {name: {} for name in parts}
    for feature, cols in state.columns.items():
        categorical = feature in state.categories
        cells = feature_cells(table, feature, categorical, place)
        if consume:  # hand the column's buffers back: pyarrow's allocator would keep them for itself
            table = table.drop_columns([feature])
            pa.default_memory_pool().release_unused()
        if categorical or not in_range(cells):  # else (the common case) nothing to fill or refuse
            cells = state.filled(feature, cells)
            check(cells, feature, place, "feature", hint)
        for name, rows in parts.items():
            picked = cells if rows is None else cells[rows]
            view = out[name] if column_major else out[name].T
            if not categorical:
                view[cols.start] = picked  # cast to float32 as it is copied
                continue
            encoded, mask = state.encode(feature, picked)
            view[cols] = encoded.T
            if mask.any():
                at = np.flatnonzero(mask)
                shown = (p if isinstance(p := plain(v), (str, int, float, bool)) else str(v) for v in picked[at])
                unseen[name][feature] = Unseen(len(at), list(dict.fromkeys(shown)),
                                               int(at[0] if rows is None else rows[at[0]]))
    inputs = {name: out[alias].T if column_major else out[alias] for name, alias in aliases.items()}
    return inputs, {name: unseen[alias] for name, alias in aliases.items()}

