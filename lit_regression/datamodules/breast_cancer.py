"""scikit-learn's bundled breast cancer data (binary classification), as seed 004 prepares it."""

from __future__ import annotations

import numpy as np
import torch

# scikit-learn is imported where it is used: it imports pandas, half a second of every start-up
from lit_regression.datamodules.base import TensorDataModule, split_counts

N_ROWS = 569


class BreastCancerDataModule(TensorDataModule):
    """The 569 x 30 breast cancer table, split with ``train_test_split(test_size=val_size, random_state=seed)``
    and standardised with statistics of the training split only. Targets are 0 (malignant) / 1 (benign).

    Args:
        val_size: held-out fraction in [0, 1) or row count.
        **kwargs: batching options of :class:`TensorDataModule`.
    """

    task = "classification"
    target_names = ("target",)

    def __init__(self, val_size: int | float = 0.2, **kwargs) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.n_val = split_counts(N_ROWS, val_size, "val_size")

    @property
    def feature_names(self) -> tuple[str, ...]:
        from sklearn.datasets import load_breast_cancer
        return tuple(str(name) for name in load_breast_cancer().feature_names)

    @property
    def classes(self) -> list:
        return [0, 1]

    def make_splits(self) -> dict[str, tuple[torch.Tensor, ...]]:
        from sklearn.datasets import load_breast_cancer
        from sklearn.model_selection import train_test_split
        from sklearn.preprocessing import StandardScaler
        data = load_breast_cancer()
        rows = np.arange(len(data.target))
        train, val = train_test_split(rows, test_size=self.n_val, random_state=self.seed)
        scaler = StandardScaler().fit(data.data[train])
        x = torch.from_numpy(scaler.transform(data.data).astype(np.float32))
        y = torch.from_numpy(data.target.astype(np.float32)).unsqueeze(1)
        self.raw_features = torch.from_numpy(data.data.astype(np.float32))
        self.label_rows(len(x), val)
        train, val = torch.as_tensor(train), torch.as_tensor(val)
        held_out = (x[val], y[val])
        return {"train": (x[train], y[train]), "val": held_out, "test": held_out, "predict": (x, torch.as_tensor(rows))}

    def feature_columns(self) -> dict[str, torch.Tensor]:
        return {name: self.raw_features[:, i] for i, name in enumerate(self.feature_names)}
