"""Where a table's rows come from: one interface, :class:`TableSource`, with two implementations.

* :class:`~lit_regression.sources.memory.MemorySource`: a table read whole into memory (CSV, TSV, Parquet, or
  rows handed over in Python), split by scikit-learn, encoded once and served from tensors.
* :class:`~lit_regression.sources.parquet.ParquetSource`: Parquet files read from disk a row group at a time
  every epoch, split by a hash of the row index, shared out to the processes by ranges.

The datamodule asks a source the same questions either way: its columns, the rows of each split (counted), the
rows of a split block by block (for the levels of the categories and for one pass of statistics), the batches of
a split for this process, the rows to predict and a one-line description. What a source holds in memory is its
own business: a table in memory is the streamed case with one block, held.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from lit_regression.cells import Place, place_name
from lit_regression.errors import InputError
from lit_regression.tables import listing


@dataclass
class Block:
    """Rows read from a table: ``table`` (pyarrow) as read, ``keep`` the positions of the rows that the reader
    asked for (``None``: all; in the order wanted), ``rows`` their row indices in the whole table (global across
    streamed files) and ``place`` what messages call them."""

    table: pa.Table
    keep: np.ndarray | None
    rows: np.ndarray
    place: Place


@dataclass(frozen=True)
class Holdout:
    """How the training table's rows are held out (the data module's arguments): a split with its own files
    (``val_path``, ``test_path``) takes no rows of it."""

    val_fraction: float = 0.2
    test_fraction: float = 0.0
    seed: int = 42
    stratify: bool = True
    val_path: bool = False
    test_path: bool = False


# ``decode(table, parts, place, column_major)``: ``parts`` maps a name to ``(keep, rows)`` (as :class:`Block`); the
# result maps it to the tensors of those rows, the inputs laid out a column at a time where ``column_major``. A
# ``table`` in a list is consumed as it is encoded (see :func:`~lit_regression.preprocessing.encode`)
Decode = Callable[[Any, dict[str, tuple[np.ndarray | None, np.ndarray]], Place, bool], dict[str, tuple]]


class TableSource:
    """The rows of one table argument (``data.path``, or ``data.val_path``, ``data.test_path``,
    ``data.predict_path``). The training table splits its rows into ``train``, ``val`` and ``test``; a table
    given for one split alone (``whole``) serves all its rows to that split.

    Args:
        path: what the argument holds; ``name``: the argument (``data.path``), for messages.
        holdout: how the training table's rows are held out.
        whole: the split that this table serves whole; ``None``: the training table.
    """

    sample_is_whole = False  # whether sample() holds every row

    def __init__(self, path: str, name: str, holdout: Holdout, whole: str | None = None) -> None:
        self.path, self.name, self.holdout, self.whole = path, name, holdout, whole
        self.held: dict[str, tuple] = {}  # the tensors of each split held in memory, once decoded (streamed: none)

    @property
    def place(self) -> str:
        return place_name(self.name, self.path)

    @property
    def in_python(self) -> bool:
        """Rows handed over in Python (``predict(rows)``, the server's requests), not a file."""
        return self.path == self.name

    def resolved(self, split: str) -> str:
        """``test`` without rows of its own runs on the validation rows."""
        h = self.holdout
        return "val" if split == "test" and not h.test_path and not h.test_fraction else split

    def takes(self, split: str | None) -> bool:
        """Whether ``split`` takes all rows of this table (``None``: every row)."""
        return split is None or self.whole is not None or split == "predict"

    def require(self, columns: list[str], what: str) -> None:
        """Refuse a table without all of ``columns`` (``what``: feature, target, id), naming its columns."""
        names = self.column_names
        absent = [c for c in columns if c not in names]
        if absent:
            plural = "s" if len(absent) > 1 else ""
            raise InputError(f"{self.place} has no {what} column{plural} {listing(absent)}; its columns are: "
                             f"{listing(names)}")

    # --- what every source answers ----------------------------------------------------------------------------
    @property
    def column_names(self) -> list[str]:
        raise NotImplementedError

    def sample(self) -> pa.Table:
        """Rows enough to tell each column's kind (numbers, text, true/false) and, in memory, whether it has
        values at all."""
        raise NotImplementedError

    def rows(self, split: str) -> int:
        """Rows of ``split``, all processes together."""
        raise NotImplementedError

    def positions(self, split: str) -> np.ndarray:
        """The row indices of ``split``, in the order it takes them."""
        raise NotImplementedError

    def blocks(self, split: str | None, columns: list[str]) -> Iterator[Block]:
        """``columns`` of the rows of ``split`` (``None``: every row), block by block, on this process alone."""
        raise NotImplementedError

    def shared_blocks(self, columns: list[str], trainer) -> Iterator[tuple[int, Block]]:
        """This process's share of the training rows, ``(piece, block)``, for one pass of statistics whose
        results :meth:`gather` collects from every process."""
        raise NotImplementedError

    def gather(self, value: Any, trainer) -> list[Any]:
        raise NotImplementedError

    def loader(self, split: str, decode: Decode, columns: list[str], trainer, train: bool = False):
        """The batches of ``split`` for this process (``[]`` without rows): ``decode`` turns read rows into
        tensors; ``columns`` are the ones it reads."""
        raise NotImplementedError

    def chunks(self, decode: Decode, columns: list[str]) -> Callable[[], Iterator[tuple]]:
        """One pass over all training rows, in order, on this process alone, as ``(x, y)`` chunks."""
        raise NotImplementedError

    def split_of(self, rows: np.ndarray) -> np.ndarray | None:
        """The split (``train``, ``val``, ``test``) of each of ``rows`` (row indices of this table), as text;
        ``None`` for a table served whole to one split (its rows were held out of no split)."""
        return None

    def given(self) -> dict[str, Any] | None:
        """The predicted rows' columns as given, to stand beside the predictions, if this source holds them
        (otherwise the predict batches carry them)."""
        return None

    def describe(self, batch_size: int | None, shuffle: bool, held_out: dict[str, int]) -> str | None:
        """One line on how the rows are read, split and batched, where there is more to say than the columns;
        ``held_out``: the rows of ``val`` and ``test``, from their own tables where they have them."""
        return None

    def prepare(self, stage: str) -> None:
        """Check, before the rows are read, what ``stage`` will need (a scratch folder)."""
