"""Tables bigger than memory. ``--data.streaming true`` reads Parquet files from disk every epoch: the
rows each process serves, the statistics of the one preprocessing pass, the optimum, streamed predictions, a kill
in the middle of an epoch, and bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import torch

from conftest import ROOT, one_line_error, run_cli, versions
from test_faults import QUIET, assert_same_state
from test_faults import cli_process as faults_process
from lit_regression.callbacks import PredictionWriter
from lit_regression.datamodules import TableDataModule
from lit_regression.splits import Split, held_out, uniform
from lit_regression.streaming import StreamBatches

CITIES = ["Lyon", "Nice", "Paris"]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}


def write_folder(folder: Path, sizes=(230, 170, 300), group: int = 64, seed: int = 0, gaps: bool = True) -> dict:
    """Parquet files ``part-K.parquet`` of a shop table (an id, two numbers with gaps, a city, the price), with
    row groups of ``group`` rows; returns the whole table's columns as numpy, in global row order."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    columns: dict[str, list] = {"order id": [], "basket €": [], "minutes": [], "city": [], "price": []}
    start = 0
    for k, n in enumerate(sizes):
        basket = rng.normal(10, 3, n)
        minutes = rng.uniform(0, 100, n)
        city = rng.choice(CITIES, n)
        price = 2 * basket - 0.5 * minutes + np.where(city == "Paris", 5.0, 0.0) + rng.normal(0, 1, n)
        if gaps:
            minutes[rng.random(n) < 0.05] = np.nan
        part = {"order id": [f"o{start + i}" for i in range(n)], "basket €": basket, "minutes": minutes,
                "city": city, "price": price}
        pq.write_table(pa.table(part), folder / f"part-{k}.parquet", row_group_size=group)
        for name, values in part.items():
            columns[name] += list(values)
        start += n
    return {name: np.array(values) for name, values in columns.items()}


def streamed(path: Path, **kwargs) -> TableDataModule:
    args = dict(path=str(path), target="price", streaming=True, batch_size=64, impute="mean", id_column="order id")
    return TableDataModule(**{**args, **kwargs})


def written_predictions(cli) -> str:
    """The folder of streamed predictions that a command's writer made (wherever its run folder is)."""
    (writer,) = [c for c in cli.trainer.callbacks if isinstance(c, PredictionWriter)]
    return writer.path


def train_rows(n: int, val: float = 0.2, test: float = 0.0, seed: int = 42) -> np.ndarray:
    return np.flatnonzero(held_out(val, test, seed, False, False)["train"].mask(0, n))


# --- the split and the loader, in one process ---------------------------------------------------------------------
def test_the_hash_split_is_deterministic_and_takes_its_fraction():
    u = uniform(0, 100_000, seed=42)
    assert np.array_equal(u, uniform(0, 100_000, seed=42)) and not np.array_equal(u, uniform(0, 100_000, seed=1))
    assert np.array_equal(uniform(500, 10, 42), u[500:510])  # a row's number depends on its index alone
    splits = held_out(0.2, 0.1, 42, False, False)
    masks = {name: split.mask(0, 100_000) for name, split in splits.items()}
    assert (masks["train"].astype(int) + masks["val"] + masks["test"] == 1).all()
    assert masks["val"].mean() == pytest.approx(0.2, abs=0.005) and masks["test"].mean() == pytest.approx(0.1, abs=0.005)


PIECES = [100, 37, 64, 64, 90, 5, 128]


def synthetic(sizes=PIECES, chunk: int = 40, decoded: list | None = None):
    """Pieces of a table of ``sum(sizes)`` rows and ``decode(piece, mask)`` as our training decoder yields it:
    chunks of ``chunk`` rows, x column-major (its transpose contiguous), y a column, the global row index;
    ``decoded`` collects the pieces decoded."""
    from lit_regression.tables import Piece

    starts = np.cumsum([0] + list(sizes[:-1]))
    pieces = [Piece("f", i, int(s), n) for i, (s, n) in enumerate(zip(starts, sizes))]

    def decode(piece, mask):
        if decoded is not None:
            decoded.append(piece.group)
        rows = torch.arange(piece.start, piece.start + piece.rows)[torch.from_numpy(mask)]
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            x = torch.stack([part.double().sin(), part.double().cos(), part.double()]).float()
            yield x.T, part.float()[:, None], part
    return pieces, decode


def same_batches(a: list, b: list) -> bool:
    return len(a) == len(b) and all(all(torch.equal(u, v) for u, v in zip(x, y)) for x, y in zip(a, b))


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_processes_serve_every_row_once_in_equal_numbers_of_batches(world_size):
    """The loader of each rank (as under DDP): the same number of batches everywhere, no batch above batch_size,
    together every row of the split exactly once, in an order that changes with the epoch."""
    sizes = PIECES
    pieces, decode = synthetic(sizes)
    split = Split(0.25, 1.0, seed=3)
    counts = [split.count(p) for p in pieces]
    orders, counted = [], set()
    for epoch in (0, 1):
        served, lengths = [], []
        for rank in range(world_size):
            loader = StreamBatches(pieces, counts, decode, lambda p: split.mask(p.start, p.rows), batch_size=16,
                                   shuffle=True, window=50, seed=7, rank=rank, world_size=world_size, equal=True)
            loader.set_epoch(epoch)
            batches = list(loader)
            assert len(batches) == len(loader)
            assert all(0 < len(b[2]) <= 16 for b in batches)
            lengths.append(len(batches))
            served.append(torch.cat([b[2] for b in batches]))
        assert len(set(lengths)) == 1
        counted.add(lengths[0])
        everything = torch.cat(served).numpy()
        expected = np.flatnonzero(split.mask(0, sum(sizes)))
        assert np.array_equal(np.sort(everything), expected)
        orders.append(everything)
    assert not np.array_equal(orders[0], orders[1])
    assert len(counted) == 1  # the same number of batches in every epoch: Lightning counts them once


@pytest.mark.parametrize("shuffle", [True, False])
def test_the_decoded_cache_serves_the_same_batches_without_decoding_again(shuffle, tmp_path):
    """With data.cache_dir, a loader decodes each piece once (an iteration left unfinished keeps none of the
    piece it was in) and later epochs read the kept chunks back: the batches are bit for bit those of a loader
    that decodes every epoch, shuffled (training) or in order (validation). A new loader of the same split takes
    the cache over."""
    from lit_regression.streaming import DecodedCache

    split = Split(0.25, 1.0, seed=3)
    decoded: list[int] = []  # the cached loaders' decoded pieces
    pieces, decode = synthetic()
    _, counted = synthetic(decoded=decoded)
    cache = DecodedCache(str(tmp_path), "the table")

    def loader(decoder, cache=None):
        return StreamBatches(pieces, [split.count(p) for p in pieces], decoder, lambda p: split.mask(p.start, p.rows),
                             batch_size=16, shuffle=shuffle, window=50, seed=7, equal=shuffle, cache=cache)

    plain, cached = loader(decode), loader(counted, cache)
    next(iter(cached))  # left unfinished, as by Lightning's sanity check
    cached.close()
    for epoch in range(3):
        if epoch == 2:
            cached = loader(counted, cache)  # as when Lightning asks for the loader again
        for one in (plain, cached):
            one.set_epoch(epoch)
        assert same_batches(list(plain), list(cached))
        if epoch == 0:  # every piece decoded by now; not one again afterwards
            assert set(decoded) == set(range(len(pieces)))
            first = len(decoded)
    assert len(decoded) == first


def test_the_shuffled_windows_do_not_depend_on_how_the_reader_cuts_its_chunks():
    """The windows take exactly shuffle_buffer rows, so the shuffled batches are the same for chunks of 40 rows
    or of 7 (the read size, or a scratch file's chunks, never change the training order)."""
    split = Split(0.25, 1.0, seed=3)
    batches = []
    for chunk in (40, 7, 1000):
        pieces, decode = synthetic(chunk=chunk)
        loader = StreamBatches(pieces, [split.count(p) for p in pieces], decode, lambda p: split.mask(p.start, p.rows),
                               batch_size=16, shuffle=True, window=50, seed=7, equal=True)
        loader.set_epoch(1)
        batches.append(list(loader))
    assert same_batches(batches[0], batches[1]) and same_batches(batches[0], batches[2])


def test_a_full_disk_or_too_little_room_leaves_the_cache_off_and_says_so(tmp_path, monkeypatch, capsys):
    """A scratch file that cannot be written, or would take more than half the folder's free space (for all the
    processes of the machine), is said in one line by the process concerned; every row is still served."""
    from lit_regression.streaming import DecodedCache

    split = Split(0.25, 1.0, seed=3)
    pieces, decode = synthetic()
    rows = sum(split.count(p) for p in pieces)  # x 3 floats, y 1 float, the row index: 24 bytes a row

    def served(cache) -> bool:
        loader = StreamBatches(pieces, [split.count(p) for p in pieces], decode, lambda p: split.mask(p.start, p.rows),
                               batch_size=16, shuffle=True, window=50, seed=7, equal=True, cache=cache)
        return np.array_equal(torch.cat([b[2] for b in loader]).sort().values.numpy(),
                              np.flatnonzero(split.mask(0, sum(PIECES))))

    def full(fd, data, offset):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "pwrite", full)
        broken = DecodedCache(str(tmp_path), "data.path='t'", process=1)
        assert served(broken) and not broken.usable
    assert ("warning: data.cache_dir=" in (err := capsys.readouterr().err) and "data.path='t' (process 1) are not "
            "kept there (No space left on device)" in err)

    for sharing, free, usable in ((1, 2 * 24 * rows - 1, False), (1, 2 * 24 * rows, True),
                                  (2, 2 * 24 * rows, False), (2, 4 * 24 * rows, True)):
        with monkeypatch.context() as patch:
            patch.setattr(shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(1, 0, free))
            cache = DecodedCache(str(tmp_path), "the table", sharing=sharing)
            assert served(cache) and cache.usable == usable
            assert usable == (len(cache.kept) == len(pieces))
        err = capsys.readouterr().err
        assert ("more than half of its" in err) != usable
        assert ("for 2 processes" in err) == (sharing == 2 and not usable)


def test_a_checkpoint_loads_without_its_cache_folder(tmp_path):
    """data.cache_dir is checked when a fit or validation reads the rows: predicting from a checkpoint whose
    scratch folder is gone (a batch job's) works."""
    write_folder(tmp_path / "shop", gaps=False)
    (tmp_path / "scratch").mkdir()
    args = ["--model", "LinearRegression", "--data", "TableDataModule", "--data.path", tmp_path / "shop",
            "--data.target", "price", "--data.streaming", "true", "--data.batch_size", "100",
            "--data.cache_dir", tmp_path / "scratch"]
    run_cli("fit", *args, "--trainer.max_epochs", "2", root=tmp_path / "runs")
    (tmp_path / "scratch").rmdir()
    (run,) = versions(tmp_path / "runs")
    again = run_cli("predict", *args, "--ckpt_path", run / "checkpoints" / "last.ckpt", root=tmp_path / "again")
    predicted = ds.dataset(written_predictions(again), format="csv").to_table()
    assert sorted(predicted["row"].to_pylist()) == list(range(700))


def test_rows_are_shared_by_ranges_whatever_the_row_groups():
    """One row group serves 3 processes: each reads a range of its rows, the ranges differ by a row at most and
    cover every row once; a process decodes only the row groups its range overlaps."""
    from lit_regression.batches import share_out
    from lit_regression.tables import Piece

    for counts, world in (([200], 3), ([100, 100], 3), ([64, 0, 64, 10], 4), ([5], 1)):
        shares = share_out(counts, world)
        rows = [sum(part.rows for part in share) for share in shares]
        assert max(rows) - min(rows) <= 1 and sum(rows) == sum(counts)
        for share in shares:
            assert len({part.piece for part in share}) == len(share)  # a piece once per process
    pieces = [Piece("f", 0, 0, 10)]
    decoded = {}

    def decode(piece, mask):  # a row's input is its index in the piece
        yield torch.tensor(np.flatnonzero(mask), dtype=torch.float32)[:, None], torch.zeros(int(mask.sum()), 1)

    for rank in range(3):
        loader = StreamBatches(pieces, [10], decode, lambda p: None, batch_size=2, rank=rank, world_size=3, equal=True)
        decoded[rank] = torch.cat([b[0] for b in loader])[:, 0].tolist()
        assert len(loader) == 2  # ceil(4 / 2) on every process
    assert sorted(sum(decoded.values(), [])) == list(range(10))
    assert decoded[0] == [0.0, 1.0, 2.0]


def test_too_few_rows_for_the_processes_is_refused_by_every_process():
    from lit_regression.errors import InputError
    from lit_regression.tables import Piece

    pieces = [Piece("f", i, i, 1) for i in range(2)]
    for rank in range(3):
        for equal, every in ((True, False), (False, True)):
            loader = StreamBatches(pieces, [1, 1], lambda p, m: iter(()), lambda p: None, batch_size=16,
                                   rank=rank, world_size=3, equal=equal, every_process=every, name="data.path='t'")
            with pytest.raises(InputError, match="2 rows of data.path='t' leave a process 0 rows"):
                len(loader)


# --- the preprocessing pass -----------------------------------------------------------------------------------------
def test_streamed_statistics_equal_numpy_over_the_training_rows(tmp_path):
    table = write_folder(tmp_path / "shop")
    dm = streamed(tmp_path / "shop", standardize_target=True)
    assert dm.feature_names == ("basket €", "minutes", "city=Lyon", "city=Nice", "city=Paris")
    state = dm.fit_preprocessing()
    train = train_rows(len(table["price"]))
    basket, minutes, price = (table[c][train].astype(float) for c in ("basket €", "minutes", "price"))
    filled = np.where(np.isnan(minutes), np.nanmean(minutes), minutes)
    assert state.fill["minutes"] == pytest.approx(np.nanmean(minutes), rel=1e-12)
    expected_mean = [basket.mean(), filled.mean(), 0, 0, 0]
    expected_scale = [basket.std(), filled.std(), 1, 1, 1]
    assert np.allclose(state.mean, expected_mean, rtol=1e-9, atol=0)
    assert np.allclose(state.scale, expected_scale, rtol=1e-9, atol=0)
    assert state.target_mean[0] == pytest.approx(price.mean(), rel=1e-9)
    assert state.target_scale[0] == pytest.approx(price.std(), rel=1e-9)
    assert dm.n_train == len(train)


def test_a_table_in_memory_and_streamed_gives_the_same_inputs_targets_and_preprocessing(tmp_path):
    """One table path: the same rows held in memory and streamed from row groups are checked, imputed, encoded
    and served alike (no rows held out, so that both splits take every row in order)."""
    table = write_folder(tmp_path / "shop", sizes=(230, 170), group=64)
    whole = pa.concat_tables([pq.read_table(tmp_path / "shop" / f"part-{k}.parquet") for k in (0, 1)])
    pq.write_table(whole, tmp_path / "whole.parquet")
    common = dict(target="price", batch_size=64, impute="mean", id_column="order id", val_fraction=0.0)
    memory = TableDataModule(path=str(tmp_path / "whole.parquet"), **common)
    stream = TableDataModule(path=str(tmp_path / "shop"), streaming=True, **common)
    for dm in (memory, stream):
        dm.setup("fit")
    assert memory.feature_names == stream.feature_names and memory.n_train == stream.n_train == len(table["price"])
    a, b = memory.fit_preprocessing(), stream.fit_preprocessing()
    assert a.categories == b.categories and a.fill["city"] == b.fill["city"]
    for name in ("mean", "scale"):
        assert np.allclose(getattr(a, name), getattr(b, name), rtol=1e-12, atol=0), name
    assert a.fill["minutes"] == pytest.approx(np.nanmean(table["minutes"].astype(float)), rel=1e-12)
    b.fill["minutes"] = a.fill["minutes"]  # the same filled cells, bit for bit, for the comparison of the inputs
    for split in ("train", "predict"):
        got = [torch.cat([batch[i] for batch in loader]) for loader in
               (getattr(dm, f"{split}_dataloader")() for dm in (memory, stream)) for i in (0, 1)]
        assert torch.equal(got[0], got[2]) and torch.equal(got[1], got[3]), split


def test_a_glob_and_a_single_file_are_sources_too(tmp_path):
    write_folder(tmp_path / "shop")
    whole = streamed(tmp_path / "shop")
    some = streamed(tmp_path / "shop" / "part-[01].parquet")
    one = streamed(tmp_path / "shop" / "part-2.parquet")
    assert whole.n_train > some.n_train > one.n_train > 0


# --- fit, predict, resume through the command line -----------------------------------------------------------------
def test_streamed_fit_reaches_the_least_squares_optimum_and_predicts_every_row_once(tmp_path):
    """One batch per epoch (batch_size above the training rows): L-BFGS on the streamed rows reaches the
    least-squares solution of numpy over the same rows; the predictions cover every row once, with the id."""
    table = write_folder(tmp_path / "shop", gaps=False)
    run_cli("fit", "--model", "LinearRegression", "--data", "TableDataModule", "--data.path", tmp_path / "shop",
            "--data.target", "price", "--data.streaming", "true", "--data.batch_size", "100000",
            "--data.id_column", "order id", "--trainer.max_epochs", "30", "--predictions.filename",
            "predictions.parquet", root=tmp_path / "runs")
    (run,) = versions(tmp_path / "runs")
    report = json.loads((run / "report.json").read_text())
    assert report["optimization"]["converged"] is True, report["optimization"]
    assert report["optimization"]["relative_gap"] <= 1e-6
    train = train_rows(len(table["price"]))
    onehot = np.stack([table["city"][train] == c for c in CITIES], 1).astype(float)
    x = np.column_stack([table["basket €"][train], table["minutes"][train], onehot])
    z, y = np.column_stack([x, np.ones(len(x))]), table["price"][train]
    coef = np.linalg.lstsq(z, y, rcond=None)[0]  # collinear (one-hot and bias): the residual is still unique
    # the model's inputs and targets are float32: the optimum of those rows is within their rounding of numpy's
    assert report["optimization"]["optimum"] == pytest.approx(np.mean((z @ coef - y) ** 2), rel=1e-6)
    predicted = ds.dataset(run / "predictions", format="parquet").to_table()
    assert sorted(predicted["row"].to_pylist()) == list(range(len(table["price"])))
    ids = dict(zip(predicted["row"].to_pylist(), predicted["order id"].to_pylist()))
    assert all(ids[i] == f"o{i}" for i in range(0, len(table["price"]), 37))


def test_held_out_tables_are_counted_tested_and_the_training_table_predicts_without_its_target(tmp_path, capsys):
    """--data.val_path's rows are counted in the streaming line and serve ``test`` when no test rows are held out;
    predicting the rows of data.path needs its features, not its target."""
    write_folder(tmp_path / "shop")
    val = pq.read_table(tmp_path / "shop" / "part-2.parquet")
    pq.write_table(val, tmp_path / "val.parquet")
    args = ["--model", "LinearRegression", "--data", "TableDataModule", "--data.path", tmp_path / "shop" / "part-[01].parquet",
            "--data.target", "price", "--data.streaming", "true", "--data.batch_size", "64", "--data.impute", "mean",
            "--data.id_column", "order id", "--data.val_path", tmp_path / "val.parquet", *QUIET]
    run_cli("fit", *args, "--trainer.max_epochs", "1", root=tmp_path / "runs")
    assert f"{val.num_rows:,} validation (data.val_path)" in capsys.readouterr().out
    ckpt = versions(tmp_path / "runs")[0] / "checkpoints" / "last.ckpt"
    tested = run_cli("test", "--ckpt_path", ckpt, *args, root=tmp_path / "test")
    assert f"test runs on the {val.num_rows} validation rows" in capsys.readouterr().out
    assert "test_loss" in tested.trainer.callback_metrics
    unlabelled = tmp_path / "unlabelled.parquet"
    pq.write_table(pq.read_table(tmp_path / "shop" / "part-0.parquet").drop_columns(["price"]), unlabelled)
    predicted = run_cli("predict", "--ckpt_path", ckpt, "--data.path", unlabelled, root=tmp_path / "predict")
    predicted = ds.dataset(written_predictions(predicted), format="csv").to_table()
    assert predicted.num_rows == pq.read_metadata(unlabelled).num_rows


def cli_process(*args, root: Path) -> subprocess.Popen:
    """test_faults' real process, with ``tests/`` on PYTHONPATH for the callbacks of streamed_callbacks."""
    return faults_process(*args, root=root, env=ENV)


def fit_args(folder: Path, epochs: int) -> list:
    return ["fit", "--model", "LinearRegression", "--model.optimizer", "adam", "--model.lr", "0.05",
            "--data", "TableDataModule", "--data.path", folder, "--data.target", "price", "--data.streaming", "true",
            "--data.batch_size", "50", "--data.shuffle", "true", "--data.shuffle_buffer", "100", "--data.impute",
            "mean", "--trainer.max_epochs", str(epochs), "--convergence.stop", "false",
            "--checkpoint.every_n_seconds", "0"]


@pytest.mark.slow
def test_a_kill_in_the_middle_of_an_epoch_resumes_bit_identical(tmp_path):
    """SIGKILL after batch 3 of epoch 2 (0-based): the resume starts again from the checkpoint of epoch 1 and
    replays epoch 2 in the same order (it depends on the seed and the epoch alone), so the run ends with the
    weights and optimizer state of a run that was never stopped. The killed and resumed runs keep their decoded
    rows in data.cache_dir (the resumed one decodes again in its first epoch), the uninterrupted one does not."""
    write_folder(tmp_path / "shop")
    cache = ["--data.cache_dir", tmp_path]
    killed = cli_process(*fit_args(tmp_path / "shop", 5), *cache, "--trainer.callbacks+=streamed_callbacks.KillAt",
                         "--trainer.callbacks.epoch", "2", "--trainer.callbacks.batch", "3", root=tmp_path / "killed")
    killed.communicate(timeout=240)
    assert killed.returncode == -signal.SIGKILL
    (run,) = versions(tmp_path / "killed")
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    resumed = cli_process(*fit_args(tmp_path / "shop", 5), *cache, "--ckpt_path", "last", root=tmp_path / "killed")
    _, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err[-3000:]
    full = cli_process(*fit_args(tmp_path / "shop", 5), root=tmp_path / "full")
    _, err = full.communicate(timeout=240)
    assert full.returncode == 0, err[-3000:]
    ours = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    theirs = torch.load(versions(tmp_path / "full")[0] / "checkpoints" / "last.ckpt", weights_only=True)
    assert_same_state(ours, theirs)


@pytest.mark.slow
def test_two_processes_see_every_training_row_once_per_epoch(tmp_path):
    """2-process DDP on the CPU over a folder of three files: per epoch, the rows the two processes trained on
    (their global row index) are the training rows, each once, in the same number of batches; the streamed
    predictions hold every row once, in one part per process."""
    table = write_folder(tmp_path / "shop")
    seen = tmp_path / "seen"
    process = cli_process(*fit_args(tmp_path / "shop", 2), "--trainer.strategy", "ddp", "--trainer.devices", "2",
                          "--trainer.callbacks+=streamed_callbacks.RowsSeen", "--trainer.callbacks.folder", seen,
                          root=tmp_path / "runs")
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    expected = train_rows(len(table["price"]))
    batches: set[str] = set()
    for epoch in (0, 1):
        rows = [np.load(seen / f"rank{r}-epoch{epoch}.npy") for r in (0, 1)]
        assert np.array_equal(np.sort(np.concatenate(rows)), expected)
        assert abs(len(rows[0]) - len(rows[1])) <= 1  # shared out by ranges
        batches |= {(seen / f"rank{r}-epoch{epoch}.batches").read_text() for r in (0, 1)}
    assert len(batches) == 1  # on both processes, in both epochs
    (run,) = versions(tmp_path / "runs")
    # the statistics merged from two processes' shares are bit for bit those of one process reading everything
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["TableDataModule"]
    assert saved == streamed(tmp_path / "shop", id_column=None).fit_preprocessing().state()
    parts = sorted(p.name for p in (run / "predictions").iterdir())
    assert parts == ["part-00000.csv", "part-00001.csv"]
    predicted = ds.dataset(run / "predictions", format="csv").to_table()
    assert sorted(predicted["row"].to_pylist()) == list(range(len(table["price"])))


# --- bad input: one line, exit 2 ------------------------------------------------------------------------------------
def bad_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    write_folder(tmp_path / "mixed", sizes=(50, 50))
    other = pq.read_table(tmp_path / "mixed" / "part-1.parquet")
    other = other.set_column(other.schema.get_field_index("minutes"), "minutes",
                             pa.array([str(v) for v in other["minutes"].to_pylist()]))
    pq.write_table(other, tmp_path / "mixed" / "part-1.parquet")
    write_folder(tmp_path / "typo", sizes=(200,), gaps=False)
    typo = pq.read_table(tmp_path / "typo" / "part-0.parquet")
    minutes = [f"{v:.3f}" for v in typo["minutes"].to_pylist()]
    minutes[150] = "12,5 min"  # row group 2 (rows 128-191), row 22 of it
    pq.write_table(typo.set_column(2, "minutes", pa.array(minutes)), tmp_path / "typo" / "part-0.parquet",
                   row_group_size=64)


@pytest.mark.parametrize("path, extra, expected", [
    ("empty", [], "is a folder without Parquet files"),
    ("nothing-*.parquet", [], "matches no file"),
    ("mixed", [], "the files' schemas disagree: column 'minutes' holds string in"),
    ("typo", [], "has a non-numeric value '12,5 min' at"),
    ("mixed/part-0.parquet", ["--data.impute", "median"], "the median is not available with data.streaming"),
    ("mixed/part-0.parquet", ["--data.cache_dir", "{d}/nowhere"], "is invalid: expected a folder that exists and can be written"),
])
def test_bad_streamed_input_is_one_line_and_exit_2(path, extra, expected, tmp_path, capsys):
    bad_folders(tmp_path)
    line = one_line_error(tmp_path, capsys, {}, ["--data.path", f"{{d}}/{path}", "--data.target", "price",
                                                 "--data.streaming", "true", "--data.batch_size", "32", *extra],
                          "TableDataModule")
    assert expected in line
    if path == "typo":
        assert "part-0.parquet', row group 2, row 22 (global row 150)" in line and "'minutes'" in line
    if path == "mixed":
        assert "part-1.parquet" in line


def test_streaming_needs_a_batch_size(tmp_path, capsys):
    write_folder(tmp_path / "shop")
    line = one_line_error(tmp_path, capsys, {}, ["--data.path", "{d}/shop", "--data.target", "price",
                                                 "--data.streaming", "true"], "TableDataModule")
    assert "data.streaming needs data.batch_size" in line


def test_a_folder_without_streaming_says_how_to_read_it(tmp_path, capsys):
    write_folder(tmp_path / "shop")
    line = one_line_error(tmp_path, capsys, {}, ["--data.path", "{d}/shop", "--data.target", "price"],
                          "TableDataModule")
    assert "is a folder: Parquet files of a folder or glob are read with --data.streaming true" in line
    line = one_line_error(tmp_path, capsys, {}, ["--data.path", "{d}/shop/part-0.parquet", "--data.target", "price",
                                                 "--data.cache_dir", "{d}"], "TableDataModule")
    assert "keeps streamed rows: it needs --data.streaming true" in line


def test_held_out_files_without_a_feature_and_a_test_without_rows_are_one_line(tmp_path, capsys):
    write_folder(tmp_path / "shop")
    other = pq.read_table(tmp_path / "shop" / "part-2.parquet").drop_columns(["city"])
    pq.write_table(other, tmp_path / "val.parquet")
    line = one_line_error(tmp_path, capsys, {}, ["--data.path", "{d}/shop/part-[01].parquet", "--data.target", "price",
                                                 "--data.streaming", "true", "--data.batch_size", "32",
                                                 "--data.val_path", "{d}/val.parquet"], "TableDataModule")
    assert "data.val_path=" in line and "has no feature column 'city'" in line
    from lit_regression.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["test", "--model", "LinearRegression", "--data", "TableDataModule", "--data.path", str(tmp_path / "shop"),
              "--data.target", "price", "--data.streaming", "true", "--data.batch_size", "32",
              "--data.val_fraction", "0", "--trainer.default_root_dir", str(tmp_path / "runs"), *QUIET])
    assert exit_info.value.code == 2
    assert "test has no rows" in capsys.readouterr().err
