"""TensorBatches against the reference it imitates: DataLoader + DistributedSampler over the same rows."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from lit_regression.batches import TensorBatches


@pytest.mark.parametrize("n, batch_size, world_size", [(10, 4, 1), (10, 4, 3), (37, 5, 2), (8, 8, 4), (5, None, 2)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_same_rows_and_batches_as_distributed_sampler(n, batch_size, world_size, shuffle):
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1) * torch.ones(1, 3)  # a row's values are its index
    y = torch.arange(n)
    dataset = TensorDataset(x, y)
    for rank in range(world_size):
        ours = TensorBatches(x, y, batch_size=batch_size, shuffle=shuffle, seed=7, rank=rank, world_size=world_size,
                             pad=True)
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=7)
        for epoch in (0, 1, 5):
            ours.set_epoch(epoch)
            sampler.set_epoch(epoch)
            size = batch_size or math.ceil(n / world_size)
            reference = list(DataLoader(dataset, batch_size=size, sampler=sampler))
            batches = list(ours)
            assert len(batches) == len(ours) == len(reference)
            for (xb, yb), (xr, yr) in zip(batches, reference):
                assert torch.equal(xb, xr) and torch.equal(yb, yr)


def test_evaluation_shards_hold_every_row_once():
    x = torch.arange(11.0)
    shards = [torch.cat([b[0] for b in TensorBatches(x, batch_size=2, rank=r, world_size=3)]) for r in range(3)]
    assert sorted(torch.cat(shards).tolist()) == x.tolist()


def test_shuffled_epoch_is_a_permutation_and_leaves_the_data_alone():
    x = torch.randn(1000, 4)
    original = x.clone()
    loader = TensorBatches(x, batch_size=64, shuffle=True, seed=0)
    rows = torch.cat([b[0] for b in loader])
    assert torch.equal(x, original)
    assert not torch.equal(rows, x)
    assert torch.equal(rows[rows[:, 0].argsort()], x[x[:, 0].argsort()])
