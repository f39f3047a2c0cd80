"""Logistic regression on logits: binary (``BCEWithLogitsLoss``) or multi-class (softmax, cross-entropy)."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import AUROC, F1Score, MetricCollection, Precision, Recall
from torchmetrics import Accuracy
from torchmetrics.classification import MulticlassStatScores

from lit_regression.errors import InputError
from lit_regression.models.base import LitModel, MeanLoss


class LogisticRegression(LitModel):
    """One linear layer on logits. Two classes use a single logit and ``BCEWithLogitsLoss``; more classes use
    one logit each and cross-entropy. Targets are class indices; ``predict`` returns one probability per class.
    Logs ``*_loss``; ``*_acc``, the share of rows whose predicted class is right (scikit-learn's
    ``accuracy_score``); ``*_balanced_acc``, the mean over the classes of the share of each class's rows predicted
    right (``balanced_accuracy_score``); ``*_precision``, ``*_recall``, ``*_f1`` (of the positive class for two
    classes, macro averages for more) and ``*_auroc``.

    The objective is the mean cross-entropy plus ``l2 / 2 * ||W||^2`` on the weights. By default ``l2`` is
    ``1 / n_train`` (set when ``fit`` starts, from the training rows): what scikit-learn's
    ``LogisticRegression()`` (``C = 1``) minimises on the same rows. ``C = 1 / (l2 * n_train)`` in general;
    ``--model.l2 0`` removes the penalty (on separable classes the weights then grow without end).

    Args:
        **kwargs: the arguments of :class:`LitModel`; ``n_outputs`` is the number of classes (at least 2).
    """

    task = "classification"

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("n_outputs", 2)
        if kwargs["n_outputs"] < 2:
            raise InputError(f"model n_outputs={kwargs['n_outputs']!r} is invalid: classification needs >= 2 classes")
        super().__init__(**kwargs)
        n_classes = self.hparams.n_outputs
        self.linear = nn.Linear(self.hparams.n_features, 1 if n_classes == 2 else n_classes)
        self.loss_fn = nn.BCEWithLogitsLoss() if n_classes == 2 else nn.CrossEntropyLoss()

    def default_l2(self, n_train: int) -> float:
        return 1.0 / n_train

    def make_metrics(self) -> MetricCollection:
        n_classes = self.hparams.n_outputs
        task = "binary" if n_classes == 2 else "multiclass"
        options = {"task": task} if task == "binary" else {"task": task, "num_classes": n_classes, "average": "macro"}
        # accuracy over the rows (micro), not the mean of the classes' recalls (macro): that is balanced_acc
        accuracy = {"task": task} if task == "binary" else {"task": task, "num_classes": n_classes, "average": "micro"}
        return MetricCollection(
            {
                "loss": MeanLoss(),
                "acc": Accuracy(**accuracy),
                "balanced_acc": BalancedAccuracy(n_classes, binary=task == "binary"),
                "precision": Precision(**options),
                "recall": Recall(**options),
                "f1": F1Score(**options),
                "auroc": AUROC(**{k: v for k, v in options.items() if k != "average"}),
            },
            compute_groups=False,
        )

    def net(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def compute_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if outputs.shape[-1] == 1:
            return self.loss_fn(outputs, target)
        return self.loss_fn(outputs, target.reshape(-1).long())

    def predict_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        if outputs.shape[-1] == 1:
            p = torch.sigmoid(outputs)
            return torch.cat([1 - p, p], dim=1)
        return torch.softmax(outputs, dim=1)

    def metric_inputs(self, outputs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = self.predict_outputs(outputs)
        if outputs.shape[-1] == 1:
            return probs[:, 1], target.reshape(-1).long()
        return probs, target.reshape(-1).long()

    def linear_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.linear.weight, self.linear.bias

    def newton_loss(self) -> str | None:
        return None if self.hparams.l1 else "binary" if self.hparams.n_outputs == 2 else "multiclass"


class BalancedAccuracy(MulticlassStatScores):
    """scikit-learn's ``balanced_accuracy_score``: the recall of each class that has rows in the split, averaged
    over those classes (a class absent from the split's targets is left out, whether predicted or not, as
    scikit-learn leaves it out; torchmetrics' macro recall would count it as 0 when it is predicted). Updated
    with what the other metrics take: the positive class's probability for two classes (a row is predicted
    positive above 0.5, as torchmetrics' binary metrics and ``predict``'s argmax decide), the probabilities of
    every class otherwise (argmax).

    Args:
        num_classes: number of classes.
        binary: the updates carry the positive class's probability alone.
    """

    def __init__(self, num_classes: int, binary: bool = False) -> None:
        super().__init__(num_classes=num_classes, average=None)
        self.binary = binary

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        super().update((preds > 0.5).long() if self.binary else preds, target)

    def compute(self) -> torch.Tensor:
        support = self.tp + self.fn  # rows of each class
        present = support > 0
        return (self.tp[present].float() / support[present]).mean()  # float32: MPS has no float64
