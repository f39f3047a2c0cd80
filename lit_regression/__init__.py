"""lit_regression: straight-line, two-layer and logistic regression with PyTorch Lightning and LightningCLI."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``lit_regression.load``, the model of a checkpoint with its table's preprocessing
    (``lit_regression.load(ckpt).predict(rows)``, :func:`lit_regression.predictor.load`): imported on first use,
    so that ``import lit_regression`` stays light."""
    if name == "load":
        from lit_regression.predictor import load

        return load
    raise AttributeError(f"module 'lit_regression' has no attribute {name!r}")
