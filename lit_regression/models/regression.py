"""Base of the regression models: loss chosen by name, regression metrics."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torchmetrics import Metric

from lit_regression.errors import InputError
from lit_regression.models.base import LitModel

LOSSES = {"mse": nn.MSELoss, "l1": nn.L1Loss, "huber": nn.HuberLoss}


class RegressionMetrics(Metric):
    """Loss, MAE, MSE, RMSE and R^2 of one stage from one state: per output the sums of absolute errors, squared
    errors, targets and squared targets, then the loss weighted by rows and the rows, accumulated in float64 (R^2's
    total sum of squares, sum(y^2) - sum(y)^2 / n, cancels: in float32 a held-out split of nearly equal targets
    lost three digits; on MPS, which has no float64, the model sets the state to float32) and summed across
    processes by torchmetrics' own sync. Four torchmetrics classes
    (``MeanAbsoluteError``, ``MeanSquaredError`` twice, ``R2Score``) and ``MeanMetric`` would each keep, update,
    sync and reset their own states, which on small data costs more than the training step.

    ``compute`` returns Python floats, worked out in float64 from the sums: errors averaged over every row and
    output, R^2 averaged over the outputs (torchmetrics' ``uniform_average``), NaN, not an error, for a split with
    fewer than two rows (seed 004 holds out one point)."""

    full_state_update = False
    higher_is_better = None

    def __init__(self, n_outputs: int = 1) -> None:
        super().__init__()
        self.n_outputs = n_outputs
        self.add_state("sums", default=torch.zeros(4 * n_outputs + 2, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> None:
        n, dtype = len(target), self.sums.dtype
        preds, target = preds.to(dtype).reshape(n, -1), target.to(dtype).reshape(n, -1)
        error = preds - target
        # a column per sum: |e|, e^2, y, y^2 for every output, then the batch loss on every row (its sum is the
        # loss times the rows), and the rows
        columns = torch.cat([error.abs(), error.square(), target, target.square(),
                             loss.detach().to(dtype).expand(n, 1), error.new_ones(n, 1)], 1)
        self.sums += columns.sum(0)

    def compute(self) -> dict[str, float]:
        sums = self.sums.tolist()
        k, rows = self.n_outputs, sums[-1]
        abs_error, squared_error, target, squared_target = (sums[i * k:(i + 1) * k] for i in range(4))
        mse = sum(squared_error) / (rows * k)
        r2 = float("nan")
        if rows >= 2:  # 1 - residual / total sum of squares, per output, averaged
            r2 = sum(1 - e / (t2 - t * t / rows) if t2 - t * t / rows else float("nan")
                     for e, t, t2 in zip(squared_error, target, squared_target)) / k
        return {"loss": sums[-2] / rows, "mae": sum(abs_error) / (rows * k), "mse": mse, "rmse": math.sqrt(mse),
                "r2": r2}


class RegressionModel(LitModel):
    """A :class:`LitModel` for real-valued targets; logs ``*_loss``, ``*_mae``, ``*_mse``, ``*_rmse``, ``*_r2``.

    Args:
        loss: ``mse``, ``l1`` (mean absolute error) or ``huber``.
        **kwargs: the shared arguments of :class:`LitModel` (``n_features``, ``n_outputs``, ``optimizer``,
            ``lr``, ``l2``, ``l1``, ``weight_decay``, ``train_metrics``).
    """

    def __init__(self, loss: Literal["mse", "l1", "huber"] = "mse", **kwargs) -> None:
        if loss not in LOSSES:
            raise InputError(f"model loss={loss!r} is invalid: expected one of {sorted(LOSSES)}")
        super().__init__(**kwargs)
        self.loss_fn = LOSSES[loss]()
        # the fitted target scaling: training fits (y - target_mean) / target_scale, forward returns y's units
        self.register_buffer("target_mean", torch.zeros(self.hparams.n_outputs))
        self.register_buffer("target_scale", torch.ones(self.hparams.n_outputs))

    def scaling_buffers(self) -> dict[str, torch.Tensor]:
        return {**super().scaling_buffers(), "target_mean": self.target_mean, "target_scale": self.target_scale}

    def scale_targets(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.target_mean) / self.target_scale if self._scaled else y

    def unscale_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs * self.target_scale + self.target_mean if self._scaled else outputs

    def make_metrics(self) -> RegressionMetrics:
        return RegressionMetrics(self.hparams.n_outputs)

    def compute_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(outputs, target)

    def newton_loss(self) -> str | None:
        loss = self.hparams.loss
        return loss if loss in ("mse", "huber") and not self.hparams.l1 and self.linear_parameters() else None
