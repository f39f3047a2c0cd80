"""LightningDataModules: one file each."""

from lit_regression.datamodules.base import TensorDataModule
from lit_regression.datamodules.breast_cancer import BreastCancerDataModule
from lit_regression.datamodules.csv import CSVDataModule
from lit_regression.datamodules.line import LineDataModule
from lit_regression.datamodules.make_regression import MakeRegressionDataModule
from lit_regression.datamodules.table import TableDataModule

__all__ = ["BreastCancerDataModule", "CSVDataModule", "LineDataModule", "MakeRegressionDataModule", "TableDataModule",
           "TensorDataModule"]
