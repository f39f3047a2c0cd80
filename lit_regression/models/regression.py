"""Base of the regression models: loss chosen by name, regression metrics."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

from lit_regression.errors import InputError
from lit_regression.models.base import LitModel

LOSSES = {"mse": nn.MSELoss, "l1": nn.L1Loss, "huber": nn.HuberLoss}


class R2(R2Score):
    """R^2 that is NaN, not an error, for a split with fewer than two rows (seed 004 holds out one point)."""

    def compute(self) -> torch.Tensor:
        if int(self.total) < 2:
            return torch.tensor(float("nan"), device=self.total.device)
        return super().compute()


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

    def make_metrics(self) -> MetricCollection:
        return MetricCollection(
            {
                "mae": MeanAbsoluteError(),
                "mse": MeanSquaredError(),
                "rmse": MeanSquaredError(squared=False),
                "r2": R2(),
            },
            compute_groups=False,
        )

    def compute_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(outputs, target)

    def metric_inputs(self, outputs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if outputs.shape[-1] == 1:  # R2Score wants 1-d input for a single output
            return outputs.reshape(-1), target.reshape(-1)
        return outputs, target
