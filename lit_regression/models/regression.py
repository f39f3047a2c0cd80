"""Base of the regression models: loss chosen by name, regression metrics."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torchmetrics import Metric

from lit_regression.errors import InputError
from lit_regression.models.base import LitModel

LOSSES = {"mse": nn.MSELoss, "l1": nn.L1Loss, "huber": nn.HuberLoss}


class RegressionMetrics(Metric):
    """MAE, MSE, RMSE and R^2 of one stage from one update per batch: the sums they share (absolute and squared
    errors, targets and squared targets, per output) are accumulated once, where four torchmetrics classes
    (``MeanAbsoluteError``, ``MeanSquaredError`` twice, ``R2Score``) each keep and sync their own. The values are
    those classes': errors averaged over every row and output, R^2 averaged over the outputs (``uniform_average``),
    and NaN, not an error, for a split with fewer than two rows (seed 004 holds out one point). Summed in float32
    (float64 cannot live on MPS), across processes by torchmetrics' own sync."""

    full_state_update = False
    higher_is_better = None

    def __init__(self, n_outputs: int = 1) -> None:
        super().__init__()
        for name in ("abs_error", "squared_error", "target", "squared_target"):
            self.add_state(name, default=torch.zeros(n_outputs), dist_reduce_fx="sum")
        self.add_state("rows", default=torch.zeros(()), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        preds, target = preds.float().reshape(len(preds), -1), target.float().reshape(len(target), -1)
        error = preds - target
        self.abs_error += error.abs().sum(0)
        self.squared_error += error.square().sum(0)
        self.target += target.sum(0)
        self.squared_target += target.square().sum(0)
        self.rows += len(target)

    def compute(self) -> dict[str, torch.Tensor]:
        cells = self.rows * len(self.target)
        mse = self.squared_error.sum() / cells
        total = self.squared_target - self.target.square() / self.rows  # sum of squares about the mean
        r2 = (1 - self.squared_error / total).mean() if self.rows >= 2 else torch.full_like(mse, float("nan"))
        return {"mae": self.abs_error.sum() / cells, "mse": mse, "rmse": mse.sqrt(), "r2": r2}


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
