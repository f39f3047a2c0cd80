"""The streaming half of :class:`~lit_regression.datamodules.TableDataModule` (``--data.streaming true``): Parquet
files read from disk in record batches every epoch (see :mod:`lit_regression.streaming`)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import torch

from lit_regression.batches import process_of
from lit_regression.errors import InputError
from lit_regression.preprocessing import Preprocessing, fit_levels, plain
from lit_regression.streaming import (ColumnStats, DecodedCache, ParquetSource, Piece, Split, StreamBatches, assign,
                                      gathered, held_out)
from lit_regression.tables import values

SOURCES = {"train": ("path", "data.path"), "val": ("val_path", "data.val_path"),
           "test": ("test_path", "data.test_path"), "predict": ("predict_path", "data.predict_path")}


class Block(NamedTuple):
    """Rows read from a piece: ``table`` is the block as read (from row ``offset`` of the piece), ``keep`` the
    positions of the rows a split takes (``None``: all) and ``rows`` their global row indices."""

    piece: Piece
    offset: int
    table: pa.Table
    rows: np.ndarray
    keep: np.ndarray | None


class TableStream:
    """What :class:`TableDataModule` does differently when streaming: the sources, the split, the two passes
    over the training rows (categories and labels when the columns are first needed, the numeric statistics when
    ``fit`` starts) and the loaders. ``datamodule`` gives the arguments and the encoding of cells."""

    def __init__(self, datamodule) -> None:
        self.dm = datamodule
        self._sources: dict[str, ParquetSource] = {}
        self._counts: dict[str, list[int]] = {}
        self.levels: dict[str, Counter] | None = None  # value counts of the categorical columns (training rows)
        self.labels: list | None = None  # distinct labels of the label column (all rows)
        self._loaders: dict[str, StreamBatches] = {}  # the loader of each split, last made
        self._caches: dict[str, DecodedCache] = {}  # data.cache_dir: each split's decoded rows, kept across loaders

    # --- sources and splits -------------------------------------------------------------------------------------
    def source(self, split: str) -> ParquetSource:
        """The files a split reads: its own path where given, else the training path."""
        h = self.dm.hparams
        arg, name = SOURCES[split]
        if h.get(arg) is None:
            arg, name = SOURCES["train"]
        if arg not in self._sources:
            self._sources[arg] = ParquetSource(h[arg], name)
        return self._sources[arg]

    def split(self, split: str) -> Split:
        """The rows of :meth:`source` that ``split`` takes."""
        h = self.dm.hparams
        split = self._resolved(split)
        if split == "predict" or (split != "train" and h.get(SOURCES[split][0]) is not None):
            return Split()
        return held_out(h.val_fraction, h.test_fraction, self.dm.seed, h.val_path is not None,
                        h.test_path is not None)[split]

    def _resolved(self, split: str) -> str:
        """``test`` without rows of its own runs on the validation rows, as in memory."""
        h = self.dm.hparams
        return "val" if split == "test" and h.test_path is None and not h.test_fraction else split

    def counts(self, split: str) -> list[int]:
        """Rows of each piece in the split (from the row index alone: nothing is read)."""
        split = self._resolved(split)
        if split not in self._counts:
            source, rows = self.source(split), self.split(split)
            self._counts[split] = [rows.count(p) for p in source.pieces]
        return self._counts[split]

    def n_rows(self, split: str) -> int:
        return sum(self.counts(split))

    @staticmethod
    def where(piece: Piece, offset: int) -> Callable[[int], str]:
        """``where(i)`` names row ``i`` of the block read at ``offset`` of ``piece``: file, row group, row in the
        group and global row."""
        return lambda i: f"{piece.where()}, row {offset + i} (global row {piece.start + offset + i})"

    @staticmethod
    def blocks(source: ParquetSource, piece: Piece, mask: np.ndarray | None,
               columns: list[str]) -> Iterator[Block]:
        """The piece's ``columns`` block by block, with the positions of the rows in ``mask`` (``None``: all)."""
        for offset, table in source.read(piece, columns):
            keep = None if mask is None else np.flatnonzero(mask[offset:offset + table.num_rows])
            rows = np.arange(piece.start + offset, piece.start + offset + table.num_rows)
            yield Block(piece, offset, table, rows if keep is None else rows[keep], keep)

    def _read(self, source: ParquetSource, rows: Split, pieces: list[int], columns: list[str]) -> Iterator[Block]:
        """The blocks of ``pieces`` of ``source``, with the positions of their ``rows``."""
        for i in pieces:
            piece = source.pieces[i]
            yield from self.blocks(source, piece, rows.mask(piece.start, piece.rows), columns)

    def describe(self) -> str:
        """One line: what is streamed and how it is split and batched."""
        source, h = self.source("train"), self.dm.hparams
        files = len(source.files)
        parts = [f"{self.n_rows('train'):,} training"]
        for split, arg in (("val", "val_path"), ("test", "test_path")):
            if h.get(arg) is not None:
                parts.append(f"{self.n_rows(split):,} {'validation' if split == 'val' else 'test'} (data.{arg})")
            elif (h.test_fraction if split == "test" else h.val_fraction) > 0:
                parts.append(f"{self.n_rows(split):,} {'validation' if split == 'val' else 'test'}")
        shuffled = f", shuffled within windows of {h.shuffle_buffer:,} rows" if self.dm.shuffle else ""
        hashed = (h.val_fraction and h.val_path is None) or (h.test_fraction and h.test_path is None)
        how = " (held out by a hash of the row index and the seed)" if hashed else ""
        groups = len(source.pieces)
        read = ("decoded in the first epoch and read back from a scratch file in data.cache_dir="
                f"{h.cache_dir!r} in the later ones" if h.cache_dir is not None else "read from disk every epoch")
        return (f"Streaming data.path: {source.num_rows:,} rows in {files} file{'s' * (files > 1)} "
                f"({groups} row group{'s' * (groups > 1)}), {read}: {', '.join(parts)} rows{how}; "
                f"batches of {self.dm.batch_size:,} rows{shuffled}")

    # --- the first pass: categories and labels ------------------------------------------------------------------
    def scan(self, categorical: list[str], label: str | None, limit: int) -> None:
        """Count the values of the ``categorical`` columns over the training rows (a column stops being counted
        past ``limit`` distinct values) and collect the distinct labels over all rows of the training path.
        Every process reads these columns alone; a table without them is not read at all."""
        counts = {c: Counter() for c in categorical}
        labels: set = set()
        source = self.source("train")
        train = self.split("train")
        columns = list(dict.fromkeys(categorical + ([label] if label else [])))
        if columns:
            everything = list(range(len(source.pieces)))
            for block in self._read(source, Split() if label else train, everything, columns):
                piece, offset, table = block.piece, block.offset, block.table
                if label:
                    column = table[label]
                    if column.null_count:
                        i = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
                        raise InputError(f"data.path={source.path!r}: target column {label!r} has an empty label at "
                                         f"{self.where(piece, offset)(i)}")
                    labels.update(column.unique().to_pylist())
                    mask = train.mask(piece.start + offset, table.num_rows)
                    if mask is not None:
                        table = table.filter(pa.array(mask))
                elif block.keep is not None:
                    table = table.take(pa.array(block.keep))
                for c in categorical:
                    if len(counts[c]) <= limit:  # pyarrow counts; a column past the limit is not counted on
                        found = table[c].value_counts()
                        counts[c].update(dict(zip(values(found.field("values")).tolist(),
                                                  found.field("counts").to_pylist())))
        for counter in counts.values():
            for empty in [v for v in counter if v is None or (isinstance(v, float) and np.isnan(v))]:
                del counter[empty]
        self.levels = {**(self.levels or {}), **counts}
        if label:
            self.labels = sorted(labels, key=lambda v: (isinstance(v, str), v))

    def categories(self, column: str) -> list:
        """The sorted distinct values of a categorical column in the training rows, as scikit-learn sorts them."""
        counter = self.levels[column]
        return fit_levels(np.array(list(counter), dtype=object)) if counter else []

    # --- the second pass: numeric statistics --------------------------------------------------------------------
    def preprocessing(self, features: list[str], categories: dict[str, list], strategies: dict[str, str],
                      standardize: bool, cells: Callable, check: Callable, targets: Callable,
                      scale_targets: bool) -> Preprocessing:
        """Imputation values, means and scales of the numeric features (and targets), exact: each process reads
        its share of the pieces, the pieces' statistics are gathered and merged in piece order. ``cells(table,
        column, where)`` gives a feature's float64 cells, ``check(cells, column, where)`` refuses empty or
        non-finite ones, ``targets(table, where)`` gives the float64 targets (checked), whose mean and scale are
        fitted when ``scale_targets``."""
        trainer = self.dm.trainer
        rank, world = process_of(trainer)
        numeric = [f for f in features if f not in categories]
        uncounted = [f for f in categories if strategies.get(f, "none") != "none" and f not in (self.levels or {})]
        if uncounted:  # categories given as arguments: their most frequent level is still to be counted
            self.scan(uncounted, None, max(len(categories[f]) for f in uncounted))
        width = len(self.dm.target_names)
        mine: dict[int, tuple[ColumnStats, ColumnStats]] = {}  # each piece of this process's share: its statistics
        error = None
        try:
            source, train = self.source("train"), self.split("train")
            for i in assign(self.counts("train"), world)[rank]:
                piece = source.pieces[i]
                stats, target_stats = mine[i] = ColumnStats(len(numeric)), ColumnStats(width)
                for block in self.blocks(source, piece, train.mask(piece.start, piece.rows),
                                         numeric + list(self.dm.target_names)):
                    table, keep = block.table, block.keep
                    where = self.where(piece, block.offset)
                    columns = []
                    for column in numeric:  # every row of the block is checked, the training rows counted
                        values = cells(table, column, where)
                        imputed = strategies.get(column, "none") != "none"
                        check(np.where(np.isnan(values), 0.0, values) if imputed else values, column, where)
                        columns.append(values if keep is None else values[keep])
                    stats.merge(ColumnStats.of(columns))
                    y = targets(table, where)  # checked on every row, scaled or not: a bad target stops here
                    if scale_targets:
                        target_stats.merge(ColumnStats.of([t if keep is None else t[keep] for t in y.T]))
        except InputError as err:
            error = str(err)
        parts = gathered((error, mine), trainer)
        errors = [e for e, _ in parts if e]
        if errors:
            raise InputError(errors[0], everywhere=True)  # the same on every process
        merged: dict[int, tuple] = {}
        for _, part in parts:
            merged.update(part)
        stats, target_stats = ColumnStats(len(numeric)), ColumnStats(width)
        for i in sorted(merged):
            stats.merge(merged[i][0])
            target_stats.merge(merged[i][1])
        rows = self.n_rows("train")
        out = Preprocessing(features, categories)
        mean, scale = [], []
        scales = stats.scale(rows)  # filled cells add rows at the mean: no deviation
        for feature in features:
            strategy = strategies.get(feature, "none")
            if feature in categories:
                counter = self.levels.get(feature) or Counter()
                if strategy != "none" and counter:
                    top = max(counter.values())
                    out.fill[feature] = plain(min(v for v, c in counter.items() if c == top))
                mean += [0.0] * len(categories[feature])
                scale += [1.0] * len(categories[feature])
                continue
            j = numeric.index(feature)
            if stats.n[j] == 0:
                raise InputError(f"data.path={self.source('train').path!r}: feature column {feature!r} has no "
                                 "values in the training rows")
            if strategy != "none":
                out.fill[feature] = float(stats.mean[j])
            mean.append(float(stats.mean[j]))
            scale.append(float(scales[j]))
        if standardize:
            out.mean, out.scale = mean, scale
        if scale_targets:
            out.target_mean, out.target_scale = target_stats.mean.tolist(), target_stats.scale(rows).tolist()
        return out

    # --- loaders ------------------------------------------------------------------------------------------------
    def batches(self, split: str, decode: Callable[[Block], tuple], columns: list[str],
                train: bool = False) -> StreamBatches | list:
        """The loader of a split: ``decode(block)`` turns a :class:`Block` into a chunk of its kept rows."""
        counts = self.counts(split)
        if not sum(counts):
            return []
        source, rows = self.source(self._resolved(split)), self.split(split)
        rank, world = process_of(self.dm.trainer)
        name = f"{source.name}={source.path!r}"

        def chunks(piece: Piece, mask: np.ndarray | None) -> Iterator[tuple]:
            for block in self.blocks(source, piece, mask, columns):
                if len(block.rows):
                    yield decode(block)

        def close_the_others() -> None:  # a training epoch starts: no other split is being read any more
            for other, loader in self._loaders.items():
                if other != split:
                    loader.close()

        h = self.dm.hparams
        loader = StreamBatches(source.pieces, counts, chunks, lambda p: rows.mask(p.start, p.rows),
                               batch_size=self.dm.batch_size, shuffle=train and self.dm.shuffle,
                               window=h.shuffle_buffer, seed=self.dm.seed, rank=rank, world_size=world, equal=train,
                               every_process=True, name=name, cache=self._cache(split, name, rank, world),
                               on_start=close_the_others if train else None)
        self._loaders[split] = loader
        return loader

    def check_cache_dir(self) -> None:
        """data.cache_dir, if given, is a folder this process can write in (checked before the rows are read by a
        fit or a validation: predicting never uses it, so a checkpoint loads without it)."""
        folder = self.dm.hparams.cache_dir
        if folder is not None and not (os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)):
            raise InputError(f"data.cache_dir={folder!r} is invalid: expected a folder that exists and can be written")

    def _cache(self, split: str, name: str, rank: int, world: int) -> DecodedCache | None:
        """The decoded rows of a split read every epoch (training, validation) with data.cache_dir: one per split,
        taken over by each new loader of it (so the file is written once however often Lightning asks)."""
        folder = self.dm.hparams.cache_dir
        if folder is None or split not in ("train", "val"):
            return None
        if split not in self._caches:
            self.check_cache_dir()
            trainer = self.dm.trainer
            sharing = getattr(trainer, "num_devices", 1) if trainer is not None else 1  # processes on this machine
            self._caches[split] = DecodedCache(folder, name, sharing, rank if world > 1 else None)
        return self._caches[split]

    def chunks(self, decode: Callable, columns: list[str]) -> Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
        """One pass over all training rows in order, on this process alone, as ``(x, y)`` chunks (the report's
        exact optimum)."""
        source = self.source("train")
        everything = list(range(len(source.pieces)))

        def passes() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for block in self._read(source, self.split("train"), everything, columns):
                if len(block.rows):
                    x, y, _ = decode(block)
                    yield x, y
        return passes

