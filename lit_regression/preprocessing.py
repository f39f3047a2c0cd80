"""The preprocessing of a table, fitted on the training rows and kept as plain values (so a checkpoint carries it
and still loads with ``weights_only=True``): imputation (scikit-learn's ``SimpleImputer``), one-hot encoding
(``OneHotEncoder(handle_unknown="ignore")``) and standardisation (``StandardScaler``).

Encoded columns keep the table's order; a categorical column becomes one 0/1 column per level, named
``column=level``. Numeric columns keep their units: the standardisation fitted here (mean and scale per column and
target) is applied by the model, which carries it as buffers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

STRATEGIES = ("none", "mean", "median")


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value it stands for; a whole float as an int (level ``75001``, not
    ``75001.0``)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def missing(values: np.ndarray) -> np.ndarray:
    """Empty cells: NaN in a float column, ``None`` (or NaN) in an object column."""
    if values.dtype.kind == "f":
        return np.isnan(values)
    import pandas as pd

    return pd.isna(values)


def encoded_names(features: list[str], categories: dict[str, list]) -> list[str]:
    """One name per model input: the numeric columns by their name, one ``column=level`` per level."""
    names = []
    for feature in features:
        levels = categories.get(feature)
        names.extend([feature] if levels is None else [f"{feature}={level}" for level in levels])
    return names


def fit_levels(values: np.ndarray) -> list:
    """The distinct non-empty values of a column's training rows, sorted, as plain values."""
    from sklearn.preprocessing import OneHotEncoder

    present = values[~missing(values)]
    if len(present) == 0:
        return []
    encoder = OneHotEncoder().fit(present.reshape(-1, 1))
    return [plain(v) for v in encoder.categories_[0]]


def fit_fill(values: np.ndarray, strategy: str, categorical: bool) -> Any:
    """The value that fills a column's empty cells: the training rows' mean or median (numbers) or most frequent
    value (categories); ``None`` for the strategy ``none`` or a column without values."""
    from sklearn.impute import SimpleImputer

    if strategy == "none" or missing(values).all():
        return None
    if values.dtype.kind == "b":  # a true/false column without gaps: SimpleImputer takes no bool arrays
        values = values.astype(object)
    numeric = values.dtype.kind == "f"
    imputer = SimpleImputer(strategy="most_frequent" if categorical else strategy,
                            missing_values=np.nan if numeric else None)
    return plain(imputer.fit(values.reshape(-1, 1)).statistics_[0])


def one_hot(values: np.ndarray, levels: list) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``(rows, levels)`` 0/1 columns and the mask of rows whose value is not a level (all zeros)."""
    from sklearn.preprocessing import OneHotEncoder

    if len(values) == 0:  # a split without rows (no validation rows, say): scikit-learn refuses to transform it
        return np.zeros((0, len(levels)), dtype=np.float32), np.zeros(0, dtype=bool)
    known = np.asarray(levels, dtype=np.float64 if values.dtype.kind == "f" else object)
    encoder = OneHotEncoder(categories=[known], handle_unknown="ignore", sparse_output=False, dtype=np.float32)
    block = encoder.fit(known.reshape(-1, 1)).transform(values.reshape(-1, 1))
    return block, block.sum(axis=1) == 0


class Preprocessing:
    """Fitted preprocessing of the feature and target columns, as plain values.

    Args:
        features: the table's feature columns, in the model's order.
        categories: levels of each categorical feature, in the order of its one-hot columns.
        fill: the value that fills the empty cells of a column (absent: empty cells are an error).
        mean, scale: per encoded column (``None``: not standardised); one-hot columns have mean 0 and scale 1.
        target_mean, target_scale: per regression target (``None``: targets not scaled).
    """

    def __init__(self, features: list[str], categories: dict[str, list] | None = None,
                 fill: dict[str, Any] | None = None, mean: list[float] | None = None,
                 scale: list[float] | None = None, target_mean: list[float] | None = None,
                 target_scale: list[float] | None = None) -> None:
        self.features = list(features)
        self.categories = dict(categories or {})
        self.fill = dict(fill or {})
        self.mean, self.scale = mean, scale
        self.target_mean, self.target_scale = target_mean, target_scale
        self.columns: dict[str, slice] = {}  # each feature's encoded columns
        start = 0
        for feature in self.features:
            width = len(self.categories.get(feature, [None]))
            self.columns[feature] = slice(start, start + width)
            start += width

    @property
    def names(self) -> list[str]:
        return encoded_names(self.features, self.categories)

    # --- fitting ------------------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, features: list[str], categories: dict[str, list], train: Callable[[str], np.ndarray],
            strategies: dict[str, str], standardize: bool, targets: np.ndarray | None = None) -> Preprocessing:
        """Fit on the training rows, one column at a time: ``train(feature)`` gives a feature's training cells
        (float64 numbers, or the values of a categorical column); ``targets`` (float64) are scaled when given."""
        from sklearn.preprocessing import StandardScaler

        out = cls(features, categories)
        mean, scale = [], []
        for feature in features:
            cells = train(feature)
            value = fit_fill(cells, strategies.get(feature, "none"), feature in categories)
            if value is not None:
                out.fill[feature] = value
            if feature in categories:
                mean += [0.0] * len(categories[feature])
                scale += [1.0] * len(categories[feature])
            elif standardize:
                scaler = StandardScaler().fit(out.filled(feature, cells).reshape(-1, 1))
                mean.append(float(scaler.mean_[0]))
                scale.append(float(scaler.scale_[0]))
        if standardize:
            out.mean, out.scale = mean, scale
        if targets is not None:
            scaler = StandardScaler().fit(targets)
            out.target_mean, out.target_scale = scaler.mean_.tolist(), scaler.scale_.tolist()
        return out

    # --- applying -----------------------------------------------------------------------------------------------
    def filled(self, feature: str, values: np.ndarray) -> np.ndarray:
        """``values`` with the empty cells filled with the training rows' statistic (if imputed)."""
        value = self.fill.get(feature)
        if value is None:
            return values
        gaps = missing(values)
        if not gaps.any():
            return values
        values = values.copy()
        values[gaps] = value
        return values

    def encode(self, feature: str, values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """A feature's filled cells as its float32 model inputs ``(rows, width)``, and for a categorical one the
        mask of rows with a level not seen in training. Numbers stay in their units: the model standardises
        them with ``mean`` and ``scale`` (its ``input_mean`` and ``input_scale`` buffers)."""
        if feature in self.categories:
            return one_hot(values, self.categories[feature])
        return values.astype(np.float32).reshape(-1, 1), None

    # --- as plain values (the datamodule's state_dict) ----------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"features": self.features, "categories": self.categories, "fill": self.fill,
                "feature_mean": self.mean, "feature_scale": self.scale,
                "target_mean": self.target_mean, "target_scale": self.target_scale}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Preprocessing:
        """From :meth:`state`; also reads the state of CSVDataModule checkpoints made before categories and
        imputation existed (no ``categories``, no ``fill``)."""
        return cls(state.get("features") or [], state.get("categories"), state.get("fill"),
                   state.get("feature_mean"), state.get("feature_scale"), state.get("target_mean"),
                   state.get("target_scale"))
