"""Linear regression, in the two forms the seeds use: an ``nn.Linear`` layer or two ``nn.Parameter``s."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from lit_regression.errors import InputError
from lit_regression.models.regression import RegressionModel


class LinearRegression(RegressionModel):
    """``y = x @ weight.T + bias``.

    Args:
        form: ``linear`` uses ``nn.Linear`` (state_dict keys ``linear.weight``, ``linear.bias``); ``parameter``
            uses two ``nn.Parameter``s drawn with ``torch.randn``, weights first (keys ``weights``, ``bias``),
            exactly as seeds 000-002 build their model.
        **kwargs: the arguments of :class:`RegressionModel` and :class:`LitModel` (``n_features``, ``n_outputs``,
            ``loss``, ``optimizer``, ``lr``, ``l2``, ``l1``, ``weight_decay``, ``train_metrics``).
    """

    def __init__(self, form: Literal["linear", "parameter"] = "linear", **kwargs) -> None:
        if form not in ("linear", "parameter"):
            raise InputError(f"model form={form!r} is invalid: expected 'linear' or 'parameter'")
        super().__init__(**kwargs)
        n_in, n_out = self.hparams.n_features, self.hparams.n_outputs
        if form == "linear":
            self.linear = nn.Linear(n_in, n_out)
        else:
            self.weights = nn.Parameter(torch.randn(n_out, n_in))
            self.bias = nn.Parameter(torch.randn(n_out))

    def linear_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.hparams.form == "linear":
            return self.linear.weight, self.linear.bias
        return self.weights, self.bias

    def net(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.form == "linear":
            return self.linear(x)
        return x @ self.weights.T + self.bias
