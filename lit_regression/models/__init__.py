"""LightningModules: one file per model family."""

from lit_regression.models.base import LitModel
from lit_regression.models.linear import LinearRegression
from lit_regression.models.logistic import LogisticRegression
from lit_regression.models.regression import RegressionModel
from lit_regression.models.two_layer import TwoLayerRegression

__all__ = ["LinearRegression", "LitModel", "LogisticRegression", "RegressionModel", "TwoLayerRegression"]
