"""A two-layer network: input -> hidden -> ReLU -> output (seed 000)."""

from __future__ import annotations

import torch
from torch import nn

from lit_regression.errors import InputError
from lit_regression.models.regression import RegressionModel


class TwoLayerRegression(RegressionModel):
    """``linear2(relu(linear1(x)))``, layers created in that order so a seed fixes them as seed 000 does.

    Args:
        hidden: width of the hidden layer.
        **kwargs: the arguments of :class:`RegressionModel` and :class:`LitModel`.
    """

    def __init__(self, hidden: int = 10, **kwargs) -> None:
        if hidden < 1:
            raise InputError(f"model hidden={hidden!r} is invalid: expected a whole number >= 1")
        super().__init__(**kwargs)
        self.linear1 = nn.Linear(self.hparams.n_features, hidden)
        self.linear2 = nn.Linear(hidden, self.hparams.n_outputs)

    def net(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(torch.relu(self.linear1(x)))

    def parameter_axes(self) -> dict[str, tuple[str, ...]]:
        return {"linear1.weight": ("hidden", "inputs"), "linear1.bias": ("hidden",),
                "linear2.weight": ("outputs", "hidden"), "linear2.bias": ("outputs",)}
