"""Figures of a run: the data with the model's predictions, the loss curves and, for classifiers, the ROC curve
and the confusion matrix. PNG files in the run's folder and images in TensorBoard.

matplotlib is imported only when the figures are drawn (at the end of ``fit``), and only its object-oriented API
with the Agg renderer is used: no pyplot, no global figure state, no window.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import lightning as L
import torch

from lit_regression.checkpointing import unused_path
from lit_regression.errors import count
from lit_regression.files import make_folder, write_bytes
from lit_regression.hooks import OwnHooks

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TRAIN_COLOR, HELD_OUT_COLOR, PREDICTION_COLOR, TRUTH_COLOR = "tab:blue", "tab:orange", "tab:red", "0.35"
MAX_PANELS = 4  # outputs drawn side by side; more are left out of the figures (not of the run)
# TensorBoard's Time Series page sorts its groups by name: "visuals" comes after the metrics (test_*, train_*,
# val_*), so the page opens on the curves, not on the figures
IMAGE_GROUP = "visuals"


class Plots(OwnHooks, L.Callback):
    """Figures of the run, drawn at the end of fit: PNG files in the run folder and TensorBoard images.

    On the first process only, written into ``<log_dir>/<dirname>/<name>.png`` and logged to TensorBoard as the
    image ``visuals/<name>`` (:data:`IMAGE_GROUP`):

    * ``data_and_predictions``: with one input feature, the training points, the held-out points and the model's
      predictions on the held-out points against x, with the learned curve and, for synthetic data, the true line.
    * ``predicted_vs_actual`` and ``residuals``: with several features, predictions against targets (the diagonal
      is perfect) and the residuals against the predictions, for training and held-out rows.
    * ``loss_curves``: ``train_loss`` and ``val_loss`` per epoch, on a linear and on a log scale. They are read
      from ``trainer.callback_metrics`` at every epoch's end (kept in memory; nothing is written until the end).
      They are not taken at the same point, and the legend says so: an epoch's training loss is the mean over
      its batches, each taken before that batch's optimizer step (at epoch 0, mostly the starting point's loss),
      its validation loss is taken after all of the epoch's steps.
    * ``roc`` and ``confusion_matrix``: for classification, on the validation split.

    Scatter plots of more than ``max_points`` rows of a split draw a random sample of that many (seeded, the same
    in every run; the legend says how many of how many are shown): matplotlib takes seconds per hundred thousand
    points, and a million points are a blot. The lines (the model, the truth, the diagonal), the axes' ranges and the
    counts are computed from every row.

    Args:
        enabled: ``false`` switches the figures off.
        dirname: folder of the PNG files inside the run's log folder.
        dpi: resolution of the PNG files and of the TensorBoard images.
        tensorboard: also log the figures as TensorBoard images.
        max_points: largest number of points of a split in a scatter plot; more rows are sampled down to it.
    """

    def __init__(
        self, enabled: bool = True, dirname: str = "figures", dpi: int = 150, tensorboard: bool = True,
        max_points: int = 5000,
    ) -> None:
        if max_points < 1:
            from lit_regression.errors import InputError

            raise InputError(f"plots max_points={max_points!r} is invalid: expected a number >= 1")
        self.max_points = max_points
        self.enabled = enabled
        self.dirname = dirname
        self.dpi = dpi
        self.tensorboard = tensorboard
        self.history: dict[str, tuple[list[int], list[float]]] = {}
        self.paths: dict[str, str] = {}
        self._written: set[str] = set()  # folders this callback wrote (it may replace them; never another run's)

    # --- collecting the losses --------------------------------------------------------------------------------
    def _record(self, trainer: L.Trainer, name: str, epoch: int) -> None:
        value = trainer.callback_metrics.get(name)
        if value is None or trainer.sanity_checking or epoch < 0:
            return
        epochs, values = self.history.setdefault(name, ([], []))
        if epochs and epochs[-1] == epoch:
            values[-1] = float(value)
        else:
            epochs.append(epoch)
            values.append(float(value))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.history = {}

    # Epochs are counted from 0, as Lightning does (and names checkpoints). The epoch's ``train_loss`` reaches
    # ``callback_metrics`` only after the ``on_train_epoch_end`` hooks, so it is read when the next epoch starts
    # and, for the last epoch, when training ends; ``val_loss`` is there when validation ends.
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.enabled and trainer.is_global_zero:
            self._record(trainer, "train_loss", trainer.current_epoch - 1)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.enabled and trainer.is_global_zero:
            self._record(trainer, "train_loss", trainer.current_epoch - 1)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.enabled and trainer.is_global_zero and trainer.state.fn == "fit":
            self._record(trainer, "val_loss", trainer.current_epoch)

    # --- drawing ----------------------------------------------------------------------------------------------
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled:
            return
        log_dir = trainer.log_dir or trainer.default_root_dir  # a collective under DDP: every process asks
        if not trainer.is_global_zero:
            return
        figures = self.figures(trainer, pl_module)
        folder = unused_path(os.path.join(log_dir, self.dirname), self._written)
        self._written.add(folder)
        make_folder(folder)
        self.paths = {}
        for name, figure in figures.items():  # drawn and encoded once: the same PNG goes to the file and TensorBoard
            pixels = figure_pixels(figure, self.dpi)
            png = png_bytes(pixels, self.dpi)
            self.paths[name] = os.path.join(folder, f"{name}.png")
            write_bytes(self.paths[name], png)
            if self.tensorboard:
                log_image(trainer, f"{IMAGE_GROUP}/{name}", pixels, png)

    def figures(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Figure]:
        """Every figure that fits this model and data, by name."""
        datamodule = trainer.datamodule
        splits = getattr(datamodule, "splits", None) or {}
        figures: dict[str, Figure] = {}
        classes = getattr(datamodule, "classes", None)
        task = getattr(pl_module, "task", getattr(datamodule, "task", "regression"))
        if "train" in splits and task == "regression":
            fitted = {name: _sampled(_regression_rows(pl_module, splits[name]), self.max_points)
                      for name in ("train", "val") if name in splits and len(splits[name][0])}
            targets = _names(getattr(datamodule, "target_names", None), fitted["train"][1].shape[1], "y")
            features = _names(getattr(datamodule, "feature_names", None), splits["train"][0].shape[1], "x")
            if len(features) == 1:
                curve = _regression_curve(pl_module, splits)
                true = getattr(datamodule, "true_parameters", lambda: None)()
                linear = pl_module.linear_parameters() if hasattr(pl_module, "linear_parameters") else None
                raw = None if linear is None else pl_module.raw_units(*linear)  # the line in the data's units
                learned = None if linear is None else dict(zip(("weight", "bias"), raw or [p.detach() for p in linear]))
                figures["data_and_predictions"] = data_and_predictions_figure(
                    fitted, curve, features[0], targets, true, learned)
            else:
                figures["predicted_vs_actual"] = predicted_vs_actual_figure(fitted, targets)
                figures["residuals"] = residuals_figure(fitted, targets)
        if self.history:
            figures["loss_curves"] = loss_curves_figure(self.history, _loss_name(pl_module))
        val = splits.get("val")
        if task == "classification" and classes is not None and val is not None and len(val[0]):
            probs = _outputs(pl_module, val[0], classify=True)
            labels, names = val[1].reshape(-1).long().cpu(), [str(c) for c in classes]
            figures["roc"] = roc_figure(probs, labels, names)
            figures["confusion_matrix"] = confusion_matrix_figure(probs.argmax(dim=1), labels, names)
        return figures


# --- model outputs for the figures ---------------------------------------------------------------------------
def _outputs(pl_module: L.LightningModule, x: torch.Tensor, classify: bool = False) -> torch.Tensor:
    """The model's outputs for ``x`` on the CPU (class probabilities when ``classify``), in eval mode."""
    was_training = pl_module.training
    pl_module.eval()
    try:
        with torch.no_grad():
            out = pl_module(x.to(pl_module.device, pl_module.dtype))
            if classify:
                out = pl_module.predict_outputs(out)
    finally:
        pl_module.train(was_training)
    return out.detach().float().cpu()


def _regression_rows(pl_module, split) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, y, predicted)`` of a split, targets and predictions in the targets' own units, 2-d."""
    x, y = split[0].cpu(), split[1].cpu().reshape(len(split[1]), -1)
    return x, y.float(), _outputs(pl_module, x).reshape(len(x), -1)


class Rows(tuple):
    """``(x, y, predicted)`` of the rows drawn; ``total``, the number of rows of the split they stand for, and
    ``low``/``high``, the smallest and largest target or prediction of each output over all of them."""

    total: int
    low: torch.Tensor
    high: torch.Tensor

    def __new__(cls, rows: tuple, total: int, low: torch.Tensor, high: torch.Tensor):
        self = super().__new__(cls, rows)
        self.total, self.low, self.high = total, low, high
        return self

    def label(self, name: str) -> str:
        """``name (rows)``, or ``name (random shown of rows)`` for a sample."""
        shown = len(self[0])
        return f"{name} ({self.total:,})" if shown == self.total else f"{name} (random {shown:,} of {self.total:,})"


def _sampled(rows: tuple[torch.Tensor, ...], limit: int, seed: int = 0) -> Rows:
    """At most ``limit`` of the ``(x, y, predicted)`` rows, a seeded random sample in their order; all of them if
    there are no more."""
    x, y, predicted = rows
    n = len(x)
    low = torch.minimum(y.min(0).values, predicted.min(0).values)
    high = torch.maximum(y.max(0).values, predicted.max(0).values)
    if n > limit:
        keep = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].sort().values
        rows = tuple(t[keep] for t in rows)
    return Rows(rows, n, low, high)


def _regression_curve(pl_module, splits, points: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """The model on an even grid across the range of every split's single feature: ``(x, predicted)``."""
    xs = torch.cat([t[0].reshape(-1).float().cpu() for t in splits.values() if len(t[0])])
    grid = torch.linspace(float(xs.min()), float(xs.max()), points).unsqueeze(1)
    return grid, _outputs(pl_module, grid).reshape(points, -1)


def _names(names: Sequence[str] | None, count: int, prefix: str) -> list[str]:
    """The datamodule's column names, or ``prefix`` numbered where it names none (or not as many)."""
    names = [str(n) for n in names or []]
    if len(names) == count:
        return names
    return [prefix] if count == 1 else [f"{prefix}{i}" for i in range(count)]


# what each loss curve is, in the legend: the two are not taken at the same point of the epoch
LOSS_LABELS = {"train_loss": "training loss (mean over the epoch, before each step)",
               "val_loss": "validation loss (after the epoch's steps)"}
LOSS_NAMES = {"mse": "MSE", "l1": "L1, mean absolute error", "huber": "Huber",
              "BCEWithLogitsLoss": "binary cross-entropy", "CrossEntropyLoss": "cross-entropy"}


def _loss_name(pl_module) -> str:
    """The loss as a person names it: the regression model's ``loss`` argument, else its loss function's class."""
    hparams = getattr(pl_module, "hparams", {})
    name = hparams.get("loss") or type(getattr(pl_module, "loss_fn", None)).__name__
    return LOSS_NAMES.get(name, "loss" if name == "NoneType" else name)


# --- one function per figure ---------------------------------------------------------------------------------
def _figure(n_panels: int, width: float = 5.2, height: float = 4.0) -> tuple[Figure, list]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * n_panels, height), layout="constrained")
    axes = figure.subplots(1, n_panels, squeeze=False)[0]
    return figure, list(axes)


def _line(params: dict, k: int, feature: str) -> str:
    w, b = float(torch.as_tensor(params["weight"])[k, 0]), float(torch.as_tensor(params["bias"])[k])
    return f"{w:.4g}·{feature} {'-' if b < 0 else '+'} {abs(b):.4g}"


def _line_values(params: dict, k: int, grid: torch.Tensor) -> torch.Tensor:
    return float(torch.as_tensor(params["weight"])[k, 0]) * grid[:, 0] + float(torch.as_tensor(params["bias"])[k])


def data_and_predictions_figure(fitted: dict, curve: tuple[torch.Tensor, torch.Tensor], feature: str,
                                targets: list[str], true: dict | None = None, learned: dict | None = None) -> Figure:
    """x against y: training points (blue), held-out points (orange), the model's predictions at the held-out x
    (red crosses), the learned curve over the whole range (red line, with its equation for a linear model) and the
    true line (grey, dashed) when known."""
    figure, axes = _figure(min(len(targets), MAX_PANELS))
    grid, grid_pred = curve
    for k, ax in enumerate(axes):
        x, y, _ = fitted["train"]
        ax.scatter(x[:, 0], y[:, k], s=18, c=TRAIN_COLOR, label=fitted["train"].label("training data"), zorder=2)
        if "val" in fitted:
            xv, yv, pv = fitted["val"]
            ax.scatter(xv[:, 0], yv[:, k], s=60, c=HELD_OUT_COLOR, label=fitted["val"].label("held-out data"),
                       zorder=2)
            ax.scatter(xv[:, 0], pv[:, k], s=36, c=PREDICTION_COLOR, marker="x", linewidths=1.5,
                       label="predictions on held-out x", zorder=3)
        model_label = "model" if learned is None else f"model: {targets[k]} = {_line(learned, k, feature)}"
        ax.plot(grid[:, 0], grid_pred[:, k], c=PREDICTION_COLOR, lw=1.2, alpha=0.7, label=model_label, zorder=4)
        if true is not None:
            ax.plot(grid[:, 0], _line_values(true, k, grid), ls="--", c=TRUTH_COLOR, lw=1.2,
                    label=f"truth: {targets[k]} = {_line(true, k, feature)}", zorder=4)
        ax.set(xlabel=feature, ylabel=targets[k], title=f"Data and predictions: {targets[k]}")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    return figure


def _span(fitted: dict[str, Rows], k: int) -> tuple[float, float]:
    """The smallest and largest target or prediction of output ``k`` over every row (not only those drawn)."""
    return min(float(r.low[k]) for r in fitted.values()), max(float(r.high[k]) for r in fitted.values())


def predicted_vs_actual_figure(fitted: dict, targets: list[str]) -> Figure:
    """Predicted against actual target, training and held-out rows; on the dashed diagonal predictions are exact."""
    figure, axes = _figure(min(len(targets), MAX_PANELS), width=4.6, height=4.4)
    for k, ax in enumerate(axes):
        for split, color, label in (("train", TRAIN_COLOR, "training"), ("val", HELD_OUT_COLOR, "held-out")):
            if split in fitted:
                _, y, pred = fitted[split]
                ax.scatter(y[:, k], pred[:, k], s=14, c=color, alpha=0.75, label=fitted[split].label(label))
        low, high = _span(fitted, k)
        ax.plot([low, high], [low, high], ls="--", c=TRUTH_COLOR, lw=1, label="predicted = actual")
        ax.set(xlabel=f"actual {targets[k]}", ylabel=f"predicted {targets[k]}",
               title=f"Predicted vs actual: {targets[k]}")
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize="small")
    return figure


def residuals_figure(fitted: dict, targets: list[str]) -> Figure:
    """Residuals (actual - predicted) against the prediction, training and held-out rows, around the zero line."""
    figure, axes = _figure(min(len(targets), MAX_PANELS), width=4.8, height=3.8)
    for k, ax in enumerate(axes):
        for split, color, label in (("train", TRAIN_COLOR, "training"), ("val", HELD_OUT_COLOR, "held-out")):
            if split in fitted:
                _, y, pred = fitted[split]
                ax.scatter(pred[:, k], y[:, k] - pred[:, k], s=14, c=color, alpha=0.75,
                           label=fitted[split].label(label))
        ax.axhline(0.0, ls="--", c=TRUTH_COLOR, lw=1)
        ax.set(xlabel=f"predicted {targets[k]}", ylabel="residual (actual - predicted)",
               title=f"Residuals: {targets[k]}")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    return figure


def _moving_average(epochs: list[int], values: list[float], window: int) -> tuple[list[float], list[float]]:
    """Centred mean over ``window`` consecutive epochs (only where the window is full)."""
    v = torch.tensor(values, dtype=torch.float64)
    means = v.unfold(0, window, 1).mean(dim=1)
    centres = torch.tensor(epochs, dtype=torch.float64).unfold(0, window, 1).mean(dim=1)
    return centres.tolist(), means.tolist()


def loss_curves_figure(history: dict[str, tuple[list[int], list[float]]], loss_name: str) -> Figure:
    """``train_loss`` and ``val_loss`` per epoch, on a linear scale (left) and a log scale (right), with the
    lowest ``val_loss`` marked; the legend says when in the epoch each is taken (:data:`LOSS_LABELS`). From 200
    epochs on, each epoch's value is drawn thin and faint and a centred mean
    over 2% of the epochs bold on top, so that a loss jumping between two values every epoch (L1 loss near its
    minimum) still shows its trend instead of a solid band."""
    figure, axes = _figure(2, width=5.4, height=3.9)
    styles = {"train_loss": (TRAIN_COLOR, LOSS_LABELS["train_loss"]),
              "val_loss": (HELD_OUT_COLOR, LOSS_LABELS["val_loss"])}
    names = sorted(history, key=lambda n: (n not in styles, list(styles).index(n) if n in styles else 0, n))
    n_epochs = max(len(epochs) for epochs, _ in history.values())
    window = n_epochs // 50 if n_epochs >= 200 else 1
    for ax, scale in zip(axes, ("linear", "log")):
        for name in names:
            epochs, values = history[name]
            color, label = styles.get(name, (None, name))
            if window == 1 or len(values) < window:
                few = len(epochs) <= 30
                ax.plot(epochs, values, c=color, lw=1.5 if few else 1.0, marker="o" if few else None, ms=3, label=label)
                continue
            ax.plot(epochs, values, c=color, lw=0.5, alpha=0.35, label=f"{label}, each epoch")
            ax.plot(*_moving_average(epochs, values, window), c=color, lw=1.8, zorder=3,
                    label=f"{label}, mean of {count(window, 'epoch')}")
        if "val_loss" in history and history["val_loss"][1]:
            epochs, values = history["val_loss"]
            best = min(range(len(values)), key=values.__getitem__)
            ax.scatter([epochs[best]], [values[best]], s=40, facecolors="none", edgecolors="k", zorder=4,
                       label=f"lowest validation loss {values[best]:.3g} (epoch {epochs[best]})")
        positive = all(v > 0 for _, values in history.values() for v in values)
        if scale == "log" and positive:
            ax.set_yscale("log")
        ax.set(xlabel="epoch", ylabel=f"loss ({loss_name})",
               title=f"Loss per epoch, {'log' if scale == 'log' and positive else 'linear'} scale")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    return figure


def roc_figure(probs: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> Figure:
    """ROC curve on the validation split, with its area: the positive class of a binary classifier, or one curve
    per class (one-vs-rest) for several classes."""
    from torchmetrics.functional.classification import binary_auroc, binary_roc

    figure, (ax,) = _figure(1, width=5.0, height=4.6)
    shown = [len(classes) - 1] if len(classes) == 2 else range(len(classes))
    for c in shown:
        target = (labels == c).long()
        if target.min() == target.max():  # a class absent from the split has no curve
            continue
        fpr, tpr, _ = binary_roc(probs[:, c], target)
        auc = float(binary_auroc(probs[:, c], target))
        name = f"class {classes[c]}" + (" vs rest" if len(classes) > 2 else " (positive)")
        ax.plot(fpr, tpr, lw=1.8, label=f"{name}: AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], ls="--", c=TRUTH_COLOR, lw=1, label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01),
           title=f"ROC curve, validation split ({count(len(labels), 'row')})")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return figure


def confusion_matrix_figure(predicted: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> Figure:
    """Counts of actual (rows) against predicted (columns) class on the validation split, each cell written out;
    the title gives the accuracy and the balanced accuracy of the matrix, which are ``val_acc`` and
    ``val_balanced_acc`` of the final weights."""
    n = len(classes)
    matrix = torch.zeros(n, n, dtype=torch.long)
    matrix.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    figure, (ax,) = _figure(1, width=max(4.2, 0.7 * n + 2.6), height=max(3.8, 0.7 * n + 2.2))
    image = ax.imshow(matrix.numpy(), cmap="Blues", vmin=0)
    figure.colorbar(image, ax=ax, shrink=0.8, label="rows")
    threshold = matrix.max().item() / 2
    for i in range(n):
        for j in range(n):
            cell = matrix[i, j].item()
            ax.text(j, i, str(cell), ha="center", va="center", color="white" if cell > threshold else "black")
    accuracy = matrix.diag().sum().item() / max(1, matrix.sum().item())
    support = matrix.sum(dim=1)  # rows of each actual class; a class without rows has no recall
    balanced = (matrix.diag()[support > 0].double() / support[support > 0]).mean().item() if support.any() else 0.0
    ax.set(xticks=range(n), yticks=range(n), xticklabels=classes, yticklabels=classes, xlabel="predicted class",
           ylabel="actual class", title=f"Confusion matrix, validation split ({count(int(support.sum()), 'row')})\n"
                                        f"accuracy {accuracy:.3f}, balanced accuracy {balanced:.3f}")
    return figure


# --- pixels: the PNG file and TensorBoard ----------------------------------------------------------------------
def figure_pixels(figure: Figure, dpi: int) -> Any:
    """The figure drawn by Agg at ``dpi`` as an ``(height, width, 3)`` uint8 array."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    figure.set_dpi(dpi)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def png_bytes(pixels: Any, dpi: int) -> bytes:
    """The pixels encoded as PNG by Pillow (as ``savefig`` writes them), with their resolution."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="png", dpi=(dpi, dpi))
    return buffer.getvalue()


def log_image(trainer: L.Trainer, tag: str, pixels: Any, png: bytes) -> None:
    """Log the image to every TensorBoard logger of the trainer, at the current global step: its PNG as it is
    where the logger's writer takes a summary (``SummaryWriter``), else the pixels through ``add_image``."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    height, width = pixels.shape[:2]
    image = Summary(value=[Summary.Value(tag=tag, image=Summary.Image(height=height, width=width, colorspace=3,
                                                                      encoded_image_string=png))])
    for logger in trainer.loggers:
        experiment = getattr(logger, "experiment", None)
        if hasattr(experiment, "_get_file_writer"):  # torch's SummaryWriter: add_image would encode it again
            experiment._get_file_writer().add_summary(image, trainer.global_step)
        elif hasattr(experiment, "add_image"):
            experiment.add_image(tag, pixels, global_step=trainer.global_step, dataformats="HWC")
