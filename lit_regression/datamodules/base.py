"""Shared machinery of the in-memory datamodules: float32 splits served as sliced batches."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import numpy as np
import torch

from lit_regression.batches import TensorBatches, tensor_batches
from lit_regression.errors import InputError
from lit_regression.splits import names_of

SPLITS = ("train", "val", "test", "predict")


def check_positive(name: str, value: float | None, allow_none: bool = False) -> None:
    """Raise :class:`InputError` naming ``name`` unless ``value`` is positive (or None where allowed)."""
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise InputError(f"{name}={value!r} is invalid: expected a number greater than 0")


def split_counts(n_rows: int, size: float | int, name: str) -> int:
    """Number of rows that a held-out ``size`` takes out of ``n_rows``: a fraction in [0, 1) or a count (as
    scikit-learn's ``test_size``, rounded up)."""
    if isinstance(size, bool) or size < 0:
        raise InputError(f"{name}={size!r} is invalid: expected a fraction in [0, 1) or a whole number of rows")
    if isinstance(size, float):
        if size >= 1:
            raise InputError(f"{name}={size!r} is invalid: a fraction must be below 1")
        count = int(-(-size * n_rows // 1))  # ceil, as scikit-learn does for test_size
    else:
        count = int(size)
    if count >= n_rows:
        raise InputError(f"{name}={size!r} leaves no training rows out of {n_rows}")
    return count


class TensorDataModule(L.LightningDataModule):
    """Base for datamodules whose data fits in memory.

    Subclasses describe their columns (``feature_names``, ``target_names``, ``classes``) and build float32
    tensors in :meth:`make_splits`; this class serves them to every stage as :class:`TensorBatches`.

    Args:
        batch_size: rows per training step; ``None`` (the default) trains on the full batch, as the seeds do.
        shuffle: reshuffle the training rows every epoch (from ``seed``, never torch's global random state).
        seed: seed for everything random in the data: sampling, noise, splits, shuffling.
        on_device: keep all split tensors on the accelerator once, so that no batch is copied from the CPU
            during training. Use it when the data fits in device memory.
    """

    task = "regression"

    def __init__(
        self,
        batch_size: int | None = None,
        shuffle: bool = False,
        seed: int = 42,
        on_device: bool = False,
    ) -> None:
        super().__init__()
        check_positive("batch_size", batch_size, allow_none=True)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.on_device = on_device
        self.splits: dict[str, tuple[torch.Tensor, ...]] = {}
        self._row_splits: np.ndarray | None = None  # the split of each predict row, as text (see row_splits)

    # --- what the data looks like: known before setup(), so the CLI can link it into the model ---------------
    feature_names: Sequence[str] = ("x",)
    target_names: Sequence[str] = ("y",)

    @property
    def classes(self) -> list | None:
        """Class labels in the order of the model's outputs, or ``None`` for regression."""
        return None

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def n_outputs(self) -> int:
        """Regression targets, or the number of classes for classification."""
        return len(self.classes) if self.classes is not None else len(self.target_names)

    @property
    def n_train(self) -> int:
        """Rows in the training split, all processes together (known after ``setup``)."""
        train = self.splits.get("train")
        return len(train[0]) if train is not None else 0

    @property
    def full_batch(self) -> bool:
        """Whether each training step sees all of a process's training rows (one batch per epoch)."""
        return self.batch_size is None or self.batch_size >= self.n_train

    # --- subclasses -------------------------------------------------------------------------------------------
    def make_splits(self) -> dict[str, tuple[torch.Tensor, ...]]:
        """Return ``{"train": (x, y), "val": (x, y), "test": (x, y), "predict": (x, row)}``; leave out a split
        that does not exist. ``row`` is the position of each predict row in its input, as int64."""
        raise NotImplementedError

    def scaling(self) -> dict[str, list[float]]:
        """The fitted scaling that the model takes when ``fit`` starts (see ``LitModel.set_scaling``):
        ``input_mean``, ``input_scale``, ``target_mean``, ``target_scale``; none here (the splits are served as
        the model takes them)."""
        return {}

    def label_rows(self, n: int, val: Sequence[int]) -> None:
        """Remember that of the ``n`` predict rows, those at ``val`` are held out (validation and the seeds' test
        split alike) and the others train: :meth:`row_splits` says so beside the predictions."""
        self._row_splits = names_of(n, {"val": np.asarray(val, dtype=np.int64)})

    def row_splits(self, rows: np.ndarray) -> np.ndarray | None:
        """The split (``train``, ``val``, ``test``) of each predict row (``rows``: their positions), as text;
        ``None`` where the datamodule does not know it."""
        labels = self._row_splits
        rows = np.asarray(rows)
        if labels is None or (len(rows) and rows.max() >= len(labels)):
            return None
        return labels[rows]

    def feature_columns(self) -> dict[str, torch.Tensor] | None:
        """The predict rows' features as the user gave them (unscaled), to stand beside the predictions."""
        x = self.splits["predict"][0]
        return {name: x[:, i] for i, name in enumerate(self.feature_names)}

    # --- Lightning hooks --------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if not self.splits:
            self.splits = self.make_splits()

    def _batches(self, split: str, train: bool = False) -> TensorBatches | list:
        tensors = self.splits.get(split)
        if tensors is None or len(tensors[0]) == 0:
            return []
        trainer = self.trainer
        if self.on_device and trainer is not None:
            tensors = tuple(t.to(trainer.strategy.root_device) for t in tensors)
            self.splits[split] = tensors
        return tensor_batches(tensors, self.batch_size, train and self.shuffle, self.seed, trainer, train)

    def train_dataloader(self) -> TensorBatches | list:
        return self._batches("train", train=True)

    def val_dataloader(self) -> TensorBatches | list:
        return self._batches("val")

    def test_dataloader(self) -> TensorBatches | list:
        return self._batches("test")

    def predict_dataloader(self) -> TensorBatches | list:
        return self._batches("predict")
