"""Parquet files read from disk a row group at a time every epoch, never held whole (``--data.streaming true``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from lit_regression.batches import assign, process_of
from lit_regression.cells import Place
from lit_regression.errors import InputError, count
from lit_regression.sources import Block, Decode, Holdout, TableSource
from lit_regression.splits import Split, held_out, names_of
from lit_regression.streaming import DecodedCache, StreamBatches, gathered
from lit_regression.tables import ParquetFiles, Piece


def where(piece: Piece, offset: int) -> Callable[[int], str]:
    """``where(i)`` names row ``i`` of the block read at ``offset`` of ``piece``: file, row group, row in the group
    and global row."""
    return lambda i: f"{piece.where()}, row {offset + i} (global row {piece.start + offset + i})"


class ParquetSource(TableSource):
    """The Parquet files of ``path`` (:class:`~lit_regression.tables.ParquetFiles`), each piece (row group) read
    when its rows are wanted. The training files' rows are held out by a hash of their global row index
    (:func:`~lit_regression.splits.held_out`); the batches are :class:`~lit_regression.streaming.StreamBatches`.

    Args:
        path, name, holdout, whole: as :class:`~lit_regression.sources.TableSource`.
        batch_size, shuffle, seed: the batches; ``shuffle_buffer`` rows are shuffled together.
        cache_dir: where each process keeps the decoded training and validation rows (``None``: decode every
            epoch).
        loaders: the data module's streamed loaders by split, shared by its sources: a training epoch that
            starts closes the others' unfinished iterations.
    """

    def __init__(self, path: str, name: str, holdout: Holdout, whole: str | None = None, *, batch_size: int,
                 shuffle: bool = False, seed: int = 42, shuffle_buffer: int = 131_072, cache_dir: str | None = None,
                 loaders: dict[str, StreamBatches] | None = None) -> None:
        super().__init__(path, name, holdout, whole)
        self.files = ParquetFiles(path, name)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.shuffle_buffer, self.cache_dir = shuffle_buffer, cache_dir
        self._loaders = loaders if loaders is not None else {}
        self._counts: dict[str, list[int]] = {}
        self._caches: dict[str, DecodedCache] = {}  # each split's decoded rows, kept across its loaders
        self._sample: pa.Table | None = None  # read once: the roles and the checks before training ask for it

    @property
    def column_names(self) -> list[str]:
        return self.files.column_names

    def sample(self) -> pa.Table:
        if self._sample is None:
            self._sample = self.files.sample()
        return self._sample

    def split(self, split: str | None) -> Split:
        """Which rows of the files ``split`` takes."""
        if self.takes(split):
            return Split()
        h = self.holdout
        return held_out(h.val_fraction, h.test_fraction, h.seed, h.val_path, h.test_path)[self.resolved(split)]

    def counts(self, split: str) -> list[int]:
        """Rows of each piece in the split (from the row index alone: nothing is read)."""
        split = self.resolved(split)
        if split not in self._counts:
            rows = self.split(split)
            self._counts[split] = [rows.count(p) for p in self.files.pieces]
        return self._counts[split]

    def rows(self, split: str) -> int:
        return sum(self.counts(split))

    def split_of(self, rows: np.ndarray) -> np.ndarray | None:
        if self.whole is not None:
            return None
        held = {split: np.flatnonzero(self.split(split).contains(rows)) for split in ("val", "test")
                if self.rows(split) and (split == "val" or self.resolved(split) == split)}
        return names_of(len(rows), held)

    def positions(self, split: str) -> np.ndarray:
        mask = self.split(split).mask(0, self.files.num_rows)
        return np.arange(self.files.num_rows) if mask is None else np.flatnonzero(mask)

    def _blocks(self, piece: Piece, mask: np.ndarray | None, columns: list[str]) -> Iterator[Block]:
        """The piece's ``columns`` block by block, with the positions of the rows in ``mask`` (``None``: all)."""
        for offset, table in self.files.read(piece, columns):
            keep = None if mask is None else np.flatnonzero(mask[offset:offset + table.num_rows])
            rows = np.arange(piece.start + offset, piece.start + offset + table.num_rows)
            yield Block(table, keep, rows if keep is None else rows[keep],
                        Place(self.name, self.path, where(piece, offset)))

    def blocks(self, split: str | None, columns: list[str]) -> Iterator[Block]:
        rows = self.split(split)
        for piece in self.files.pieces:
            yield from self._blocks(piece, rows.mask(piece.start, piece.rows), columns)

    def shared_blocks(self, columns: list[str], trainer) -> Iterator[tuple[int, Block]]:
        """Whole pieces for each process (:func:`~lit_regression.batches.assign`): merged in piece order, their
        statistics are the same bits on any number of processes."""
        rank, world = process_of(trainer)
        train = self.split("train")
        for i in assign(self.counts("train"), world)[rank]:
            piece = self.files.pieces[i]
            for block in self._blocks(piece, train.mask(piece.start, piece.rows), columns):
                yield i, block

    def gather(self, value: Any, trainer) -> list[Any]:
        return gathered(value, trainer)

    def loader(self, split: str, decode: Decode, columns: list[str], trainer, train: bool = False):
        counts = self.counts(split)
        if not sum(counts):
            return []
        rows = self.split(split)
        rank, world = process_of(trainer)

        # the inputs column-major: each column one contiguous write, the batches copied out of the transposed view
        def chunks(piece: Piece, mask: np.ndarray | None) -> Iterator[tuple]:
            for block in self._blocks(piece, mask, columns):
                if len(block.rows):
                    yield decode(block.table, {"": (block.keep, block.rows)}, block.place, True)[""]

        def close_the_others() -> None:  # a training epoch starts: no other split is being read any more
            for other, loader in self._loaders.items():
                if other != split:
                    loader.close()

        loader = StreamBatches(self.files.pieces, counts, chunks, lambda p: rows.mask(p.start, p.rows),
                               batch_size=self.batch_size, shuffle=train and self.shuffle, window=self.shuffle_buffer,
                               seed=self.seed, rank=rank, world_size=world, equal=train, every_process=True,
                               name=self.place, cache=self._cache(split, trainer),
                               on_start=close_the_others if train else None)
        self._loaders[split] = loader
        return loader

    def chunks(self, decode: Decode, columns: list[str]) -> Callable[[], Iterator[tuple]]:
        def passes() -> Iterator[tuple]:
            for block in self.blocks("train", columns):
                if len(block.rows):
                    x, y, _ = decode(block.table, {"": (block.keep, block.rows)}, block.place, True)[""]
                    yield x, y
        return passes

    def describe(self, batch_size: int | None, shuffle: bool, held_out: dict[str, int]) -> str:
        h, files = self.holdout, self.files
        parts = [f"{self.rows('train'):,} training"]
        for split, own, fraction in (("val", h.val_path, h.val_fraction), ("test", h.test_path, h.test_fraction)):
            word = "validation" if split == "val" else "test"
            if own:
                parts.append(f"{held_out[split]:,} {word} (data.{split}_path)")
            elif fraction > 0:
                parts.append(f"{held_out[split]:,} {word}")
        shuffled = f", shuffled within windows of {count(self.shuffle_buffer, 'row', spec=',')}" if shuffle else ""
        hashed = (h.val_fraction and not h.val_path) or (h.test_fraction and not h.test_path)
        how = " (held out by a hash of the row index and the seed)" if hashed else ""
        n, groups = len(files.files), len(files.pieces)
        read = ("decoded in the first epoch and read back from a scratch file in data.cache_dir="
                f"{self.cache_dir!r} in the later ones" if self.cache_dir is not None else "read from disk every epoch")
        return (f"Streaming {self.name}: {count(files.num_rows, 'row', spec=',')} in {count(n, 'file')} "
                f"({count(groups, 'row group')}), {read}: {', '.join(parts)} rows{how}; "
                f"batches of {count(batch_size, 'row', spec=',')}{shuffled}")

    def prepare(self, stage: str) -> None:
        """data.cache_dir, if given, is a folder this process can write in (checked before a fit or a validation
        reads the rows: predicting never uses it, so a checkpoint loads without it)."""
        if stage in ("fit", "validate"):
            self._check_cache_dir()

    def _check_cache_dir(self) -> None:
        folder = self.cache_dir
        if folder is not None and not (os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)):
            raise InputError(f"data.cache_dir={folder!r} is invalid: expected a folder that exists and can be written")

    def _cache(self, split: str, trainer) -> DecodedCache | None:
        """The decoded rows of a split read every epoch (training, validation) with data.cache_dir: one per split,
        taken over by each new loader of it (so the file is written once however often Lightning asks)."""
        if self.cache_dir is None or split not in ("train", "val"):
            return None
        if split not in self._caches:
            self._check_cache_dir()
            rank, world = process_of(trainer)
            sharing = getattr(trainer, "num_devices", 1) if trainer is not None else 1  # processes on this machine
            self._caches[split] = DecodedCache(self.cache_dir, self.place, sharing, rank if world > 1 else None)
        return self._caches[split]
