"""Tables bigger than memory: Parquet files read from disk in record batches every epoch, never held whole.

* :class:`ParquetSource`: a Parquet file, a folder of them or a glob, checked to share one schema, seen as one
  table whose rows are numbered across the files in sorted order (the *global row index*) and cut into pieces,
  one per row group.
* :func:`held_out`: the split of a row, from a hash of its global row index and the seed, so that no process
  needs to hold a list of rows and every process draws the same split.
* :func:`share_out`: which rows each process reads: the split's rows, in order, cut into one range per process
  (:class:`Part` s of pieces), so that any file, even one of a single row group, serves any number of processes.
* :class:`StreamBatches`: the loader that Lightning iterates: this process's pieces, decoded by a reading thread
  while the model trains on the rows before them, shuffled within a bounded window, cut into the same number of
  batches on every process.
* :class:`DecodedCache`: the rows a loader decoded in its first epoch, kept encoded in a scratch file and read
  back in the later epochs instead of decoding the Parquet files again (``data.cache_dir``).
* :class:`ColumnStats`: count, mean and sum of squared deviations of numeric columns, merged exactly (Chan et
  al.'s pairwise update) across pieces and processes.
"""

from __future__ import annotations

import glob
import os
import queue
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from lit_regression.batches import InOrder, equal_sizes
from lit_regression.errors import InputError, write_line
from lit_regression.tables import PARQUET, dense, listing

# measured on figure 7 of the bench (4M x 16, row groups of 131,072 rows): 1 column and 32,768 rows took a fit's
# peak above a tiny run's from 0.57x (4 columns, 65,536 rows) to 0.42x of the float32 table; decoding is slower
# by about 10%, which --data.cache_dir takes out of every epoch after the first
READ_ROWS = 32_768  # rows of a decoded row group handed on (encoded) at a time
READ_COLUMNS = 1  # columns of a row group decoded together


# --- the files ----------------------------------------------------------------------------------------------------
def parquet_files(path: str, name: str) -> list[str]:
    """The Parquet files that ``path`` names: itself, the ``*.parquet``/``*.pq`` files under a folder (sorted,
    hidden and ``_``-prefixed names skipped, as pyarrow's datasets do), or the files a glob matches (sorted)."""
    if any(c in path for c in "*?["):
        files = sorted(f for f in glob.glob(path, recursive=True)  # hidden and _ files skipped, as in a folder
                       if os.path.isfile(f) and not os.path.basename(f).startswith((".", "_")))
        if not files:
            raise InputError(f"{name}={path!r} matches no file")
        return files
    if os.path.isdir(path):
        files = []
        for folder, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
            files += [os.path.join(folder, n) for n in names
                      if not n.startswith((".", "_")) and os.path.splitext(n)[1].lower() in PARQUET]
        if not files:
            raise InputError(f"{name}={path!r} is a folder without Parquet files (*.parquet, *.pq)")
        return sorted(files)
    if not os.path.exists(path):
        raise InputError(f"{name}={path!r}: no such file or folder")
    if os.path.splitext(path)[1].lower() not in PARQUET:
        raise InputError(f"{name}={path!r} is not Parquet: data.streaming reads Parquet files (*.parquet, *.pq), a "
                         "folder of them or a glob; convert the table, or leave data.streaming off")
    return [path]


def kind(t: pa.DataType) -> str:
    """What a column type means here: ``number``, ``text``, ``bool`` or the type itself; types of one kind agree
    across files (a column of whole numbers in one file may be float in another)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_boolean(t):
        return "bool"
    return str(t)


@dataclass(frozen=True)
class Piece:
    """One row group: ``rows`` rows from global row index ``start`` on."""

    file: str
    group: int
    start: int
    rows: int

    def where(self) -> str:
        return f"{self.file!r}, row group {self.group}"


class ParquetSource:
    """The Parquet files of ``path`` as one table (see the module docstring); ``name`` is the argument that gave
    it (``data.path``), for messages."""

    def __init__(self, path: str, name: str) -> None:
        import pyarrow.parquet as pq  # here, not at import: every command would pay for it

        self.path, self.name = path, name
        self.files = parquet_files(path, name)
        self.pieces: list[Piece] = []
        self.schema: pa.Schema | None = None
        start = 0
        for file in self.files:
            try:
                meta = pq.ParquetFile(file)
            except (OSError, pa.ArrowException) as err:
                raise InputError(f"{name}={path!r}: {file!r} is not a readable Parquet file ({err})") from None
            schema = meta.schema_arrow
            if self.schema is None:
                self.schema = schema
            else:
                self._check_schema(file, schema)
            for group in range(meta.num_row_groups):
                rows = meta.metadata.row_group(group).num_rows
                if rows:
                    self.pieces.append(Piece(file, group, start, rows))
                    start += rows
        self.num_rows = start
        if not self.num_rows:
            raise InputError(f"{name}={path!r} has no rows ({len(self.files)} file{'s' * (len(self.files) > 1)})")

    def _check_schema(self, file: str, schema: pa.Schema) -> None:
        first = self.files[0]
        for field in self.schema:
            if field.name not in schema.names:
                raise InputError(f"{self.name}={self.path!r}: the files' schemas disagree: {file!r} has no column "
                                 f"{field.name!r}, which {first!r} has")
            other = schema.field(field.name).type
            if kind(other) != kind(field.type):
                raise InputError(f"{self.name}={self.path!r}: the files' schemas disagree: column {field.name!r} holds "
                                 f"{other} in {file!r} but {field.type} in {first!r}")
        extra = [n for n in schema.names if n not in self.schema.names]
        if extra:
            raise InputError(f"{self.name}={self.path!r}: the files' schemas disagree: {file!r} has the column"
                             f"{'s' * (len(extra) > 1)} {listing(extra)}, which {first!r} lacks")

    @property
    def column_names(self) -> list[str]:
        return list(self.schema.names)

    def read(self, piece: Piece, columns: list[str], rows: int = READ_ROWS) -> Iterator[tuple[int, pa.Table]]:
        """The piece's ``columns`` in blocks of at most ``rows`` rows: ``(offset in the piece, table)``;
        dictionary columns decoded to their values. The row group is decoded whole, :data:`READ_COLUMNS` columns
        at a time (pyarrow's record-batch reader holds about 3.5 times as much memory while it decodes, and is
        slower), and served in zero-copy slices."""
        import pyarrow.parquet as pq

        try:  # a column at a time: while it decodes, pyarrow holds about three copies of what it decodes
            # (not memory-mapped: that decodes 1.3 times as fast, but the mapped pages add about 25 MiB to the peak)
            reader = pq.ParquetFile(piece.file)
            parts = [reader.read_row_group(piece.group, columns=columns[i:i + READ_COLUMNS], use_threads=True)
                     for i in range(0, len(columns), READ_COLUMNS)]
            group = dense(pa.Table.from_arrays([c for part in parts for c in part.columns], names=columns))
        except (OSError, pa.ArrowException) as err:
            raise InputError(f"{self.name}={self.path!r}: cannot read {piece.where()} ({err})") from None
        for offset in range(0, group.num_rows, rows):
            yield offset, group.slice(offset, rows)
        del group, parts
        pa.default_memory_pool().release_unused()  # hand the row group's pages back, not keep them for the next

    def sample(self, rows: int = 10_000) -> pa.Table:
        """The columns as ``_resolve_columns`` looks at them: up to ``rows`` rows of the first piece for the text
        columns (to tell numbers written as text from categories); the others, whose kind their type tells, as
        nulls of their type. Only the text columns are read, without pre-buffering the row group."""
        import pyarrow.parquet as pq

        piece = self.pieces[0]
        text = [f.name for f in self.schema if kind(f.type) == "text"]
        n = min(rows, piece.rows)
        read = pa.table({})
        if text:
            try:
                reader = pq.ParquetFile(piece.file, pre_buffer=False)
                batch = next(reader.iter_batches(batch_size=n, row_groups=[piece.group], columns=text))
            except (OSError, pa.ArrowException) as err:
                raise InputError(f"{self.name}={self.path!r}: cannot read {piece.where()} ({err})") from None
            read = dense(pa.Table.from_batches([batch]))
            n = read.num_rows
        columns = {f.name: read[f.name] if f.name in text else pa.nulls(n, f.type) for f in self.schema}
        return pa.table(columns)


# --- the held-out split -------------------------------------------------------------------------------------------
def uniform(start: int, count: int, seed: int) -> np.ndarray:
    """A number in [0, 1) for each global row index ``start .. start + count - 1``: splitmix64 of the index and
    the seed, the same on every machine and process."""
    with np.errstate(over="ignore"):
        z = np.arange(start, start + count, dtype=np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64)
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
        u = uniform(start, count, self.seed)
        return (u >= self.low) & (u < self.high)

    def count(self, piece: Piece) -> int:
        mask = self.mask(piece.start, piece.rows)
        return piece.rows if mask is None else int(mask.sum())


def held_out(val_fraction: float, test_fraction: float, seed: int, val_path: bool, test_path: bool) -> dict[str, Split]:
    """The rows of the training source in each split: ``[0, val)`` validation, ``[val, val + test)`` test, the
    rest training; a split that has its own path takes no rows of the training source."""
    val = 0.0 if val_path else val_fraction
    test = 0.0 if test_path else test_fraction
    return {"train": Split(val + test, 1.0, seed), "val": Split(0.0, val, seed), "test": Split(val, val + test, seed)}


@dataclass(frozen=True)
class Part:
    """A process's rows of one piece: the rows ``lo .. hi - 1`` of those the split takes from piece ``piece``."""

    piece: int
    lo: int
    hi: int

    @property
    def rows(self) -> int:
        return self.hi - self.lo

    def mask(self, split_mask: np.ndarray | None, piece_rows: int, count: int) -> np.ndarray | None:
        """The piece's rows that this part takes, from the split's ``split_mask`` of the piece (``None``: all of
        its ``piece_rows``), which takes ``count`` rows."""
        if self.lo == 0 and self.hi == count:
            return split_mask
        taken = np.arange(piece_rows) if split_mask is None else np.flatnonzero(split_mask)
        mask = np.zeros(piece_rows, dtype=bool)
        mask[taken[self.lo:self.hi]] = True
        return mask


def assign(counts: list[int], world_size: int) -> list[list[int]]:
    """Whole pieces (by index, in order) for each process: the largest first, each to the process with the fewest
    rows so far (the lowest rank among equals). The statistics pass reads these: a piece's statistics are then
    computed whole on some process, so that their merge, in piece order, is the same bit for bit however many
    processes there are (the batches are shared out by :func:`share_out`)."""
    shares: list[list[int]] = [[] for _ in range(world_size)]
    rows = [0] * world_size
    for i in sorted((i for i in range(len(counts)) if counts[i]), key=lambda i: (-counts[i], i)):
        r = min(range(world_size), key=rows.__getitem__)
        shares[r].append(i)
        rows[r] += counts[i]
    return [sorted(share) for share in shares]


def share_out(counts: list[int], world_size: int) -> list[list[Part]]:
    """Each process's parts: the split's rows of all pieces (``counts`` of each), in order, cut into
    ``world_size`` ranges whose sizes differ by one row at most. A process reads the row groups its range
    overlaps, so it decodes at most the parts of two row groups (one at each end of its range) that are not
    its own. The same in every epoch: each process's rows, and so its number of batches, stay fixed."""
    total = sum(counts)
    bounds = [total * r // world_size for r in range(world_size + 1)]
    shares: list[list[Part]] = [[] for _ in range(world_size)]
    start = 0
    for i, count in enumerate(counts):
        for r in range(world_size):
            lo, hi = max(bounds[r], start), min(bounds[r + 1], start + count)
            if lo < hi:
                shares[r].append(Part(i, lo - start, hi - start))
        start += count
    return shares


# --- exact column statistics --------------------------------------------------------------------------------------
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

    def scale(self, rows: np.ndarray | float) -> np.ndarray:
        """Standard deviations (``ddof=0``) over ``rows`` rows per column (missing cells counted as filled with the
        mean), 1 where a column is constant, as scikit-learn's ``StandardScaler``."""
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.sqrt(self.m2 / np.maximum(rows, 1))
        return np.where(std < 10 * np.finfo(np.float64).eps, 1.0, std)


def gathered(value: Any, trainer) -> list[Any]:
    """``value`` of every process, in rank order (one process: ``[value]``): the pieces' statistics are small."""
    if trainer is None or trainer.world_size == 1 or not torch.distributed.is_initialized():
        return [value]
    parts: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(parts, value)
    return parts


# --- the loader ---------------------------------------------------------------------------------------------------
Chunk = tuple  # (x float32 tensor, second tensor (y or rows), *more)
Decode = Callable[[Piece, np.ndarray | None], Iterator[Chunk]]


def read_ahead(chunks: Iterator[Chunk], depth: int = 2) -> Iterator[Chunk]:
    """``chunks`` produced by a thread, up to ``depth`` ahead of the consumer: pyarrow decodes (and numpy
    encodes) without the GIL while the model trains. An error in the thread is raised in the consumer; a consumer
    that stops early (max_steps, an interrupt) stops the thread."""
    out: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    done = object()

    def put(item: Any) -> bool:
        """Queue ``item`` once there is room; ``False`` if the consumer stopped first."""
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
            item: Any = done
        except BaseException as err:  # handed to the consumer
            item = err
        put(item)

    thread = threading.Thread(target=produce, name="lit-regression-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = out.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


class DecodedCache:
    """The chunks that a loader decoded, piece by piece, in an unnamed scratch file under ``folder`` (deleted by
    the system when the process ends, killed or not), read back in later epochs instead of decoding the Parquet
    files again: the same chunks in the same order, so the same batches, bit for bit. A piece counts as kept
    once all its chunks are written (an iteration left unfinished keeps none of the piece it was in). Chunks are
    tuples of tensors (training and validation; never the rows to predict, which carry pyarrow columns).

    If the file would take more than half the folder's free space (this process's rows, each as large as the
    first chunk's, times ``sharing``, the processes of this machine that write there too), or cannot be written,
    the process says so (each process for itself) and decodes every epoch from then on.

    Args:
        folder: where the file goes (``data.cache_dir``).
        name: what messages call the table.
        sharing: processes on this machine that may keep their rows in ``folder`` at the same time.
        process: this process's rank, named in messages when there are several.
    """

    def __init__(self, folder: str, name: str, sharing: int = 1, process: int | None = None) -> None:
        self.folder, self.name, self.sharing, self.process = folder, name, max(sharing, 1), process
        self.file = None
        self.kept: dict[int, list[list[tuple]]] = {}  # piece -> its chunks -> each part's (offset, dtype, shape, T)
        self.end = 0  # bytes written

    @property
    def usable(self) -> bool:
        return self.folder is not None

    def __contains__(self, piece: int) -> bool:
        return piece in self.kept

    def read(self, piece: int) -> Iterator[Chunk]:
        for parts in self.kept[piece]:
            yield tuple(self._read_part(*part) for part in parts)

    def _read_part(self, offset: int, dtype: np.dtype, shape: tuple, transposed: bool) -> torch.Tensor:
        out = np.empty(shape, dtype)
        view, done = memoryview(out).cast("B"), 0
        while done < len(view):
            n = os.preadv(self.file.fileno(), [view[done:]], offset + done)
            if n <= 0:
                raise RuntimeError(f"the scratch file of {self.name} under {self.folder!r} ended early")
            done += n
        tensor = torch.from_numpy(out)
        return tensor.T if transposed else tensor

    def write(self, piece: int, chunks: Iterator[Chunk], rows: int) -> Iterator[Chunk]:
        """``chunks`` passed through, each also written; the piece is kept once the last is written. ``rows``:
        the rows this process will keep in all (for the free-space check, when the file is made)."""
        written: list[list[tuple]] | None = []  # None once the cache gave up
        for chunk in chunks:
            if written is not None:
                written = self._written(chunk, written, rows)
            yield chunk
        if written is not None:
            self.kept[piece] = written

    def _written(self, chunk: Chunk, written: list, rows: int) -> list | None:
        try:
            if self.file is None:
                size = rows * sum(part[:1].numel() * part.element_size() for part in chunk) * self.sharing
                free = shutil.disk_usage(self.folder).free
                if size > free / 2:
                    who = f" for {self.sharing} processes" if self.sharing > 1 else ""
                    self._give_up(f"they would take about {_mib(size)}{who}, more than half of its {_mib(free)} free")
                    return None
                self.file = tempfile.TemporaryFile(dir=self.folder, prefix="lit-regression-rows-")
            parts = []
            for part in chunk:
                transposed = part.dim() == 2 and not part.is_contiguous() and part.T.is_contiguous()
                values = (part.T if transposed else part.contiguous()).numpy()
                view, done = memoryview(values).cast("B"), 0
                while done < len(view):
                    done += os.pwrite(self.file.fileno(), view[done:], self.end + done)
                parts.append((self.end, values.dtype, values.shape, transposed))
                self.end += len(view)
        except OSError as err:
            self._give_up(err.strerror or str(err))
            return None
        written.append(parts)
        return written

    def _give_up(self, why: str) -> None:
        """Say why (on this process: the others may be fine), let the file go, decode every epoch from now on."""
        who = f" (process {self.process})" if self.process is not None else ""
        write_line(f"warning: data.cache_dir={self.folder!r}: the decoded rows of {self.name}{who} are not kept "
                   f"there ({why}); they are decoded from the Parquet files every epoch", sys.stderr)
        self.close()
        self.folder = None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        self.file, self.kept, self.end = None, {}, 0


def refuse_empty_shares(rows: list[int], name: str) -> None:
    """Refuse, alike on every process, shares of ``name``'s rows (``rows``: one count per process) that leave a
    process without a row: under DDP, a process without batches would skip the epoch's end, where the processes
    meet."""
    if len(rows) > 1 and min(rows) == 0:
        raise InputError(too_few(rows, name, "a batch"), everywhere=True)


def too_few(rows: list[int], name: str, needed: str) -> str:
    """The message for a table whose ``rows`` (per process) leave a process fewer than it ``needed``."""
    total = sum(rows)
    return (f"{total} row{'s' * (total != 1)} of {name} leave{'s' * (total == 1)} a process {min(rows)} "
            f"rows for {needed} (rows per process: {rows}): use fewer processes"
            + (" or a smaller data.batch_size" if needed != "a batch" else ""))


def _mib(size: float) -> str:
    return f"{size / 2**20:,.1f} MiB"


class StreamBatches:
    """Batches of this process's rows of a streamed split, read from disk every epoch.

    The rows are shared out to the processes once, by ranges (:func:`share_out`). Training (``shuffle``): each
    process reads its pieces in an order drawn from ``seed`` and the epoch and shuffles their rows within windows
    of ``window`` rows of consecutive pieces. Every process serves the same number of batches in every epoch,
    ``ceil(rows of the busiest process / batch_size)``, its rows cut into batches of nearly equal size (none
    larger than ``batch_size``): every row once per epoch, no padding, no process waiting for another.
    Evaluation and prediction: each process's pieces in order, batches of ``batch_size``.

    Args:
        pieces: the source's pieces; ``counts`` the rows of each that the split takes.
        decode: ``decode(piece, mask)`` yields chunks ``(x, y_or_rows, ...)`` of the piece's rows in ``mask``.
        batch_size: rows per batch (at most).
        shuffle: shuffle as above; ``window`` rows (at least a batch) are shuffled together.
        seed, rank, world_size: as :class:`~lit_regression.batches.TensorBatches`.
        equal: serve the same number of batches on every process (training).
        every_process: refuse a share without rows under DDP (validation and test: a process without batches
            would skip the epoch's end, where the metrics of all processes are summed).
        name: what messages call the table.
        cache: a :class:`DecodedCache` of this process's rows (``None``: decode every epoch); it may outlive the
            loader (a new loader of the same split takes it over).
        on_start: called when an iteration starts (the datamodule closes its other loaders' unfinished ones).
    """

    batch_sampler = None  # read by Lightning's dataloader checks

    def __init__(self, pieces: list[Piece], counts: list[int], decode: Decode, masks: Callable[[Piece], Any],
                 batch_size: int, shuffle: bool = False, window: int = 131_072, seed: int = 0, rank: int = 0,
                 world_size: int = 1, equal: bool = False, every_process: bool = False, name: str = "the table",
                 cache: DecodedCache | None = None, on_start: Callable[[], None] | None = None) -> None:
        self.pieces, self.counts, self.decode, self.masks = pieces, counts, decode, masks
        self.batch_size, self.shuffle, self.window = batch_size, shuffle, max(window, 1)
        self.seed, self.rank, self.world_size, self.equal = seed, rank, world_size, equal
        self.every_process, self.name, self.on_start = every_process, name, on_start
        self.epoch = 0
        self._in_order: InOrder | None = None
        self._live: Iterator | None = None  # the reading thread's batches of the iteration in progress
        self.cache = cache

    @property
    def sampler(self):
        """As :attr:`TensorBatches.sampler`: Lightning calls its ``set_epoch`` and reads shuffled from its type."""
        if self.shuffle:
            return self
        if self._in_order is None:
            self._in_order = InOrder(self)
        return self._in_order

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shares(self) -> list[list[Part]]:
        """Each process's parts (:func:`share_out`), in an order drawn from the seed and the epoch when shuffling."""
        shares = share_out(self.counts, self.world_size)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            shares = [[share[i] for i in torch.randperm(len(share), generator=generator).tolist()] for share in shares]
        return shares

    def _sizes(self, shares: list[list[Part]]) -> list[int]:
        """Rows of each of this process's batches. Every process computes every share alike, so a table with too
        few rows for the processes is refused by all of them at once (none is left waiting for another)."""
        rows = [sum(part.rows for part in share) for share in shares]
        mine = rows[self.rank]
        if self.equal:  # the shares are the same every epoch, and so is k (Lightning counts the batches once)
            sizes = equal_sizes(rows, self.rank, self.batch_size)
            if min(rows) < len(sizes):
                raise InputError(too_few(rows, self.name, f"{len(sizes)} batches"), everywhere=True)
            return sizes
        if self.every_process:
            refuse_empty_shares(rows, self.name)
        return [min(self.batch_size, mine - s) for s in range(0, mine, self.batch_size)]

    def __len__(self) -> int:
        return len(self._sizes(self._shares()))

    @property
    def num_rows(self) -> int:
        return sum(part.rows for part in self._shares()[self.rank])

    def _chunks(self, share: list[Part]) -> Iterator[Chunk]:
        cache = self.cache
        rows = sum(part.rows for part in share)
        for part in share:
            i = part.piece  # a process's share holds one part of a piece at most: the cache knows it by the piece
            if cache is not None and i in cache:
                yield from cache.read(i)
                continue
            piece = self.pieces[i]
            chunks = self.decode(piece, part.mask(self.masks(piece), piece.rows, self.counts[i]))
            yield from chunks if cache is None or not cache.usable else cache.write(i, chunks, rows)

    def _shuffled(self, chunks: Iterator[Chunk], sizes: list[int]) -> Iterator[tuple[Any, ...]]:
        """Batches of ``sizes`` rows drawn from windows of ``window`` rows (at least a batch; all that is left at
        the end): a window's rows are put in an order drawn from the seed, the epoch and the process, its batches
        are gathered in that order, and the rows too few for another batch stay for the next window. The windows
        hold the same rows however the reader cuts its chunks (read size, scratch file), and are copied into one
        buffer, reused: shuffling allocates nothing but the batches."""
        generator = torch.Generator().manual_seed(((self.seed * 1_000_003 + self.epoch) * 65_537 + self.rank) % 2**63)
        sizes = list(sizes)
        full = max(self.window, self.batch_size)
        window = _Window(full)
        for last, chunk in _marked(chunks):
            n, start = len(chunk[0]), 0
            while True:
                take = min(n - start, full - window.rows)
                if take:
                    window.add(tuple(part[start:start + take] for part in chunk))
                    start += take
                end = last and start == n
                if window.rows < full and not end:
                    break  # the window waits for the next chunk
                order = torch.randperm(window.rows, generator=generator)
                cut = 0
                while sizes and window.rows - cut >= sizes[0]:
                    size = sizes.pop(0)
                    yield window.take(order[cut:cut + size])  # gathered once
                    cut += size
                window.keep(order[cut:])
                if end or (window.rows and not sizes):
                    break
        if sizes or window.rows:
            raise _miscounted(window.rows)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        self.close()
        if self.on_start is not None:
            self.on_start()
        shares = self._shares()
        sizes = self._sizes(shares)
        if not sizes:
            return
        chunks = self._chunks(shares[self.rank])
        batches = self._shuffled(chunks, sizes) if self.shuffle else _rebatched(chunks, sizes)
        # reading, decoding, shuffling and cutting batches in a thread, ahead of the training steps
        self._live = read_ahead(batches)
        yield from self._live

    def close(self) -> None:
        """Stop an iteration that its consumer left unfinished (Lightning's sanity check reads two validation
        batches and keeps the iterator): its reading thread, queued batches and decoded row group are let go."""
        live, self._live = self._live, None
        if live is not None:
            live.close()


def _marked(items: Iterator) -> Iterator[tuple[bool, Any]]:
    """``(is_last, item)`` for each item."""
    items = iter(items)
    previous = next(items, _END)
    while previous is not _END:
        current = next(items, _END)
        yield current is _END, previous
        previous = current


_END = object()


class _Window:
    """The rows of a shuffle window, at most ``capacity``, one row-major tensor per part of the chunks (their rows
    first; tensors only: the training chunks), in buffers made with the first chunk and then reused."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.parts: list[torch.Tensor] = []
        self.rows = 0

    def add(self, chunk: Chunk) -> None:
        n = len(chunk[0])
        if not self.parts:
            self.parts = [torch.empty((self.capacity, *part.shape[1:]), dtype=part.dtype) for part in chunk]
        for buffer, part in zip(self.parts, chunk):  # more rows than the capacity: a shape error here
            buffer[self.rows:self.rows + n] = part
        self.rows += n

    def take(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(buffer.index_select(0, rows) for buffer in self.parts)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only ``rows``, in that order, at the front."""
        for buffer, kept in zip(self.parts, self.take(rows)):
            buffer[:len(rows)] = kept
        self.rows = len(rows)


def _joined(chunks: list[Chunk]) -> Chunk:
    if len(chunks) == 1:
        return chunks[0]
    return tuple(torch.cat(parts) if torch.is_tensor(parts[0]) else pa.concat_tables(parts) for parts in zip(*chunks))


def _slice(part, start: int, stop: int):
    return part[start:stop] if torch.is_tensor(part) else part.slice(start, stop - start)


def _rebatched(chunks: Iterator[Chunk], sizes: list[int]) -> Iterator[tuple[Any, ...]]:
    """The rows of ``chunks``, in order, cut into batches of ``sizes`` rows."""
    held: list[Chunk] = []
    rows = 0
    sizes = iter(sizes)
    size = next(sizes, None)
    for chunk in chunks:
        held.append(chunk)
        rows += len(chunk[0])
        while size is not None and rows >= size:
            joined = _joined(held)
            yield tuple(_slice(part, 0, size) for part in joined)
            rest = len(joined[0]) - size
            held = [tuple(_slice(part, size, size + rest) for part in joined)] if rest else []
            rows = rest
            size = next(sizes, None)
    if size is not None or rows:
        raise _miscounted(rows)


def _miscounted(rows: int) -> RuntimeError:
    return RuntimeError(f"the stream served a different number of rows than counted ({rows} left over): a file "
                        "changed while it was read?")
