"""lit_regression: straight-line, two-layer and logistic regression with PyTorch Lightning and LightningCLI."""

__version__ = "0.1.0"


def load(path):
    """The model of a checkpoint with its table's preprocessing: ``lit_regression.load(ckpt).predict(rows)``
    (see :mod:`lit_regression.predictor`). Imported on first use, so ``import lit_regression`` stays light."""
    from lit_regression.predictor import load as _load

    return _load(path)
