"""Sharing rows out to the processes and cutting them into batches: the rules both loaders follow.

* :func:`equal_sizes`: the same number of training batches on every process, every row once.
* :func:`share_out` (streamed rows, by ranges of the split's rows) and :func:`assign` (whole pieces, for the
  statistics pass); :func:`refuse_empty_shares` refuses a share without rows on every process alike.
* :class:`TensorBatches`: batches cut from tensors held in memory. A ``DataLoader`` over a ``TensorDataset``
  indexes and collates one sample at a time, which costs more than the model itself for small regressions;
  ``TensorBatches`` slices whole batches out of the tensors instead (or, when shuffling, gathers each batch's
  rows of a new permutation per epoch with one ``index_select``) and shards the rows across processes the way
  ``DistributedSampler`` does. The streamed loader is :class:`~lit_regression.streaming.StreamBatches`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

import torch
from torch.utils.data import SequentialSampler

from lit_regression.errors import InputError, count


def equal_sizes(rows: list[int], rank: int, batch_size: int) -> list[int]:
    """The sizes of process ``rank``'s batches when every process serves the same number of them, ``k =
    ceil(max(rows) / batch_size)``, however many rows (``rows``, one count per process) each holds: its rows cut
    into ``k`` batches of nearly equal size, none above ``batch_size``. Every row counts once; none is repeated."""
    k = math.ceil(max(rows) / batch_size)
    mine = rows[rank]
    return [mine // k + (b < mine % k) for b in range(k)]


def process_of(trainer) -> tuple[int, int]:
    """``(rank, world_size)`` of this process under ``trainer`` (``(0, 1)`` without one)."""
    return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


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
    for i, rows in enumerate(counts):
        for r in range(world_size):
            lo, hi = max(bounds[r], start), min(bounds[r + 1], start + rows)
            if lo < hi:
                shares[r].append(Part(i, lo - start, hi - start))
        start += rows
    return shares


def refuse_empty_shares(rows: list[int], name: str) -> None:
    """Refuse, alike on every process, shares of ``name``'s rows (``rows``: one count per process) that leave a
    process without a row: under DDP, a process without batches would skip the epoch's end, where the processes
    meet."""
    if len(rows) > 1 and min(rows) == 0:
        raise InputError(too_few(rows, name, "a batch"), everywhere=True)


def too_few(rows: list[int], name: str, needed: str) -> str:
    """The message for a table whose ``rows`` (per process) leave a process fewer than it ``needed``."""
    total = sum(rows)
    return (f"{count(total, 'row')} of {name} leave{'s' * (total == 1)} a process {count(min(rows), 'row')} "
            f"for {needed} (rows per process: {rows}): use fewer processes"
            + (" or a smaller data.batch_size" if needed != "a batch" else ""))


class TensorBatches:
    """An iterable of batches ``tuple(t[i:j] for t in tensors)`` over tensors that share their first dimension.

    Args:
        tensors: the tensors to batch; all have the same number of rows.
        batch_size: rows per batch; ``None`` serves all rows of this process as one batch.
        shuffle: draw a new row order every epoch from ``seed + epoch`` (the same on every process, and the same
            again after a resume, because Lightning calls ``set_epoch`` with the trainer's epoch).
        seed: seed of the shuffling generator; torch's global random state is never touched.
        rank: this process's index among ``world_size`` processes.
        world_size: number of processes that share the rows.
        pad: repeat rows so that every process gets the same number (what ``DistributedSampler`` does, so that
            no process waits for another); leave off for evaluation and prediction, where every row must count
            exactly once.
        equal: under several processes, serve the same number of batches on each without repeating a row
            (:func:`equal_sizes`): what training takes, so that the sums of an epoch (Newton's method) hold
            every row once.
    """

    def __init__(
        self,
        *tensors: torch.Tensor,
        batch_size: int | None = None,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = False,
        equal: bool = False,
    ) -> None:
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("TensorBatches needs tensors with the same number of rows")
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.pad = pad
        self.equal = equal and world_size > 1 and batch_size is not None
        self.epoch = 0
        self._in_order: InOrder | None = None

    batch_sampler = None  # read by Lightning's dataloader checks

    @property
    def sampler(self) -> TensorBatches | InOrder:
        """What Lightning reads as the loader's sampler: it calls its ``set_epoch``, and it takes a loader whose
        sampler is no ``SequentialSampler`` for a shuffled one (``--trainer.overfit_batches`` then warns that it
        turns shuffling off). In order: an :class:`InOrder`; shuffled: the loader itself."""
        if self.shuffle:
            return self
        if self._in_order is None:  # Lightning reads it several times an epoch
            self._in_order = InOrder(self)
        return self._in_order

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def num_rows(self) -> int:
        """Rows this process serves in one epoch."""
        n = len(self.tensors[0])
        if self.world_size == 1:
            return n
        if self.pad:
            return math.ceil(n / self.world_size)
        return len(range(self.rank, n, self.world_size))

    def _equal_sizes(self) -> list[int]:
        n = len(self.tensors[0])
        return equal_sizes([len(range(r, n, self.world_size)) for r in range(self.world_size)], self.rank,
                           self.batch_size)

    def __len__(self) -> int:
        rows = self.num_rows
        if rows == 0:
            return 0
        if self.equal:
            return len(self._equal_sizes())
        return 1 if self.batch_size is None else math.ceil(rows / self.batch_size)

    def _rows(self) -> torch.Tensor | None:
        """Row indices for this process and epoch, or ``None`` for "all rows in order"."""
        n = len(self.tensors[0])
        order = None
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=generator)
        if self.world_size == 1:
            return order
        if order is None:
            order = torch.arange(n)
        if self.pad:
            total = math.ceil(n / self.world_size) * self.world_size
            order = torch.cat([order, order[: total - n]]) if total > n else order
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        rows = self._rows()
        tensors = self.tensors
        n = len(tensors[0]) if rows is None else len(rows)
        size = max(n if self.batch_size is None else self.batch_size, 1)
        if rows is None:
            if size >= n:  # one batch of all rows: the tensors themselves
                yield tuple(tensors)
                return
            for start in range(0, n, size):
                yield tuple(t[start : start + size] for t in tensors)
            return
        # gathered batch by batch: half the time of permuting the whole tensors first (each batch is written
        # while it is in cache, and used at once) and no second copy of the data in memory
        rows = rows.to(tensors[0].device)
        sizes = self._equal_sizes() if self.equal else [min(size, n - s) for s in range(0, n, size)]
        start = 0
        for size in sizes:
            index = rows[start : start + size]
            start += size
            yield tuple(t.index_select(0, index) for t in tensors)


def tensor_batches(tensors: tuple[torch.Tensor, ...], batch_size: int | None, shuffle: bool, seed: int, trainer,
                   train: bool) -> TensorBatches:
    """The batches of tensors held in memory for this process. Training serves every row once: full batches,
    one batch per process whatever the shard sizes (the model weighs each process's mean by its rows; see
    ``LitModel.on_train_start``); mini-batches, the same number of batches on every process, as Newton's sums of
    an epoch need."""
    rank, world_size = process_of(trainer)
    full = batch_size is None or batch_size >= len(tensors[0])
    return TensorBatches(*tensors, batch_size=batch_size, shuffle=shuffle, seed=seed, rank=rank,
                         world_size=world_size, equal=train and not full)


class InOrder(SequentialSampler):
    """The sampler of a :class:`TensorBatches` that does not shuffle: the rows in order, as ``SequentialSampler``
    says to Lightning's checks; ``set_epoch`` goes on to the loader."""

    def __init__(self, batches: TensorBatches) -> None:
        super().__init__(range(batches.num_rows))
        self.batches = batches

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)
