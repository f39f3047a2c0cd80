"""scikit-learn's ``make_regression``: a linear problem of any size whose true coefficients are known."""

from __future__ import annotations

import numpy as np
import torch

# scikit-learn is imported where it is used: it imports pandas, half a second of every start-up
from lit_regression.datamodules.base import TensorDataModule, check_positive, split_counts
from lit_regression.errors import InputError


class MakeRegressionDataModule(TensorDataModule):
    """Data from ``sklearn.datasets.make_regression``, split at random into train and held-out rows.

    Args:
        n_samples: number of rows.
        n_features: number of input columns.
        n_informative: columns that carry signal (default: all of them).
        n_targets: number of regression outputs.
        noise: standard deviation of the Gaussian noise on the targets.
        intercept: the true bias added to every target.
        random_state: seed of ``make_regression`` (the data); the split uses ``seed``.
        val_size: held-out fraction in [0, 1) or row count; 0 trains on every row, as seed 004 does.
        **kwargs: batching options of :class:`TensorDataModule`.
    """

    def __init__(
        self,
        n_samples: int = 100,
        n_features: int = 1,
        n_informative: int | None = None,
        n_targets: int = 1,
        noise: float = 0.0,
        intercept: float = 0.0,
        random_state: int = 1,
        val_size: int | float = 0.2,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        for name in ("n_samples", "n_features", "n_targets"):
            check_positive(name, self.hparams[name])
        if noise < 0:
            raise InputError(f"noise={noise!r} is invalid: expected a standard deviation >= 0")
        self.n_val = split_counts(n_samples, val_size, "val_size")
        self.feature_names = tuple(f"x{i}" for i in range(n_features))
        self.target_names = ("y",) if n_targets == 1 else tuple(f"y{i}" for i in range(n_targets))
        self.coef: np.ndarray | None = None

    def make_splits(self) -> dict[str, tuple[torch.Tensor, ...]]:
        h = self.hparams
        from sklearn.datasets import make_regression
        from sklearn.model_selection import train_test_split
        x, y, coef = make_regression(
            n_samples=h.n_samples,
            n_features=h.n_features,
            n_informative=h.n_informative if h.n_informative is not None else h.n_features,
            n_targets=h.n_targets,
            noise=h.noise,
            bias=h.intercept,
            coef=True,
            random_state=h.random_state,
        )
        self.coef = coef.reshape(h.n_features, h.n_targets)
        x = torch.from_numpy(x.astype(np.float32))
        y = torch.from_numpy(y.astype(np.float32)).reshape(len(x), h.n_targets)
        rows = np.arange(len(x))
        train, val = (rows, rows[:0]) if self.n_val == 0 else train_test_split(
            rows, test_size=self.n_val, random_state=self.seed
        )
        self.label_rows(len(x), val)
        train, val = torch.as_tensor(train), torch.as_tensor(val)
        held_out = (x[val], y[val])
        return {"train": (x[train], y[train]), "val": held_out, "test": held_out, "predict": (x, torch.as_tensor(rows))}

    def true_parameters(self) -> dict[str, list] | None:
        """The coefficients and intercept ``make_regression`` used (known after setup)."""
        if self.coef is None:
            return None
        n_targets = self.hparams.n_targets
        return {"weight": self.coef.T.tolist(), "bias": [self.hparams.intercept] * n_targets}
