"""What every model shares: one step for train/val/test, epoch metrics, the default optimizer, predict."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric, MetricCollection

from lit_regression.errors import InputError

STAGES = ("train", "val", "test")


class LitModel(L.LightningModule):
    """Base of the lit_regression models. Subclasses build layers, then define ``forward``, ``compute_loss``,
    ``make_metrics`` and ``predict_outputs``.

    Args:
        n_features: number of input columns (linked from the datamodule by the CLI).
        n_outputs: number of regression targets, or of classes (linked from the datamodule by the CLI).
        lr: learning rate of the default optimizer, SGD. ``--optimizer`` on the command line replaces it.
        weight_decay: L2 penalty of the default optimizer.
        l1: strength of an L1 penalty on the weights (not the biases), added to the training loss.
        train_metrics: also compute the metrics (``train_mae``, ``train_r2``, ``train_acc`` ...) on the training
            batches; ``train_loss`` is logged either way. Off saves a metric update per training step, about 5% of
            a step on 2,000,000 x 32 rows in batches of 65,536.
    """

    task = "regression"

    def __init__(
        self,
        n_features: int = 1,
        n_outputs: int = 1,
        lr: float = 0.01,
        weight_decay: float = 0.0,
        l1: float = 0.0,
        train_metrics: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("n_features", n_features), ("n_outputs", n_outputs), ("lr", lr)):
            if value is None or value <= 0:
                raise InputError(f"model {name}={value!r} is invalid: expected a number greater than 0")
        for name, value in (("weight_decay", weight_decay), ("l1", l1)):
            if value < 0:
                raise InputError(f"model {name}={value!r} is invalid: expected a number >= 0")
        self.save_hyperparameters()
        metrics = self.make_metrics()
        stages = STAGES if train_metrics else tuple(s for s in STAGES if s != "train")
        self.stage_metrics = nn.ModuleDict({f"{s}_metrics": metrics.clone(prefix=f"{s}_") for s in stages})
        self.stage_losses = nn.ModuleDict({f"{s}_loss": MeanMetric() for s in STAGES})

    # --- for subclasses ---------------------------------------------------------------------------------------
    def make_metrics(self) -> MetricCollection:
        raise NotImplementedError

    def compute_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def metric_inputs(self, outputs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return outputs, target

    def predict_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        """What ``predict`` returns for a batch of raw outputs."""
        return outputs

    # --- the shared step --------------------------------------------------------------------------------------
    def _stage_metrics(self, stage: str) -> MetricCollection | None:
        """The stage's metrics, or ``None`` for training with ``train_metrics=False``."""
        key = f"{stage}_metrics"
        return self.stage_metrics[key] if key in self.stage_metrics else None

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        outputs = self(x)
        loss = self.compute_loss(outputs, y)
        self.stage_losses[f"{stage}_loss"].update(loss.detach(), len(x))
        metrics = self._stage_metrics(stage)
        if metrics is not None:
            metrics.update(*self.metric_inputs(outputs.detach(), y))
        if stage == "train" and self.hparams.l1 > 0:
            loss = loss + self.hparams.l1 * sum(p.abs().sum() for n, p in self.named_parameters() if "bias" not in n)
        return loss

    def _epoch_values(self, stage: str) -> dict[str, torch.Tensor] | None:
        """The stage's loss and metrics over the epoch's batches (``None`` if it had none); resets them."""
        loss = self.stage_losses[f"{stage}_loss"]
        if not loss.update_called:
            return None
        values = {f"{stage}_loss": loss.compute()}
        loss.reset()
        metrics = self._stage_metrics(stage)
        if metrics is not None:
            values.update(metrics.compute())
            metrics.reset()
        return values

    def _log_epoch(self, stage: str) -> None:
        """Log the stage's epoch loss and metrics once, as ``{stage}_loss``, ``{stage}_<metric>``.

        The torchmetrics objects accumulate over the epoch's batches (weighted by rows) and sync across
        processes in ``compute()``, so the values are final here. ``validate`` and ``test`` hand them to
        ``self.log`` (Lightning returns and prints them). During ``fit`` they go straight to
        ``trainer.callback_metrics`` (what checkpointing, early stopping and the callbacks read) and to the
        loggers, at the step and with the ``epoch`` key that Lightning's own logging uses (the epoch's last
        optimizer step, counted from 0, for train and validation values alike): ``self.log`` stores
        every value in a result collection, moves and reduces it, and costs ~0.3 ms per key, more than a whole
        training step on the seed data (benchmarks/README.md).
        """
        values = self._epoch_values(stage)
        if values is None:
            return
        trainer = self.trainer
        if trainer.state.fn != "fit":
            self.log_dict(values, on_step=False, on_epoch=True, sync_dist=True)  # already synced: a no-op mean
            return
        trainer.callback_metrics.update(values)
        if trainer.sanity_checking or not trainer.loggers:  # Lightning logs nothing from the sanity check either
            return
        scalars = {name: value.item() for name, value in values.items()}
        scalars["epoch"] = trainer.current_epoch
        step = max(trainer.global_step - 1, 0)
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        x, rows = batch
        return {"row": rows, "output": self.predict_outputs(self(x))}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse, with one message, a checkpoint of another model family or shape, or with non-finite weights."""
        from lit_regression.checkpointing import check_compatible

        check_compatible(self, checkpoint)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def linear_parameters(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(weight, bias)`` of shape ``(n_outputs, n_features)`` and ``(n_outputs,)`` for models that are one
        affine map, else ``None``."""
        return None
