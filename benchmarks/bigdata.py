"""Throughput on data too big for per-sample loading: make_regression-like float32 data (rows x features),
``LinearRegression`` with MSE and SGD, mini-batches of ``batch_size`` rows, reshuffled every epoch.

Three ways to feed the same training steps, each timed per epoch (the time between the starts of consecutive
epochs, so that everything done between epochs counts; the first epoch is left out as warm-up):

* ``lightning_epochs``: ``lit-regression fit`` (``LitRegressionCLI``, in this process) with ``LinearRegression``
  (``train_metrics`` off unless asked: the plain loops compute the loss only) and
  :class:`BenchRegressionDataModule`, a :class:`TensorDataModule` (so
  :class:`~lit_regression.batches.TensorBatches` serves the batches): logger, checkpoint callback and checkpoint
  writer, and the always-on callbacks are whatever the CLI configures (``--checkpoint.monitor null``: there is no
  held-out split, as in ``configs/make_regression.yaml``).
* ``plain_epochs``: a plain loop that permutes the rows once per epoch (``index_select`` of the whole data) and
  slices batches, then steps the model; with ``per_batch=True`` it gathers each batch's rows of the permutation
  instead, as ``TensorBatches`` does (about half the gathering time: each batch is written while in cache).
* ``dataloader_rows_per_s``: ``DataLoader(TensorDataset(x, y), batch_size, shuffle=True)`` feeding the same
  plain steps, on a few batches only (it is orders of magnitude slower).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable

import torch
from torch import nn

from lit_regression.datamodules import TensorDataModule


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def epoch_timer(device: str):
    """A Lightning callback whose ``starts`` are the ``time.perf_counter()`` of every epoch's start and of the end
    of training (after the device has finished its work)."""
    import lightning as L

    class EpochTimer(L.Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            _sync(device)
            self.starts.append(time.perf_counter())

        def on_train_end(self, trainer, pl_module) -> None:
            _sync(device)
            self.starts.append(time.perf_counter())

    return EpochTimer()


def plain_model(features: int, device: str, lr: float = 0.01) -> tuple[nn.Module, Callable, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Linear(features, 1).to(device)
    return model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=lr)


def plain_epochs(x: torch.Tensor, y: torch.Tensor, batch_size: int, epochs: int, device: str = "cpu",
                 seed: int = 42, per_batch: bool = False) -> list[float]:
    """Seconds of each epoch of a plain in-memory loop: one permutation per epoch, the data permuted with it and
    batches sliced out (the usual way), or with ``per_batch`` each batch's rows gathered on their own (the way
    ``TensorBatches`` does it)."""
    x, y = x.to(device), y.to(device)
    model, loss_fn, optimizer = plain_model(x.shape[1], device)
    n = len(x)
    times = []
    _sync(device)
    for epoch in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).to(device)
        if not per_batch:
            xs, ys = x.index_select(0, order), y.index_select(0, order)
        for i in range(0, n, batch_size):
            if per_batch:
                rows = order[i : i + batch_size]
                xb, yb = x.index_select(0, rows), y.index_select(0, rows)
            else:
                xb, yb = xs[i : i + batch_size], ys[i : i + batch_size]
            loss = loss_fn(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def dataloader_rows_per_s(x: torch.Tensor, y: torch.Tensor, batch_size: int, batches: int,
                          device: str = "cpu") -> float:
    """Rows per second of ``DataLoader(TensorDataset(x, y), batch_size, shuffle=True)`` feeding the plain loop,
    over ``batches`` batches after one warm-up batch (the first batch also pays for the shuffle)."""
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    model, loss_fn, optimizer = plain_model(x.shape[1], device)
    rows = 0
    start = None
    for i, (xb, yb) in enumerate(loader):
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        loss = loss_fn(model(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        _sync(device)
        if i == 0:
            start = time.perf_counter()
            continue
        rows += len(xb)
        if i >= batches:
            break
    return rows / (time.perf_counter() - start)


_DATA: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}


def make_data(rows: int, features: int, seed: int = 1, noise: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``y = x @ coef + noise`` with standard normal ``x`` and coefficients uniform in [0, 100), as
    ``sklearn.datasets.make_regression`` draws them (all features informative), in float32, made with torch.
    Cached: the same tensors serve every run of the process."""
    key = (rows, features, seed)
    if key not in _DATA:
        _DATA.clear()
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(rows, features, generator=g)
        coef = 100 * torch.rand(features, 1, generator=g)
        y = x @ coef + noise * torch.randn(rows, 1, generator=g)
        _DATA[key] = (x, y)
    return _DATA[key]


class BenchRegressionDataModule(TensorDataModule):
    """The rows of :func:`make_data` as the training split (no held-out rows, as ``configs/make_regression.yaml``)
    and the first 1024 rows to predict (the CLI predicts after ``fit``).

    Args:
        rows: number of rows.
        features: number of input columns.
        data_seed: seed of the data.
        **kwargs: batching options of :class:`TensorDataModule` (``batch_size``, ``shuffle``, ``on_device``).
    """

    def __init__(self, rows: int = 2_000_000, features: int = 32, data_seed: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rows, self.features, self.data_seed = rows, features, data_seed
        self.feature_names = tuple(f"x{i}" for i in range(features))

    def make_splits(self) -> dict[str, tuple[torch.Tensor, ...]]:
        x, y = make_data(self.rows, self.features, self.data_seed)
        return {"train": (x, y), "predict": (x[:1024], torch.arange(1024))}


def lightning_epochs(rows: int, features: int, batch_size: int, epochs: int, device: str = "cpu",
                     root: str | None = None, on_device: bool = False, train_metrics: bool = False) -> list[float]:
    """Seconds of each epoch of ``lit-regression fit`` (run in this process) with ``LinearRegression`` (MSE, SGD
    lr 0.01) on :class:`BenchRegressionDataModule`: everything as the CLI configures a run (logger, checkpoints,
    callbacks), except that the figures and the parameter report at the end of ``fit`` are off (they come after
    the last epoch and are not timed; they would only make the benchmark slower). ``train_metrics`` is the
    model's argument: off, the fit computes what the plain loops compute, the loss (and logs ``train_loss``)."""
    from lit_regression.cli import LitRegressionCLI

    module = "bigdata"  # benchmarks/ is on sys.path: run.py puts it there, and it is the folder of this script

    own = root is None
    root = root or tempfile.mkdtemp(prefix="bench_bigdata_")
    timer = epoch_timer(device)
    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    args = [
        "fit", "--model", "lit_regression.models.LinearRegression", "--model.init_args.loss", "mse",
        "--model.init_args.optimizer", "sgd", "--model.init_args.lr", "0.01",  # the plain loops' SGD, not auto's Adam
        "--model.init_args.train_metrics", str(train_metrics).lower(),
        "--data", f"{module}.BenchRegressionDataModule", "--data.init_args.rows", str(rows),
        "--data.init_args.features", str(features), "--data.init_args.batch_size", str(batch_size),
        "--data.init_args.shuffle", "true", "--data.init_args.on_device", str(on_device).lower(),
        "--trainer.max_epochs", str(epochs), "--trainer.accelerator", accelerator, "--trainer.devices", "1",
        "--trainer.default_root_dir", root, "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--checkpoint.monitor", "null",
        "--plots.enabled", "false", "--report.enabled", "false",
    ]
    try:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            LitRegressionCLI(args=args, trainer_defaults={"callbacks": [timer]})
    finally:
        if own:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    # on_train_end comes after the last epoch's checkpoint: the intervals cover whole epochs
    return [b - a for a, b in zip(timer.starts, timer.starts[1:])]


def bare_lightning_epochs(x: torch.Tensor, y: torch.Tensor, batch_size: int, epochs: int,
                          device: str = "cpu") -> list[float]:
    """Seconds of each epoch of the smallest LightningModule doing the plain loops' maths (``nn.Linear``, MSE, SGD
    lr 0.01) on the same ``TensorBatches`` (gathered per batch, reshuffled every epoch), with a bare ``Trainer``
    (no logger, checkpoints, callbacks or metrics): Lightning's own per-step cost, the floor under the fit's."""
    import lightning as L

    from lit_regression.batches import TensorBatches

    class Bare(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model, self.loss_fn, _ = plain_model(x.shape[1], "cpu")

        def training_step(self, batch, batch_idx):
            return self.loss_fn(self.model(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    timer = epoch_timer(device)
    trainer = L.Trainer(max_epochs=epochs, accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer])
    batches = TensorBatches(x.to(device), y.to(device), batch_size=batch_size, shuffle=True, seed=42)
    trainer.fit(Bare(), train_dataloaders=batches)
    return [b - a for a, b in zip(timer.starts, timer.starts[1:])]


def _quiet_lightning() -> None:
    import logging

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


if __name__ == "__main__":  # a quick look: python benchmarks/bigdata.py
    _quiet_lightning()
    import bigdata  # the CLI finds the datamodule as bigdata.BenchRegressionDataModule

    n = int(os.environ.get("ROWS", 2_000_000))
    xs, ys = bigdata.make_data(n, 32)
    print("plain     ", [f"{t:.3f}" for t in bigdata.plain_epochs(xs, ys, 65536, 3)])
    print("lightning ", [f"{t:.3f}" for t in bigdata.lightning_epochs(n, 32, 65536, 3)])
    print("dataloader", f"{dataloader_rows_per_s(xs, ys, 65536, 2):.0f} rows/s")
