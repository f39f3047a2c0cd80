"""A table read whole into memory: the streamed case with one block, held."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from lit_regression.batches import tensor_batches
from lit_regression.cells import Place
from lit_regression.sources import Block, Decode, Holdout, TableSource
from lit_regression.splits import SPLITS, names_of, split_rows
from lit_regression.tables import UTF8, TextFormat, delimiter, read_table, where_row

CHUNK_ROWS = 65_536  # rows of each chunk of the pass over the training rows


class MemorySource(TableSource):
    """A CSV, TSV (any delimiter) or Parquet file read whole with pyarrow, or a table handed over in Python
    (``table``). The training table is split by scikit-learn (:func:`~lit_regression.splits.split_rows`); the
    splits are decoded together when a loader first asks, the table let go column by column as it is encoded
    (read again only if its rows are predicted), and served as :class:`~lit_regression.batches.TensorBatches`.

    Args:
        path, name, holdout, whole: as :class:`~lit_regression.sources.TableSource`.
        text: how a text table is written.
        targets: the targets of every row of a table, checked (class indices for labels), asked when the rows
            are split: a bad target cell stops the command before anything else; the labels stratify the split
            where ``holdout.stratify``.
        batch_size, shuffle, seed: the batches; ``on_device``: keep the tensors on the accelerator.
        table: the rows themselves (then ``path`` only names them in messages).
    """

    sample_is_whole = True

    def __init__(self, path: str, name: str, holdout: Holdout, whole: str | None = None, *, text: TextFormat = UTF8,
                 targets: Callable[[pa.Table, Place], np.ndarray] | None = None,
                 batch_size: int | None = None, shuffle: bool = False, seed: int = 42, on_device: bool = False,
                 table: pa.Table | None = None) -> None:
        super().__init__(path, name, holdout, whole)
        self.text, self.targets = text, targets
        self.batch_size, self.shuffle, self.seed, self.on_device = batch_size, shuffle, seed, on_device
        self._table = table
        self.num_rows = table.num_rows if table is not None else None  # known once read
        self._given = table is not None  # rows handed over: never read again
        self._splits: dict[str, np.ndarray] | None = None
        self._columns: dict[str, Any] | None = None  # the predicted rows' columns as given

    def table(self) -> pa.Table:
        """The table (read once, and again after its rows were encoded, if they are asked for again)."""
        if self._table is None:
            self._table = read_table(self.path, self.name, self.text)
            self.num_rows = self._table.num_rows
        return self._table

    @property
    def column_names(self) -> list[str]:
        return self.table().column_names

    def sample(self) -> pa.Table:
        return self.table()

    def _place(self) -> Place:
        if self.in_python:  # counted from 0, as the `row` column of the predictions counts them
            return Place(self.name, self.path, lambda i: f"row {i}")
        path, sep = self.path, delimiter(self.path, self.text.sep)
        return Place(self.name, path, lambda i: where_row(path, i, sep))

    def splits(self) -> dict[str, np.ndarray]:
        """The row indices of each split (``predict``, or a split with its own table: all rows)."""
        if self._splits is None:
            n = self.table().num_rows
            if self.whole is not None:
                self._splits = {self.whole: np.arange(n)}
            else:
                h = self.holdout
                targets = self.targets(self.table(), self._place()) if self.targets is not None else None
                labels = targets[:, 0].astype(np.int64) if targets is not None and h.stratify else None
                self._splits = split_rows(n, h.val_fraction, h.test_fraction, h.seed, labels, self.place)
        return self._splits

    def rows(self, split: str) -> int:
        return len(self.positions(split))

    def split_of(self, rows: np.ndarray) -> np.ndarray | None:
        if self.whole is not None:
            return None
        held = self.splits()
        test = held["test"] if self.holdout.test_fraction else None  # else test is the validation rows
        n = self.num_rows if self.num_rows is not None else self.table().num_rows
        return names_of(n, {"val": held["val"], "test": test})[rows]

    def positions(self, split: str) -> np.ndarray:
        if split == "predict" and self.whole is None:
            return np.arange(self.num_rows if self.num_rows is not None else self.table().num_rows)
        return self.splits()[self.resolved(split)]

    def blocks(self, split: str | None, columns: list[str]) -> Iterator[Block]:
        table = self.table().select(columns)
        keep = None if self.takes(split) else self.positions(split)
        yield Block(table, keep, np.arange(table.num_rows) if keep is None else keep, self._place())

    def shared_blocks(self, columns: list[str], trainer) -> Iterator[tuple[int, Block]]:
        """Every process holds the whole table: each reads all of it."""
        for block in self.blocks("train", columns):
            yield 0, block

    def gather(self, value: Any, trainer) -> list[Any]:
        return [value]

    def tensors_of(self, split: str, decode: Decode, columns: list[str]) -> tuple[torch.Tensor, ...] | None:
        """The tensors of ``split``: the training splits are decoded together, the table let go as they are."""
        if split not in self.held:
            names = ["predict"] if split == "predict" else [s for s in SPLITS if s in self.splits()]
            every = np.arange(self.table().num_rows)
            parts = {name: (None, every) if self.takes(name) else (self.positions(name),) * 2 for name in names}
            place = self._place()
            tables = [self.table().select(columns)]  # consumed by decode, a column at a time
            if split != "predict" and not self._given:
                self._table = None  # let go: read again only if its rows are predicted
            for name, tensors in decode(tables, parts, place, False).items():
                if name == "predict" and len(tensors) > 2:  # the rows' own columns: beside the predictions
                    tensors, given = tensors[:2], tensors[2]
                    self._columns = {c: given[c] for c in given.column_names}
                self.held[name] = tensors if name == "predict" else tensors[:2]
            pa.default_memory_pool().release_unused()  # the table's last columns: pyarrow's pool would keep them
        return self.held.get(split)

    def loader(self, split: str, decode: Decode, columns: list[str], trainer, train: bool = False):
        tensors = self.tensors_of(split, decode, columns)
        if tensors is None or len(tensors[0]) == 0:
            return []
        if self.on_device and trainer is not None:
            tensors = self.held[split] = tuple(t.to(trainer.strategy.root_device) for t in tensors)
        return tensor_batches(tensors, self.batch_size, train and self.shuffle, self.seed, trainer, train)

    def chunks(self, decode: Decode, columns: list[str]) -> Callable[[], Iterator[tuple]]:
        x, y = self.tensors_of("train", decode, columns)
        return lambda: ((x[i:i + CHUNK_ROWS], y[i:i + CHUNK_ROWS]) for i in range(0, len(x), CHUNK_ROWS))

    def given(self) -> dict[str, Any] | None:
        return self._columns

