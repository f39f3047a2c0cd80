"""lit_regression: straight-line, two-layer and logistic regression with PyTorch Lightning and LightningCLI."""

__version__ = "0.1.0"
