"""Callbacks: the side effects of a run, written under its log folder."""

from lit_regression.callbacks.convergence import Convergence
from lit_regression.callbacks.plots import Plots
from lit_regression.callbacks.predictions import PredictionWriter
from lit_regression.callbacks.report import ParameterReport

__all__ = ["Convergence", "ParameterReport", "Plots", "PredictionWriter"]
