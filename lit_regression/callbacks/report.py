"""What was learned, beside the truth and the exact least-squares answer: printed and kept as report.json."""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
from typing import Any

import lightning as L
import torch
from scipy import stats
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only

from lit_regression.callbacks.convergence import Convergence
from lit_regression.checkpointing import unused_path
from lit_regression.errors import count, say, write_line
from lit_regression.export import export_weights
from lit_regression.files import make_folder, write_bytes
from lit_regression.hooks import OwnHooks
from lit_regression.newton import Newton
from lit_regression.optimum import Chunks, Moments, Optimum, as_theta, least_squares_optimum, logistic_optimum

# metrics of the run copied into the report when the model logged them
REPORTED_METRICS = ("train_loss", "val_loss", "test_loss", "val_r2", "test_r2", "val_acc", "test_acc",
                    "val_balanced_acc", "test_balanced_acc", "val_auroc", "test_auroc")


def least_squares(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ``(weight, bias)`` minimising the squared error of ``y ~ x @ weight.T + bias``, in float64: weight
    ``(n_outputs, n_features)``, bias ``(n_outputs,)``; the smallest solution if ``x`` is collinear."""
    moments = Moments()
    moments.update(x, y.reshape(len(y), -1))
    theta = least_squares_optimum(moments).theta
    return theta[:-1].T.contiguous(), theta[-1].contiguous()


def training_chunks(datamodule, model=None, rows: int = 65_536) -> Chunks | None:
    """One pass over the training rows as the model trains on them (scaled with the model's fitted scaling, in
    its arithmetic), in chunks; ``None`` without training rows. A datamodule that streams its rows from disk
    gives the pass itself (``training_chunks()``)."""
    own = getattr(datamodule, "training_chunks", None)
    passes = own() if callable(own) else None
    if passes is None:
        train = getattr(datamodule, "splits", {}).get("train")
        if train is None or not len(train[0]):
            return None
        x, y = train[0], train[1]
        passes = lambda: ((x[i:i + rows], y[i:i + rows]) for i in range(0, len(x), rows))  # noqa: E731
    if model is None or not getattr(model, "_scaled", False):
        return passes

    def scaled(chunk: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            xs, ys = (t.to(model.device, model.dtype) for t in chunk)
            return model.scale_inputs(xs), model.scale_targets(ys)
    return lambda: (scaled(chunk) for chunk in passes())


def _listed(t: torch.Tensor) -> list:
    return t.detach().double().cpu().tolist()


def strict(value: Any) -> Any:
    """``value`` as strict JSON holds it: a NaN or infinite number (an R^2 on one row, say) as ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


class ParameterReport(OwnHooks, L.Callback):
    """What was learned and how well the optimizer did: printed, report.json, weights.pt.

    At the end of ``fit``: prints the learned parameters beside the true ones (synthetic data), in
    the table's own units (``raw units``), and, for linear and logistic models, beside the exact optimum of the
    same objective on the same training rows (float64: closed form from ``X^T X`` and ``X^T y`` for least
    squares and ridge, Newton's method for logistic regression), with standard errors, t (or z) values and 95%
    intervals where they are defined. After ``fit`` it adds ``"optimization"``: the objective reached, the
    optimum, their relative gap, whether the fit converged (a gap within ``tol``; where the optimum cannot be
    computed, whether :class:`Convergence` saw the objective settle), the optimizer and the epochs; it warns
    in one line when the fit has not converged. Everything goes to ``report.json`` in the run's log folder,
    the gap also to TensorBoard, and after ``fit`` the weights to a plain ``state_dict`` file (see
    :mod:`lit_regression.export`). After ``validate`` and ``test`` the report (with their metrics) goes to
    ``report.json`` alone: Lightning's own table prints the metrics, and the parameters are the checkpoint's.

    ``learned`` holds the learned parameters only, labelled by the model's input columns (and targets or classes,
    and hidden units by position); the fitted standardisation, which the model carries as buffers, is the block
    ``scaling``: ``{column: {"mean": ..., "scale": ...}}`` for each input (one-hot columns: 0 and 1) and, where the
    targets are scaled, each target.

    Args:
        enabled: ``false`` switches the report (and the weights file) off.
        filename: name of the report in the run's log folder.
        weights: name of the ``state_dict`` file written at the end of ``fit``; ``null`` for none.
        tol: relative gap between the objective reached and its optimum within which a fit counts as converged.
    """

    def __init__(self, enabled: bool = True, filename: str = "report.json", weights: str | None = "weights.pt",
                 tol: float = 1e-6) -> None:
        self.enabled = enabled
        self.filename = filename
        self.weights = weights
        self.tol = tol
        self.report: dict | None = None
        self.path: str | None = None  # the report file last written
        self._written: set[str] = set()  # files this callback wrote (it may replace them; never another run's)

    def build(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str = "fit") -> dict:
        datamodule = trainer.datamodule
        report: dict = {"model": type(pl_module).__name__}
        if hasattr(datamodule, "column_roles"):
            report["columns"] = datamodule.column_roles()
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in REPORTED_METRICS}
        if metrics:
            report["metrics"] = metrics
        linear = pl_module.linear_parameters() if hasattr(pl_module, "linear_parameters") else None
        chunks = training_chunks(datamodule, pl_module)
        optimum, why = _optimum(pl_module, chunks)
        report["features"] = list(getattr(datamodule, "feature_names", None) or [])
        if linear is None:  # the learned parameters by their state_dict names (the fitted scaling apart)
            axes = getattr(pl_module, "parameter_axes", dict)()
            parameters = dict(pl_module.named_parameters())
            sizes = [parameters[name].shape[axis] for name, kinds in axes.items() if name in parameters
                     for axis, kind in enumerate(kinds) if kind == "outputs"]
            report["outputs"] = _output_names(datamodule, sizes[0] if sizes else pl_module.hparams.n_outputs)
            report["learned"] = {name: _listed(p) for name, p in parameters.items()}
            report["axes"] = {name: list(kinds) for name, kinds in axes.items() if name in parameters}
        else:
            weight, bias = linear
            report["outputs"] = _output_names(datamodule, weight.shape[0])
            report["learned"] = {"weight": _listed(weight), "bias": _listed(bias)}
            raw = pl_module.raw_units(weight, bias)
            if raw is not None:  # what scikit-learn's coef_ / intercept_ show on the unscaled columns
                report["raw_units"] = {"weight": _listed(raw[0]), "bias": _listed(raw[1])}
            true = getattr(datamodule, "true_parameters", lambda: None)()
            if true is not None:
                report["true"] = true
            if optimum is not None:
                report.update(_exact(optimum, weight, bias, why))
                report.update(_uncertainty(pl_module, optimum, weight, bias, report, why))
        scaling = _scaling(pl_module, report["features"], datamodule)
        if scaling:
            report["scaling"] = scaling
        if stage == "fit" and chunks is not None:
            report["optimization"] = self._optimization(trainer, pl_module, chunks, optimum, why)
        return report

    def _optimization(self, trainer, pl_module, chunks: Chunks, optimum: Optimum | None, why: str | None) -> dict:
        convergence = next((c for c in trainer.callbacks if isinstance(c, Convergence)), None)
        section = {"objective": None, "optimum": None, "relative_gap": None, "converged": None,
                   "optimizer": type(trainer.optimizers[0]).__name__ if trainer.optimizers else None,
                   "epochs": trainer.current_epoch}
        newton = Newton.of(trainer)
        if newton is not None:  # one step per pass over the training rows
            section["passes"] = newton.passes
            if newton.grid is not None:  # l2 auto: the validation loss of each l2 tried, and the one chosen
                section["l2_path"] = [{"l2": p["l2"], "val_loss": p["val_loss"]} for p in newton.path]
                section["l2"] = None if newton.searching else newton.l2
        linear = pl_module.linear_parameters()
        if optimum is not None and why is None:  # the optimum is the model's own
            objective = optimum.objective_at(as_theta(*linear))
            floor = max(1e-8 * abs(optimum.null_objective), 1e-300)
            gap = (objective - optimum.objective) / max(abs(optimum.objective), floor)
            section.update(objective=objective, optimum=optimum.objective, relative_gap=gap,
                           converged=bool(gap <= self.tol), tol=self.tol)
        else:
            section["objective"] = _model_objective(pl_module, chunks)
            section["note"] = (f"the optimum cannot be computed: {why}; converged means the objective stopped "
                               "improving (see the Convergence callback)")
            if convergence is not None:
                section["converged"] = convergence.reason is not None
        if convergence is not None and convergence.reason is not None:
            section["stopped"] = f"epoch {convergence.epoch + 1}: {convergence.reason}"
        return section

    @rank_zero_only
    def _emit(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str, log_dir: str) -> None:
        self.report = self.build(trainer, pl_module, stage)
        self.report["stage"] = stage
        self.report["epochs"] = trainer.current_epoch
        make_folder(log_dir)
        if stage == "fit" and self.weights:
            weights = unused_path(os.path.join(log_dir, self.weights), self._written)
            self.report["weights_file"] = export_weights(pl_module, weights)
            self._written.add(weights)
        if stage == "fit":  # after validate and test, Lightning's own table shows the metrics: the file alone
            write_line(format_report(self.report), sys.stdout)  # above a progress bar, not glued to it
        self.path = unused_path(os.path.join(log_dir, self.filename), self._written)
        self._written.add(self.path)
        write_bytes(self.path, json.dumps(strict(self.report), indent=2, allow_nan=False).encode())
        optimization = self.report.get("optimization") or {}
        if optimization.get("relative_gap") is not None:
            for logger in trainer.loggers:
                logger.log_metrics({"optimization/relative_gap": optimization["relative_gap"]},
                                   step=trainer.global_step)
        for k, point in enumerate(optimization.get("l2_path") or []):  # l2 auto: the path, one step per l2 tried
            for logger in trainer.loggers:
                logger.log_metrics({"l2_path/val_loss": point["val_loss"], "l2_path/log10_l2": math.log10(point["l2"])},
                                   step=k)
        if optimization.get("converged") is False:
            smooth = getattr(pl_module, "smooth", lambda: True)()  # L-BFGS and Newton need a gradient everywhere
            if getattr(pl_module, "newton_loss", lambda: None)() is not None:
                faster = "Newton's passes (--model.optimizer newton), exact on any batches"
            elif smooth:
                faster = "L-BFGS (--model.optimizer lbfgs, on full batches)"
            else:
                faster = "a smooth objective (--model.loss mse or huber, no l1) that Newton or L-BFGS can minimise"
            say(f"the fit did not converge (report.json, \"optimization\"): try more epochs (--trainer.max_epochs), "
                f"{faster}, standardised inputs (--data.standardize true) or a lower learning rate", warning=True)

    # trainer.log_dir is a collective under DDP: every process asks, only the first writes
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.enabled:
            self._emit(trainer, pl_module, "fit", trainer.log_dir or trainer.default_root_dir)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.enabled:
            self._emit(trainer, pl_module, "test", trainer.log_dir or trainer.default_root_dir)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.enabled and trainer.state.fn == TrainerFn.VALIDATING and not trainer.sanity_checking:
            self._emit(trainer, pl_module, "validate", trainer.log_dir or trainer.default_root_dir)


def _output_names(datamodule, n_rows: int) -> list[str]:
    """A name for each row of the weight matrix: the targets, the classes (one logit each) or, for a binary
    classifier's single logit, the positive class."""
    classes = getattr(datamodule, "classes", None)
    if classes is not None:
        labels = [str(c) for c in classes]
        return labels[-1:] if n_rows == 1 else labels[:n_rows]
    names = [str(n) for n in getattr(datamodule, "target_names", None) or []]
    return names if len(names) == n_rows else [f"output_{i}" for i in range(n_rows)]


def _optimum(pl_module, chunks: Chunks | None) -> tuple[Optimum | None, str | None]:
    """The exact optimum to compare with, and why it is not the model's own optimum (``None`` when it is).

    Linear regression always gets the least-squares (or ridge) solution, even when it minimises another loss."""
    linear = pl_module.linear_parameters() if hasattr(pl_module, "linear_parameters") else None
    if chunks is None or linear is None:
        return None, "the model is not linear in its parameters (a network's objective is not convex)"
    hparams = pl_module.hparams
    l2, l1 = getattr(pl_module, "l2", 0.0), hparams.get("l1", 0.0)
    if getattr(pl_module, "task", "regression") == "classification":
        if l1:
            return None, "the L1 penalty (l1 > 0) has no smooth optimum to compute here"
        # from the learned parameters: a fitted model is a pass or two from the optimum, zero is several
        return logistic_optimum(chunks, linear[0].shape[1], hparams.n_outputs, l2, start=as_theta(*linear))
    loss = hparams.get("loss", "mse")
    reasons = ([f"it minimises the {loss} loss, which has no closed-form optimum"] if loss != "mse" else []) + \
              (["its objective has an L1 penalty (l1 > 0)"] if l1 else [])
    return least_squares_optimum(Moments.of(chunks), l2), "; ".join(reasons) or None


def _exact(optimum: Optimum, weight: torch.Tensor, bias: torch.Tensor, why: str | None) -> dict:
    """The exact optimum as a parameter column, and how far the learned parameters are from it."""
    theta = optimum.theta
    result = {"exact": {"weight": _listed(theta[:-1].T), "bias": _listed(theta[-1])}}
    notes = []
    if optimum.full_rank:
        result["gap_to_exact"] = float((as_theta(weight, bias) - theta).abs().max())
    else:
        # one-hot columns of a category sum to 1, as the bias column does: a line of parameters has the same loss
        notes.append("the inputs are collinear (e.g. the one-hot columns of a category and the bias), so many "
                     "parameter sets reach the same minimum; compare the objectives, not the parameters "
                     "(exact is the smallest such solution)")
    if why is not None:
        notes.append(f"exact is the least-squares solution, which the model need not reach: {why}")
    if notes:
        result["note"] = "; ".join(notes)
    return result


def _uncertainty(pl_module, optimum: Optimum, weight: torch.Tensor, bias: torch.Tensor, report: dict,
                 why: str | None = None) -> dict:
    """Standard errors, t (or z) values and 95% intervals of the learned coefficients, in the raw units column
    (the features' own units) where there is one: the covariance at the optimum carried through the (linear)
    map from the model's units to the raw ones. None where the optimum is not the model's own (``why``): they
    describe least squares, and the residuals of another objective's fit would make them wrong."""
    if why is not None:
        return {"uncertainty": {"note": f"no standard errors: they are those of the least-squares optimum, and {why}"}}
    if optimum.covariance is None:
        why = ("the inputs are collinear" if not optimum.full_rank else
               "they are given for unpenalised least squares (l2 = 0, MSE) and for logistic regression")
        return {"uncertainty": {"note": f"no standard errors: {why}"}}
    m, d = weight.shape
    def raw_theta(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        mapped = pl_module.raw_units(w, b)
        return as_theta(w, b) if mapped is None else as_theta(*mapped)

    zero_w, zero_b = torch.zeros(m, d, dtype=torch.float64), torch.zeros(m, dtype=torch.float64)
    base = raw_theta(zero_w, zero_b)
    columns = []
    for i in range(d + 1):  # the map acts on each output's parameters alone: move parameter i of all at once
        w, b = zero_w.clone(), zero_b.clone()
        if i < d:
            w[:, i] = 1
        else:
            b[:] = 1
        columns.append(raw_theta(w, b) - base)
    jacobian = torch.stack(columns, dim=1)  # (d + 1, d + 1, m): raw parameter, model parameter, output
    se = torch.stack([(jacobian[..., j] @ optimum.covariance[j] @ jacobian[..., j].T).diagonal().clamp_min(0).sqrt()
                      for j in range(m)], dim=1)  # (d + 1, m)
    estimate = raw_theta(weight.detach().double().cpu(), bias.detach().double().cpu())
    statistic = "t" if optimum.dof is not None else "z"
    q = float(stats.t.ppf(0.975, optimum.dof) if optimum.dof is not None else stats.norm.ppf(0.975))

    def shaped(t: torch.Tensor) -> dict:
        return {"weight": _listed(t[:-1].T), "bias": _listed(t[-1])}

    info = {"units": "raw_units" if "raw_units" in report else "learned", "statistic": statistic, "dof": optimum.dof,
            "covariance": "sigma^2 (X^T X)^-1" if statistic == "t" else "inverse Hessian of the objective (x n)"}
    if not optimum.full_rank:
        info["note"] = ("the softmax biases are identified only up to a common shift: their standard errors are "
                        "those of the smallest (centred) solution")
    return {"uncertainty": info, "std_err": shaped(se), statistic: shaped(estimate / se),
            "ci95_low": shaped(estimate - q * se), "ci95_high": shaped(estimate + q * se)}


def _model_objective(pl_module, chunks: Chunks) -> float:
    """Mean training loss plus penalty of the model as it is, computed with the model's own arithmetic."""
    total, n = 0.0, 0
    dtype = next(pl_module.parameters()).dtype
    with torch.no_grad():
        for x, y in chunks():
            x, y = x.to(pl_module.device, dtype), y.to(pl_module.device)
            outputs = pl_module.net(x)  # the chunks are scaled as training scales them
            total += float(pl_module.compute_loss(outputs, y.to(dtype) if y.is_floating_point() else y)) * len(x)
            n += len(x)
        return total / n + float(pl_module.penalty())


def _scaling(pl_module, features: list[str], datamodule) -> dict[str, dict[str, float]]:
    """The fitted standardisation that the model applies, by column: ``{column: {"mean", "scale"}}`` for each
    input and, where the targets are scaled, each target; empty where the model applies none."""
    if not getattr(pl_module, "_scaled", False):
        return {}
    buffers = {name: _listed(b) for name, b in pl_module.scaling_buffers().items()}
    targets = [str(t) for t in getattr(datamodule, "target_names", None) or []]
    out = {}
    for kind, names in (("input", features), ("target", targets)):
        means, scales = buffers.get(f"{kind}_mean"), buffers.get(f"{kind}_scale")
        if means is None or (kind == "target" and all(m == 0 for m in means) and all(v == 1 for v in scales)):
            continue
        names = names if len(names) == len(means) else [f"{kind}_{i}" for i in range(len(means))]
        out.update({name: {"mean": m, "scale": v} for name, m, v in zip(names, means, scales)})
    return out


def _axis_label(kind: str, i: int, size: int, report: dict) -> str | None:
    """What index ``i`` of an axis of ``kind`` (``inputs``, ``outputs``, ``hidden``) stands for; ``None`` for the
    single output of a model with one."""
    names = {"inputs": report.get("features") or [], "outputs": report.get("outputs") or []}.get(kind)
    if kind == "outputs" and size == 1:
        return None
    if names is not None and len(names) == size:
        return str(names[i])
    return f"{'hidden' if kind == 'hidden' else kind.rstrip('s')} {i}"


def _labels(report: dict, name: str, shape: tuple[int, ...]) -> list[str]:
    """Row labels of a parameter: ``weight[x]``, ``weight[y1, x0]``, ``bias[y1]``; a network's by what its axes
    stand for (``linear1.weight[hidden 3, bmi]``); positions where names are unknown."""
    features, outputs = report.get("features") or [], report.get("outputs") or []
    axes = (report.get("axes") or {}).get(name)
    if axes is not None and len(axes) == len(shape):
        labels = []
        for index in itertools.product(*(range(size) for size in shape)):
            parts = [_axis_label(kind, i, size, report) for kind, i, size in zip(axes, index, shape)]
            parts = [p for p in parts if p is not None]
            labels.append(f"{name}[{', '.join(parts)}]" if parts else name)
        return labels
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
    elements = 1
    for size in shape:
        elements *= size
    return [name] if elements == 1 else [f"{name}[{i}]" for i in range(elements)]


def _cell(value: float | None, width: int = 14) -> str:
    """A column of the parameter table: 6 decimals, or 6 significant digits where those do not fit or would show
    too few of a small value's digits; always at least one space from its left neighbour."""
    if value is None:
        return " " * width
    text = f"{value:.6f}"
    if len(text) >= width or 0 < abs(value) < 1e-3:
        text = f"{value:.6g}"
    return f"{text:>{width}}"


def format_report(report: dict, max_rows: int = 20) -> str:
    """The report as a few aligned lines: one row per parameter, columns learned / true / exact."""
    lines = [f"Parameters of {report['model']} after {report['stage']}:"]
    columns = [c for c in ("raw_units", "true", "exact", "std_err", "t", "z", "ci95_low", "ci95_high") if c in report]
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
    headers = {"ci95_low": "95% low", "ci95_high": "95% high"}
    lines.append(f"  {'parameter':<{width}}{'learned':>14}" +
                 "".join(f"{headers.get(c, c.replace('_', ' ')):>14}" for c in columns))
    for label, value, others in rows:
        if value is None:
            lines.append(f"  {label}")
            continue
        lines.append(f"  {label:<{width}}{value:>14.6f}" + "".join(_cell(o) for o in others))
    if "std_err" in report:
        units = "raw units" if report["uncertainty"]["units"] == "raw_units" else "learned"
        lines.append(f"  std err, {report['uncertainty']['statistic']} and the 95% interval are for the {units} column")
    if "scaling" in report and "raw_units" not in report:
        lines.append("  the inputs are standardised with the training rows' means and scales (report.json, "
                     "\"scaling\")")
    if "gap_to_exact" in report:
        lines.append(f"  largest |learned - exact|: {report['gap_to_exact']:.3g}")
    if "note" in report:
        lines.append(f"  note: {report['note']}")
    if "note" in (report.get("uncertainty") or {}):
        lines.append(f"  note: {report['uncertainty']['note']}")
    optimization = report.get("optimization")
    if optimization:
        state = {True: "converged", False: "NOT converged", None: "convergence unknown"}[optimization["converged"]]
        done = (f"{count(optimization['passes'], 'pass')} of Newton's method" if "passes" in optimization else
                f"{count(optimization['epochs'], 'epoch')} of {optimization['optimizer']}")
        line = f"  optimization: {state} after {done}; objective {optimization['objective']:.8g}"
        if optimization.get("optimum") is not None:
            line += f", optimum {optimization['optimum']:.8g}, relative gap {optimization['relative_gap']:.3g}"
        lines.append(line)
        if "note" in optimization:
            lines.append(f"  note: {optimization['note']}")
        if "l2_path" in optimization:
            path = optimization["l2_path"]
            if optimization["l2"] is None:
                lines.append(f"  l2 auto: NOT chosen, {len(path)} of the grid's values scored; train longer")
            else:
                lines.append(f"  l2 auto: {optimization['l2']:.6g}, the lowest validation loss of "
                             f"{count(len(path), 'value')} from {path[0]['l2']:.3g} to {path[-1]['l2']:.3g} "
                             "(report.json, l2_path)")
    if report.get("metrics"):
        lines.append("  metrics: " + ", ".join(f"{k} {v:.6g}" for k, v in report["metrics"].items()))
    return "\n".join(lines)
