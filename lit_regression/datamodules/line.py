"""Points on a straight line ``y = weight * x + bias``: the seeds' first dataset."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

# scikit-learn is imported where it is used: it imports pandas, half a second of every start-up
from lit_regression.datamodules.base import TensorDataModule, check_positive, split_counts
from lit_regression.errors import InputError


class LineDataModule(TensorDataModule):
    """Points on ``y = weight * x + bias``, on a grid or drawn uniformly, with optional Gaussian noise.

    The held-out split serves validation and test alike (the seeds' "test" split); prediction runs on every
    point in input order.

    Args:
        weight: true slope.
        bias: true intercept.
        start: first grid point, or the low end of the uniform draw.
        end: grid end (excluded), or the high end of the uniform draw.
        step: grid spacing: the inputs are ``torch.arange(start, end, step)``.
        n_samples: draw this many inputs uniformly from ``[start, end)`` instead of using the grid.
        noise: standard deviation of Gaussian noise added to ``y``.
        split: ``sequential`` holds out the last rows (the seeds' ``X[:int(0.8 * n)]``); ``random`` splits as
            scikit-learn's ``train_test_split(test_size=val_size, random_state=seed)``.
        val_size: held-out fraction in [0, 1), or a whole number of rows.
        **kwargs: batching options of :class:`TensorDataModule` (``batch_size``, ``shuffle``, ``seed``,
            ``on_device``).
    """

    def __init__(
        self,
        weight: float = 0.7,
        bias: float = 0.3,
        start: float = 0.0,
        end: float = 1.0,
        step: float = 0.02,
        n_samples: int | None = None,
        noise: float = 0.0,
        split: Literal["sequential", "random"] = "sequential",
        val_size: int | float = 0.2,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if end <= start:
            raise InputError(f"end={end!r} is invalid: expected a number greater than start={start!r}")
        check_positive("step", step)
        check_positive("n_samples", n_samples, allow_none=True)
        if noise < 0:
            raise InputError(f"noise={noise!r} is invalid: expected a standard deviation >= 0")
        if split not in ("sequential", "random"):
            raise InputError(f"split={split!r} is invalid: expected 'sequential' or 'random'")
        self.weight, self.bias = weight, bias
        self.n_rows = n_samples if n_samples is not None else len(torch.arange(start, end, step))
        self.n_val = split_counts(self.n_rows, val_size, "val_size")

    def inputs(self) -> torch.Tensor:
        """The inputs as a column, float32, in input order."""
        h = self.hparams
        if h.n_samples is None:
            return torch.arange(h.start, h.end, h.step).unsqueeze(1)
        generator = torch.Generator().manual_seed(self.seed)
        return h.start + (h.end - h.start) * torch.rand(h.n_samples, 1, generator=generator)

    def make_splits(self) -> dict[str, tuple[torch.Tensor, ...]]:
        x = self.inputs()
        y = self.weight * x + self.bias
        if self.hparams.noise > 0:
            generator = torch.Generator().manual_seed(self.seed + 1)
            y = y + self.hparams.noise * torch.randn(y.shape, generator=generator)
        rows = torch.arange(len(x))
        if self.hparams.split == "random" and self.n_val > 0:
            from sklearn.model_selection import train_test_split
            train, val = train_test_split(np.arange(len(x)), test_size=self.n_val, random_state=self.seed)
            train, val = torch.as_tensor(train), torch.as_tensor(val)
        else:
            train, val = rows[: len(x) - self.n_val], rows[len(x) - self.n_val :]
        self.label_rows(len(x), val.numpy())
        held_out = (x[val], y[val])
        return {"train": (x[train], y[train]), "val": held_out, "test": held_out, "predict": (x, rows)}

    def true_parameters(self) -> dict[str, list[float]]:
        """The parameters the data was made with."""
        return {"weight": [[self.weight]], "bias": [self.bias]}
