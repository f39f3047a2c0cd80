"""The loader of tables bigger than memory: rows read from disk every epoch, never held whole.

* :class:`StreamBatches`: the loader that Lightning iterates: this process's pieces, decoded by a reading thread
  while the model trains on the rows before them, shuffled within a bounded window, cut into the same number of
  batches on every process.
* :class:`DecodedCache`: the rows a loader decoded in its first epoch, kept encoded in a scratch file and read
  back in the later epochs instead of decoding the Parquet files again (``data.cache_dir``).
* :func:`gathered`: a small value of every process (the statistics of each piece).

The files are read by :class:`~lit_regression.tables.ParquetFiles`; which rows each process serves is
:func:`~lit_regression.batches.share_out`'s.
"""

from __future__ import annotations

import os
import queue
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from lit_regression.batches import InOrder, Part, equal_sizes, refuse_empty_shares, share_out, too_few
from lit_regression.errors import InputError, count, write_line
from lit_regression.tables import Piece


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
                raise InputError(too_few(rows, self.name, count(len(sizes), "batch")), everywhere=True)
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
