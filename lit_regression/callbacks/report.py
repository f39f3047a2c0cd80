"""What was learned, beside the truth and the exact least-squares answer: printed and kept as report.json."""

from __future__ import annotations

import json
import os

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from lit_regression.export import export_weights

# metrics of the run copied into the report when the model logged them
REPORTED_METRICS = ("train_loss", "val_loss", "test_loss", "val_r2", "test_r2", "val_acc", "test_acc", "val_auroc",
                    "test_auroc")


def least_squares(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ``(weight, bias)`` minimising the squared error of ``y ~ x @ weight.T + bias``, in float64: weight
    ``(n_outputs, n_features)``, bias ``(n_outputs,)``. Each output column is solved on its own (same as one joint
    solve: the columns do not interact)."""
    weight, bias, _ = _least_squares_with_rank(x, y)
    return weight, bias


def _least_squares_with_rank(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """:func:`least_squares`, and whether the design (the inputs and a column of ones) has full rank; below full
    rank, the returned solution is the smallest of the many that reach the minimum."""
    x, y = x.detach().double().cpu(), y.detach().double().cpu()
    if y.ndim == 1:
        y = y.unsqueeze(1)
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    result = torch.linalg.lstsq(design, y, driver="gelsd")  # solution (n_features + 1, n_outputs)
    solution = result.solution
    return solution[:-1].T.contiguous(), solution[-1].contiguous(), int(result.rank) == design.shape[1]


def _listed(t: torch.Tensor) -> list:
    return t.detach().double().cpu().tolist()


class ParameterReport(L.Callback):
    """Learned parameters beside the truth and the exact least-squares solution: printed, report.json, weights.pt.

    At the end of ``fit`` and ``test``: prints the learned parameters beside the true ones (synthetic data)
    and, for linear regression models, beside the exact least-squares solution on the same training split, with
    its loss and the gap; writes the same as ``report.json`` in the run's log folder. At the end of ``fit`` it
    also exports the weights as a plain ``state_dict`` file (see :mod:`lit_regression.export`).

    Logistic regression gets no least-squares column (its loss is cross-entropy, which has no closed form); its
    report holds the learned weights per feature and the run's final metrics.

    Args:
        enabled: ``false`` switches the report (and the weights file) off.
        filename: name of the report in the run's log folder.
        weights: name of the ``state_dict`` file written at the end of ``fit``; ``null`` for none.
    """

    def __init__(self, enabled: bool = True, filename: str = "report.json", weights: str | None = "weights.pt") -> None:
        self.enabled = enabled
        self.filename = filename
        self.weights = weights
        self.report: dict | None = None

    def build(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        datamodule = trainer.datamodule
        report: dict = {"model": type(pl_module).__name__}
        if hasattr(datamodule, "column_roles"):
            report["columns"] = datamodule.column_roles()
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in REPORTED_METRICS}
        if metrics:
            report["metrics"] = metrics
        linear = pl_module.linear_parameters() if hasattr(pl_module, "linear_parameters") else None
        if linear is None:
            report["learned"] = {name: _listed(p) for name, p in pl_module.state_dict().items()
                                 if not name.startswith(("stage_", "loss_fn"))}
            return report
        weight, bias = linear
        report["features"] = list(getattr(datamodule, "feature_names", None) or [])
        report["outputs"] = _output_names(datamodule, weight.shape[0])
        report["learned"] = {"weight": _listed(weight), "bias": _listed(bias)}
        raw = getattr(datamodule, "raw_units", lambda w, b: None)(weight, bias)
        if raw is not None:  # what scikit-learn's coef_ / intercept_ show on the unscaled columns
            report["raw_units"] = {"weight": raw[0], "bias": raw[1]}
        true = getattr(datamodule, "true_parameters", lambda: None)()
        if true is not None:
            report["true"] = true
        train = getattr(datamodule, "splits", {}).get("train")
        if train is not None and getattr(pl_module, "task", "regression") == "regression" and len(train[0]):
            report.update(_compare_to_least_squares(pl_module, weight, bias, train[0], train[1]))
        return report

    @rank_zero_only
    def _emit(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str, log_dir: str) -> None:
        self.report = self.build(trainer, pl_module)
        self.report["stage"] = stage
        self.report["epochs"] = trainer.current_epoch
        os.makedirs(log_dir, exist_ok=True)
        if stage == "fit" and self.weights:
            self.report["weights_file"] = export_weights(pl_module, os.path.join(log_dir, self.weights))
        print(format_report(self.report))
        with open(os.path.join(log_dir, self.filename), "w") as f:
            json.dump(self.report, f, indent=2)

    # trainer.log_dir is a collective under DDP: every process asks, only the first writes
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.enabled:
            self._emit(trainer, pl_module, "fit", trainer.log_dir or trainer.default_root_dir)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.enabled:
            self._emit(trainer, pl_module, "test", trainer.log_dir or trainer.default_root_dir)


def _output_names(datamodule, n_rows: int) -> list[str]:
    """A name for each row of the weight matrix: the targets, the classes (one logit each) or, for a binary
    classifier's single logit, the positive class."""
    classes = getattr(datamodule, "classes", None)
    if classes is not None:
        labels = [str(c) for c in classes]
        return labels[-1:] if n_rows == 1 else labels[:n_rows]
    names = [str(n) for n in getattr(datamodule, "target_names", None) or []]
    return names if len(names) == n_rows else [f"output_{i}" for i in range(n_rows)]


def _compare_to_least_squares(pl_module, weight, bias, x: torch.Tensor, y: torch.Tensor) -> dict:
    """The exact least-squares solution on the training rows ``(x, y)``, its losses, and how far the learned
    parameters are from it."""
    x, y = x.detach().cpu(), y.detach().cpu()
    y64 = y.double().reshape(len(y), -1)
    w_exact, b_exact, full_rank = _least_squares_with_rank(x, y64)
    with torch.no_grad():
        exact_out = x.double() @ w_exact.T + b_exact
        learned_out = pl_module(x.to(pl_module.device)).detach().double().cpu().reshape(len(y), -1)
    loss_fn = getattr(pl_module, "loss_fn", None) or torch.nn.MSELoss()
    result = {
        "exact": {
            "weight": _listed(w_exact),
            "bias": _listed(b_exact),
            "train_loss": float(loss_fn(exact_out, y64)),
            "train_mse": float(torch.mean((exact_out - y64) ** 2)),
        },
        "learned_train_loss": float(loss_fn(learned_out, y64)),
        "learned_train_mse": float(torch.mean((learned_out - y64) ** 2)),
        "train_rows": len(x),
    }
    differs = []
    if not full_rank:
        # one-hot columns of a category sum to 1, as the bias column does: a line of parameters has the same loss
        differs.append("the inputs are collinear (e.g. the one-hot columns of a category and the bias), so many "
                       "parameter sets reach the same minimum; compare the losses, not the parameters "
                       "(exact is the smallest such solution)")
    else:
        gap = torch.cat([(weight.detach().double().cpu() - w_exact).reshape(-1),
                         (bias.detach().double().cpu() - b_exact).reshape(-1)])
        result["gap_to_exact"] = float(gap.abs().max())
    hparams = getattr(pl_module, "hparams", {})
    other_loss = hparams.get("loss", "mse") != "mse"
    penalised = bool(hparams.get("weight_decay", 0) or hparams.get("l1", 0))
    if other_loss:
        differs.append(f"the model need not reach it: it minimises {hparams['loss']} loss, not the squared error")
    if penalised:
        differs.append("the model need not reach it: its loss has a weight penalty")
    if not (other_loss or penalised):  # exact is the model's own optimum: how far is the model from it?
        exact_loss = result["exact"]["train_loss"]
        result["relative_loss_gap"] = (result["learned_train_loss"] - exact_loss) / max(abs(exact_loss), 1e-300)
    if differs:
        result["note"] = "exact is the least-squares solution; " + "; ".join(differs)
    return result


def _labels(report: dict, name: str, shape: tuple[int, ...]) -> list[str]:
    """Row labels of a parameter: ``weight[x]``, ``weight[y1, x0]``, ``bias[y1]``; positions where names are
    unknown."""
    features, outputs = report.get("features") or [], report.get("outputs") or []
    if name in ("weight", "bias") and len(shape) == (2 if name == "weight" else 1):
        n_out = shape[0]
        n_in = shape[1] if name == "weight" else 1
        if len(outputs) == n_out and (name == "bias" or len(features) == n_in):
            labels = []
            for o in range(n_out):
                for i in range(n_in):
                    parts = ([outputs[o]] if n_out > 1 else []) + ([features[i]] if name == "weight" else [])
                    labels.append(f"{name}[{', '.join(parts)}]" if parts else name)
            return labels
    count = 1
    for size in shape:
        count *= size
    return [name] if count == 1 else [f"{name}[{i}]" for i in range(count)]


def format_report(report: dict, max_rows: int = 20) -> str:
    """The report as a few aligned lines: one row per parameter, columns learned / true / exact."""
    lines = [f"Parameters of {report['model']} after {report['stage']}:"]
    columns = [c for c in ("raw_units", "true", "exact") if c in report]
    rows = []
    for name, values in report["learned"].items():
        tensor = torch.tensor(values, dtype=torch.float64)
        flat = tensor.reshape(-1).tolist()
        others = [torch.tensor(report[c][name], dtype=torch.float64).reshape(-1).tolist() if name in report[c]
                  else [] for c in columns]
        labels = _labels(report, name, tuple(tensor.shape))
        for i, value in enumerate(flat[:max_rows]):
            rows.append((labels[i], value, [other[i] if i < len(other) else None for other in others]))
        if len(flat) > max_rows:
            rows.append((f"... {len(flat) - max_rows} more in report.json", None, []))
    width = max([12] + [len(label) + 2 for label, value, _ in rows if value is not None])
    lines.append(f"  {'parameter':<{width}}{'learned':>14}" + "".join(f"{c.replace('_', ' '):>14}" for c in columns))
    for label, value, others in rows:
        if value is None:
            lines.append(f"  {label}")
            continue
        lines.append(f"  {label:<{width}}{value:>14.6f}" + "".join(f"{o:>14.6f}" if o is not None else f"{'':>14}"
                                                                 for o in others))
    if "exact" in report:
        gap = f"largest |learned - exact|: {report['gap_to_exact']:.3g}; " if "gap_to_exact" in report else ""
        relative = (f" (relative gap of the loss {report['relative_loss_gap']:.3g})" if "relative_loss_gap" in report
                    else "")
        lines.append(f"  {gap}train MSE learned {report['learned_train_mse']:.6g}, exact "
                     f"{report['exact']['train_mse']:.6g}{relative}")
    if "note" in report:
        lines.append(f"  note: {report['note']}")
    if report.get("metrics"):
        lines.append("  metrics: " + ", ".join(f"{k} {v:.6g}" for k, v in report["metrics"].items()))
    return "\n".join(lines)
