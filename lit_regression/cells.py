"""Checking a table's cells: the one place where cells become numbers, labels and targets, or an error that names
the file, the column, the row and the value (:class:`~lit_regression.errors.InputError`).

Every reader hands its rows here as pyarrow columns with a :class:`Place`, which says what messages call the
table and how they name a row: a data row and line of a text file, or a row of a Parquet row group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from lit_regression.errors import InputError
from lit_regression.tables import (UTF8, TextFormat, as_float, is_number, is_text, listing, mostly_numeric, number_hint,
                                   type_name, values)

TARGET_HINT = "fill in or drop that row"
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the largest number a model input can hold


def missing(cells: np.ndarray) -> np.ndarray:
    """Empty cells: NaN in a float column, ``None`` (or NaN) in an object column."""
    if cells.dtype.kind == "f":
        return np.isnan(cells)
    import pandas as pd

    return pd.isna(cells)


def place_name(name: str, path: str) -> str:
    """How messages call a table: ``data.path='t.csv'``; rows handed over in Python (``path == name``) are named
    alone, ``rows``."""
    return name if path == name else f"{name}={path!r}"


@dataclass(frozen=True)
class Place:
    """Rows read from ``path``, the value of the argument ``name`` (``data.path``); ``where(i)`` names row ``i`` of
    what was read (``data row 3 (line 4 of the file)``, ``'part-0.parquet', row group 2, row 22 (global row
    150)``)."""

    name: str
    path: str
    where: Callable[[int], str]

    def __str__(self) -> str:
        return place_name(self.name, self.path)


def numbers(table: pa.Table, column: str, place: Place, what: str = "feature") -> np.ndarray:
    """A numeric column as float64, NaN for empty cells; a text cell that is not a number is an error naming the
    file, the column and the row."""
    data = table[column]
    if is_number(data) or pa.types.is_boolean(data.type):
        return as_float(data)
    if not is_text(data):
        raise InputError(f"{place}: {what} column {column!r} holds {type_name(data)}; {what} columns must hold numbers")
    import pandas as pd

    raw = pd.Series(data.to_numpy(zero_copy_only=False))
    parsed = pd.to_numeric(raw, errors="coerce")
    bad = np.flatnonzero((parsed.isna() & raw.notna()).to_numpy())
    if len(bad):
        i = int(bad[0])
        raise InputError(f"{place}: {what} column {column!r} has a non-numeric value {str(raw.iloc[i])!r} at "
                         f"{place.where(i)}; {what} columns must hold numbers only")
    return parsed.to_numpy(dtype=np.float64, na_value=np.nan)


def in_range(cells: np.ndarray) -> bool:
    """Whether every cell of a float column is a finite number that float32 holds (NaN is not; a NaN makes the
    minimum and maximum NaN). Two passes without a temporary array: it runs on every column encoded."""
    return bool(len(cells) == 0 or (-FLOAT32_MAX <= cells.min() and cells.max() <= FLOAT32_MAX))


def features(table: pa.Table, column: str, categorical: bool, place: Place) -> np.ndarray:
    """A feature column's cells: float64 for a numeric feature, the values for a categorical one."""
    return values(table[column]) if categorical else numbers(table, column, place)


def check(cells: np.ndarray, column: str, place: Place, what: str, hint: str) -> None:
    """Refuse an empty (or NaN) cell, with ``hint`` (what to do), and a non-finite number."""
    gaps = missing(cells)
    if gaps.any():
        i = int(np.flatnonzero(gaps)[0])
        raise InputError(f"{place}: {what} column {column!r} has an empty (or NaN) cell at {place.where(i)}; {hint}")
    if cells.dtype.kind == "f" and not in_range(cells):
        i = int(np.flatnonzero(~(np.abs(cells) <= FLOAT32_MAX))[0])
        if np.isfinite(cells[i]):
            raise InputError(f"{place}: {what} column {column!r} has the value {cells[i]:g} at {place.where(i)}, "
                             f"beyond what a float32 holds (+-{FLOAT32_MAX:.3g}); rescale the column, or fix or "
                             "drop that row")
        raise InputError(f"{place}: {what} column {column!r} has the non-finite value {cells[i]} at "
                         f"{place.where(i)}; fill in or drop that row")


def key(label: Any) -> Any:
    """Labels compare as values: 1, 1.0 and numpy's 1 are one label; text stays text."""
    if isinstance(label, (bool, np.bool_)):
        return bool(label)
    if isinstance(label, (int, float, np.integer, np.floating)):
        return float(label)
    return label


def no_empty_label(table: pa.Table, column: str, place: Place) -> None:
    """Refuse an empty (or NaN) label, naming its row."""
    data = table[column]
    if data.null_count:
        i = int(np.flatnonzero(data.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(f"{place}: target column {column!r} has an empty (or NaN) label at {place.where(i)}")


def targets(table: pa.Table, names: list[str], classes: list | None, place: Place, text: TextFormat = UTF8
            ) -> np.ndarray:
    """The targets of every row: float64 ``(rows, targets)`` for regression (``classes`` ``None``), or the class
    index of each label ``(rows, 1)``; every cell is checked (``text``: how the table was read, for the hint on
    numbers it could not read)."""
    if classes is None:
        out = np.empty((table.num_rows, len(names)), dtype=np.float64)
        for j, column in enumerate(names):
            data = table[column]
            hint = number_hint(data, text)
            if hint is not None:
                raise InputError(f"{place}: target column {column!r} {hint}")
            if is_text(data) and not mostly_numeric(data):
                sample = listing(data.drop_null().unique().to_pylist()[:3])
                raise InputError(f"{place}: target column {column!r} holds text ({sample}, ...), which a "
                                 "regression model cannot predict; for classes use --model LogisticRegression")
            out[:, j] = numbers(table, column, place, "target")
            check(out[:, j], column, place, "target", TARGET_HINT)
        return out
    import pyarrow.compute as pc

    column = names[0]
    no_empty_label(table, column, place)
    data = table[column]
    found = pc.unique(data)  # each distinct label looked up once, then every row by its position among them
    index = {key(c): i for i, c in enumerate(classes)}
    lookup = np.array([index.get(key(label), -1) for label in found.to_pylist()] + [-1], dtype=np.float64)
    position = pc.fill_null(pc.index_in(data, value_set=found), len(found))  # NaN matches no position: -1
    out = lookup[position.to_numpy(zero_copy_only=False)]
    unknown = np.flatnonzero(out < 0)
    if len(unknown):
        i = int(unknown[0])
        raise InputError(f"{place}: label {data[i].as_py()!r} in column {column!r} at {place.where(i)} is not one of "
                         f"data.classes={classes!r}")
    return out.reshape(-1, 1)
