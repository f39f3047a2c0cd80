"""Plain PyTorch reference for ``configs/line_linear.yaml`` (seed 002): the same data, model, loss, optimizer and
epochs as ``lit-regression fit --config configs/line_linear.yaml``, written without Lightning.

Two levels of work, so that the benchmark can compare like with like:

* bare (default): per epoch one full-batch training step on the 40 training points and one evaluation of the
  loss on the 10 held-out points; nothing else.
* ``--bookkeeping``: the same, plus the work the CLI does per epoch besides the maths: the same torchmetrics
  (``MeanMetric`` loss and MAE/MSE/RMSE/R2, for train and val, updated per batch and computed once per epoch),
  the same scalars written with TensorBoard's ``SummaryWriter.add_scalar`` every epoch (the five train and five
  val scalars plus ``epoch`` twice, as Lightning's logger does), and checkpoints written with ``torch.save``
  when the CLI's checkpoint callback writes them (``monitor="val_loss"``, ``save_top_k=1``): at the end of every
  ``every_n_epochs``-th epoch, ``epoch=E-step=S.ckpt`` if ``val_loss`` improved (the previous one removed; off
  with ``best_checkpoints=False``), and ``last.ckpt`` as ``last`` says: ``"every"`` such epoch (lit_regression's
  ``ResumableCheckpoint``), ``"with_best"`` (along with a new ``epoch=*.ckpt``: Lightning's ``ModelCheckpoint``
  with ``save_last=True``) or ``"never"``. ``benchmarks/run.py`` finds out which the CLI does by counting its
  writes. The checkpoint dict has the model and optimizer state and the global random states, as the CLI's
  (``RandomState`` callback) does, so it is about the same size on disk (20 kB).

Run as a script (``python benchmarks/plain_line.py --epochs 1000 [--bookkeeping] [--root DIR]``) it includes its
imports, which is what the whole-process figure of ``benchmarks/run.py`` compares against. ``train`` is also
called in-process by the per-epoch figure.

The model is seeded as the CLI seeds it (``seed_everything(42)`` then ``nn.Linear(1, 1)``), so after 1000
epochs it learns the same parameters as the CLI (weight 0.696809, bias 0.302509): the check that the steps are
the same.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

import torch
from torch import nn


def line_data(device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``y = 0.7 x + 0.3`` on ``arange(0, 1, 0.02)``, first 80% for training (LineDataModule, sequential)."""
    x = torch.arange(0.0, 1.0, 0.02).unsqueeze(1)
    y = 0.7 * x + 0.3
    n_train = len(x) - 10
    return tuple(t.to(device) for t in (x[:n_train], y[:n_train], x[n_train:], y[n_train:]))


LAST = ("every", "with_best", "never")


class _Bookkeeping:
    """Metrics, TensorBoard scalars and checkpoints as the CLI keeps them, without Lightning."""

    def __init__(self, root: str, model: nn.Module, optimizer: torch.optim.Optimizer, device: str,
                 last: str = "every", every_n_epochs: int = 1, best_checkpoints: bool = True) -> None:
        import numpy as np
        from torch.utils.tensorboard import SummaryWriter
        from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError, MetricCollection, R2Score

        self.np = np
        self.model, self.optimizer = model, optimizer
        self.losses, self.metrics = {}, {}
        for stage in ("train", "val"):
            self.losses[stage] = MeanMetric().to(device)
            self.metrics[stage] = MetricCollection(
                {"mae": MeanAbsoluteError(), "mse": MeanSquaredError(), "rmse": MeanSquaredError(squared=False),
                 "r2": R2Score()},
                prefix=f"{stage}_", compute_groups=False,
            ).to(device)
        self.writer = SummaryWriter(os.path.join(root, "tb"))
        self.ckpt_dir = os.path.join(root, "checkpoints")
        os.makedirs(self.ckpt_dir, exist_ok=True)
        self.best = float("inf")
        self.best_path: str | None = None
        if last not in LAST:
            raise ValueError(f"last={last!r}: expected one of {LAST}")
        self.last = last
        self.every_n_epochs = every_n_epochs
        self.best_checkpoints = best_checkpoints
        self.writes = 0

    def update(self, stage: str, outputs: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> None:
        self.losses[stage].update(loss.detach(), len(target))
        self.metrics[stage].update(outputs.detach().reshape(-1), target.reshape(-1))

    def log(self, stage: str, epoch: int, step: int) -> dict[str, float]:
        values = {f"{stage}_loss": self.losses[stage].compute(), **self.metrics[stage].compute()}
        self.losses[stage].reset()
        self.metrics[stage].reset()
        values = {k: float(v) for k, v in values.items()}
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.add_scalar("epoch", epoch, step)
        return values

    def checkpoint(self, epoch: int, step: int, val_loss: float) -> None:
        if self.every_n_epochs < 1 or (epoch + 1) % self.every_n_epochs:
            return
        improved = val_loss < self.best
        if improved:
            self.best = val_loss
        write_best = improved and self.best_checkpoints
        write_last = self.last == "every" or (self.last == "with_best" and write_best)
        if not (write_best or write_last):
            return
        np = self.np
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state = {
            "epoch": epoch,
            "global_step": step,
            "state_dict": self.model.state_dict(),
            "optimizer_states": [self.optimizer.state_dict()],
            "random_state": {
                "torch": torch.get_rng_state(),
                "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                          "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
                "python": random.getstate(),
            },
            "best_model_score": val_loss,
        }
        if write_best:
            path = os.path.join(self.ckpt_dir, f"epoch={epoch}-step={step}.ckpt")
            torch.save(state, path)
            self.writes += 1
            if self.best_path is not None and self.best_path != path:
                os.remove(self.best_path)
            self.best_path = path
        if write_last:
            torch.save(state, os.path.join(self.ckpt_dir, "last.ckpt"))
            self.writes += 1

    def close(self) -> None:
        self.writer.close()


def train(epochs: int, bookkeeping: bool = False, root: str | None = None, device: str = "cpu",
          seed: int = 42, last: str = "every", every_n_epochs: int = 1, best_checkpoints: bool = True,
          epoch_starts: list[float] | None = None) -> dict:
    """Train the seed-002 line model for ``epochs`` full-batch epochs; returns the learned parameters (and the
    number of checkpoint writes with ``bookkeeping``). ``epoch_starts`` gets ``time.perf_counter()`` at the start
    of every epoch and once after the last."""
    torch.manual_seed(seed)
    random.seed(seed)
    x, y, xv, yv = line_data(device)
    model = nn.Linear(1, 1).to(device)
    loss_fn = nn.L1Loss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    own_root = None
    if bookkeeping and root is None:
        root = own_root = tempfile.mkdtemp(prefix="plain_line_")
    book = (_Bookkeeping(root, model, optimizer, device, last, every_n_epochs, best_checkpoints)
            if bookkeeping else None)
    for epoch in range(epochs):
        if epoch_starts is not None:
            epoch_starts.append(time.perf_counter())
        step = epoch + 1
        model.train()
        outputs = model(x)
        loss = loss_fn(outputs, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if book is not None:
            book.update("train", outputs, y, loss)
        model.eval()
        with torch.no_grad():
            val_outputs = model(xv)
            val_loss = loss_fn(val_outputs, yv)
        if book is not None:
            book.update("val", val_outputs, yv, val_loss)
            values = book.log("val", epoch, step)
            book.log("train", epoch, step)
            book.checkpoint(epoch, step, values["val_loss"])
    if epoch_starts is not None:
        epoch_starts.append(time.perf_counter())
    result = {"weight": float(model.weight.detach().reshape(-1)[0]), "bias": float(model.bias.detach()[0])}
    if book is not None:
        book.close()
        result["checkpoint_writes"] = book.writes
    if own_root is not None:
        import shutil

        shutil.rmtree(own_root, ignore_errors=True)
    return result


def train_bare_lightning(epochs: int, device: str = "cpu", seed: int = 42) -> dict:
    """The maths of :func:`train` (no bookkeeping) as the smallest LightningModule and ``Trainer.fit``: no logger,
    no checkpoints, no callbacks, no progress bar, full-batch tensors as the loaders. What Lightning's own loop
    costs per epoch on top of the bare plain loop, whatever a module logs or saves (the floor under figure 1)."""
    import lightning as L

    class Full:  # one full batch per epoch
        def __init__(self, *tensors: torch.Tensor) -> None:
            self.tensors = tensors

        def __iter__(self):
            yield self.tensors

        def __len__(self) -> int:
            return 1

    class Bare(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = nn.Linear(1, 1)
            self.loss_fn = nn.L1Loss()

        def training_step(self, batch, batch_idx):
            return self.loss_fn(self.model(batch[0]), batch[1])

        def validation_step(self, batch, batch_idx):
            self.loss_fn(self.model(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    torch.manual_seed(seed)
    x, y, xv, yv = line_data(device)
    module = Bare()
    trainer = L.Trainer(max_epochs=epochs, accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=Full(x, y), val_dataloaders=Full(xv, yv))
    weight = module.model.weight.detach().reshape(-1)[0]
    return {"weight": float(weight), "bias": float(module.model.bias.detach()[0])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--bookkeeping", action="store_true", help="torchmetrics, TensorBoard and checkpoints too")
    parser.add_argument("--root", default=None, help="folder for TensorBoard and checkpoints (default: a temp one)")
    parser.add_argument("--last", choices=LAST, default="every",
                        help="with --bookkeeping: when last.ckpt is written (default: every checkpoint epoch)")
    parser.add_argument("--every-n-epochs", type=int, default=1,
                        help="with --bookkeeping: consider checkpoints only at the end of every n-th epoch (0: none)")
    parser.add_argument("--no-best-checkpoints", action="store_true",
                        help="with --bookkeeping: no epoch=*.ckpt files (save_top_k 0)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bare-lightning", action="store_true",
                        help="the same maths as the smallest LightningModule and Trainer.fit (train_bare_lightning)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.bare_lightning:
        result = train_bare_lightning(args.epochs, args.device)
        print(f"plain_line --bare-lightning: {args.epochs} epochs in {time.perf_counter() - start:.3f}s: weight "
              f"{result['weight']:.6f}, bias {result['bias']:.6f}")
        return
    result = train(args.epochs, args.bookkeeping, args.root, args.device, last=args.last,
                   every_n_epochs=args.every_n_epochs, best_checkpoints=not args.no_best_checkpoints)
    print(f"plain_line: {args.epochs} epochs in {time.perf_counter() - start:.3f}s: weight {result['weight']:.6f}, "
          f"bias {result['bias']:.6f}" + (f", {result['checkpoint_writes']} checkpoint writes"
                                          if "checkpoint_writes" in result else ""))


if __name__ == "__main__":
    sys.exit(main())
