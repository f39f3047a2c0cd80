"""What was learned, beside the truth and the exact least-squares answer: printed and kept as report.json."""

from __future__ import annotations

import json
import os

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only


def least_squares(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ``(weight, bias)`` minimising the squared error of ``y ~ x @ weight.T + bias``, in float64."""
    x, y = x.double().cpu(), y.double().cpu()
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    solution = torch.linalg.lstsq(design, y, driver="gelsd").solution  # (n_features + 1, n_outputs)
    return solution[:-1].T.contiguous(), solution[-1].contiguous()


def _rounded(t: torch.Tensor) -> list:
    return t.detach().double().cpu().tolist()


class ParameterReport(L.Callback):
    """At the end of ``fit`` and ``test``: prints the learned parameters beside the true ones (synthetic data)
    and, for linear regression models, beside the exact least-squares solution on the same training split, with
    its loss and the gap; writes the same as ``report.json`` in the run's log folder.

    Args:
        filename: name of the report in the run's log folder.
    """

    def __init__(self, filename: str = "report.json") -> None:
        self.filename = filename
        self.report: dict | None = None

    def build(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        datamodule = trainer.datamodule
        report: dict = {"model": type(pl_module).__name__}
        linear = pl_module.linear_parameters() if hasattr(pl_module, "linear_parameters") else None
        if linear is None:
            report["learned"] = {name: _rounded(p) for name, p in pl_module.state_dict().items()
                                 if not name.startswith(("stage_", "loss_fn"))}
            return report
        weight, bias = linear
        report["learned"] = {"weight": _rounded(weight), "bias": _rounded(bias)}
        true = getattr(datamodule, "true_parameters", lambda: None)()
        if true is not None:
            report["true"] = true
        train = getattr(datamodule, "splits", {}).get("train")
        if train is not None and pl_module.task == "regression":
            x, y = train[0], train[1]
            w_exact, b_exact = least_squares(x, y)
            with torch.no_grad():
                exact_out = x.double().cpu() @ w_exact.T + b_exact
                learned_out = pl_module(x.to(pl_module.device)).double().cpu()
            loss_fn = getattr(pl_module, "loss_fn", torch.nn.MSELoss())
            report["exact"] = {
                "weight": _rounded(w_exact),
                "bias": _rounded(b_exact),
                "train_loss": float(loss_fn(exact_out, y.double().cpu())),
                "train_mse": float(torch.mean((exact_out - y.double().cpu()) ** 2)),
            }
            report["learned_train_mse"] = float(torch.mean((learned_out - y.double().cpu()) ** 2))
            gap = torch.cat([(weight.detach().double().cpu() - w_exact).reshape(-1),
                             (bias.detach().double().cpu() - b_exact).reshape(-1)])
            report["gap_to_exact"] = float(gap.abs().max())
        return report

    @rank_zero_only
    def _emit(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.report = self.build(trainer, pl_module)
        self.report["stage"] = stage
        self.report["epochs"] = trainer.current_epoch
        print(format_report(self.report))
        log_dir = trainer.log_dir or trainer.default_root_dir
        os.makedirs(log_dir, exist_ok=True)
        with open(os.path.join(log_dir, self.filename), "w") as f:
            json.dump(self.report, f, indent=2)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._emit(trainer, pl_module, "fit")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._emit(trainer, pl_module, "test")


def format_report(report: dict) -> str:
    """The report as a few aligned lines: one row per parameter, columns learned / true / exact."""
    lines = [f"Parameters of {report['model']} after {report['stage']}:"]
    learned = report["learned"]
    columns = [c for c in ("true", "exact") if c in report]
    lines.append(f"  {'parameter':<12}{'learned':>14}" + "".join(f"{c:>14}" for c in columns))
    for name, values in learned.items():
        flat = torch.tensor(values, dtype=torch.float64).reshape(-1).tolist()
        others = [torch.tensor(report[c][name], dtype=torch.float64).reshape(-1).tolist() if name in report[c]
                  else [] for c in columns]
        for i, value in enumerate(flat[:20]):
            label = name if len(flat) == 1 else f"{name}[{i}]"
            row = f"  {label:<12}{value:>14.6f}"
            for other in others:
                row += f"{other[i]:>14.6f}" if i < len(other) else f"{'':>14}"
            lines.append(row)
        if len(flat) > 20:
            lines.append(f"  ... {len(flat) - 20} more in report.json")
    if "gap_to_exact" in report:
        lines.append(f"  largest |learned - exact|: {report['gap_to_exact']:.3g}; "
                     f"train MSE learned {report['learned_train_mse']:.6g}, exact {report['exact']['train_mse']:.6g}")
    return "\n".join(lines)
