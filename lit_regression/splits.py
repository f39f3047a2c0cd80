"""Which rows of a table train, which validate and which test: the one place where rows are split.

* In memory, :func:`split_rows`: scikit-learn's ``train_test_split`` with the seed, stratified by class where
  asked, as a scikit-learn user splits a table.
* Streamed, :func:`held_out`: a row's split from a hash of its global row index and the seed (:func:`uniform`),
  so that no process needs to hold a list of rows and every process draws the same split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lit_regression.errors import InputError, count

SPLITS = ("train", "val", "test")


def rows_taken(fraction: float, n: int) -> int:
    """Rows that a fraction of ``n`` takes, rounded up as scikit-learn's ``test_size`` is."""
    return math.ceil(round(fraction * n, 9)) if fraction > 0 else 0


def split_rows(n: int, val_fraction: float, test_fraction: float, seed: int, labels: np.ndarray | None,
               name: str) -> dict[str, np.ndarray]:
    """The rows ``0 .. n - 1`` of the table ``name`` (``data.path='...'``) in each split, in the order
    ``train_test_split`` draws them: test first, then validation out of the rest. ``labels`` (class indices)
    stratify both draws. ``test`` is the validation rows when ``test_fraction`` is 0."""
    from sklearn.model_selection import train_test_split

    n_test, n_val = rows_taken(test_fraction, n), rows_taken(val_fraction, n)
    if n - n_test - n_val < 1:
        raise InputError(f"data.val_fraction={val_fraction!r} and data.test_fraction={test_fraction!r} leave no "
                         f"training rows out of the {n} of {name}")
    rows = np.arange(n)
    try:
        rest, test = (rows, rows[:0]) if n_test == 0 else train_test_split(
            rows, test_size=n_test, random_state=seed, stratify=labels)
        train, val = (rest, rest[:0]) if n_val == 0 else train_test_split(
            rest, test_size=n_val, random_state=seed, stratify=None if labels is None else labels[rest])
    except ValueError as err:
        raise InputError(f"{name}: cannot split {count(n, 'row')} stratified by class ({err}); use more rows, other "
                         "fractions, or --data.stratify false") from None
    return {"train": train, "val": val, "test": test if n_test else val}


# --- the held-out split -------------------------------------------------------------------------------------------
def uniform(start: int, count: int, seed: int) -> np.ndarray:
    """A number in [0, 1) for each global row index ``start .. start + count - 1``: splitmix64 of the index and
    the seed, the same on every machine and process."""
    return uniform_at(np.arange(start, start + count, dtype=np.uint64), seed)


def uniform_at(rows: np.ndarray, seed: int) -> np.ndarray:
    """:func:`uniform`'s number of each global row index in ``rows`` (any order)."""
    with np.errstate(over="ignore"):
        z = np.asarray(rows).astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


@dataclass(frozen=True)
class Split:
    """Which rows of a source a split takes: those whose :func:`uniform` number lies in ``[low, high)``."""

    low: float = 0.0
    high: float = 1.0
    seed: int = 0

    @property
    def everything(self) -> bool:
        return self.low <= 0.0 and self.high >= 1.0

    def mask(self, start: int, count: int) -> np.ndarray | None:
        """The rows of ``start .. start + count - 1`` in the split; ``None`` when that is all of them."""
        if self.everything:
            return None
        return self._within(uniform(start, count, self.seed))

    def contains(self, rows: np.ndarray) -> np.ndarray:
        """Whether each global row index of ``rows`` is in the split."""
        if self.everything:
            return np.ones(len(rows), dtype=bool)
        return self._within(uniform_at(rows, self.seed))

    def _within(self, u: np.ndarray) -> np.ndarray:
        return (u >= self.low) & (u < self.high)

    def count(self, piece) -> int:
        """How many rows of a :class:`~lit_regression.tables.Piece` the split takes."""
        mask = self.mask(piece.start, piece.rows)
        return piece.rows if mask is None else int(mask.sum())


def held_out(val_fraction: float, test_fraction: float, seed: int, val_path: bool, test_path: bool) -> dict[str, Split]:
    """The rows of the training source in each split: ``[0, val)`` validation, ``[val, val + test)`` test, the
    rest training; a split that has its own path takes no rows of the training source."""
    val = 0.0 if val_path else val_fraction
    test = 0.0 if test_path else test_fraction
    return {"train": Split(val + test, 1.0, seed), "val": Split(0.0, val, seed), "test": Split(val, val + test, seed)}


def names_of(n: int, held: dict[str, np.ndarray]) -> np.ndarray:
    """The split of each of the ``n`` rows of a table, as text (``train``, ``val``, ``test``), from the rows that
    ``val`` and ``test`` hold (a ``test`` that is the validation rows, where none are held out for it, names
    them ``val``); the others are ``train``."""
    names = np.full(n, "train", dtype=object)
    for split in ("test", "val"):  # val last: test rows that are the validation rows stay val
        rows = held.get(split)
        if rows is not None and len(rows):
            names[rows] = split
    return names


