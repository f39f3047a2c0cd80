"""Newton's method in passes: the exact optimum of the convex models whatever the batches are.

Each epoch is one pass. Every training batch adds, in float64, its loss, gradient and Hessian at the epoch's
parameters to the sums of :class:`~lit_regression.optimum.PassSums`; the last batch of the epoch sums them over
the processes (one all-reduce) and takes one step. The objective is the model's own (mean loss plus ``l2 / 2 *
||W||^2`` on the weights), so the step does not depend on how the rows were cut into batches, shuffled or shared
out: the same rows give the same step on one process or many.

- A quadratic objective (MSE, with or without ``l2``) is minimised by the first step: the normal equations of
  one pass (Spark's ``WeightedLeastSquares``). The second pass finds the gradient zero.
- The others (logistic, Huber) take damped steps: when a pass finds that the objective rose above Armijo's line
  from the last accepted point, the step from that point is halved, and the next pass tries there. The objective
  of the accepted points never increases.
- A Hessian without full rank (one-hot levels and the bias) is inverted on its range: the step lands on the
  smallest of the equally good solutions, never on a NaN.

With a grid of penalties (``--model.l2 auto``) the passes first pick ``l2`` on the validation rows, as
``RidgeCV`` and ``LogisticRegressionCV`` do, then solve for it:

- least squares: the first pass's sums and the first validation's give every ridge solution on the grid and its
  validation loss in closed form, so the choice costs no pass: the second pass finds the chosen solution's
  gradient zero;
- the others: a Newton solve per grid point, strongest penalty first, each warm-started from the last one's
  solution; the validation after the pass that ends a solve scores it; the best solution is taken up again.

All of the solver's state is in :meth:`Newton.state_dict`, so a run killed between two passes, even in the middle
of a step-halving or of the search, resumes with the same steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from lit_regression.errors import InputError
from lit_regression.optimum import PassSums, as_theta, newton_direction

ARMIJO = 1e-4  # the objective must fall by this fraction of the step's predicted fall (as scipy's line searches)
MIN_STEP = 2.0**-10  # a step halved this often is taken as it is (each halving costs a pass)
ROUNDING = 1e-14  # relative changes of a float64 objective summed over many rows that are rounding
SOLVED = 1e-10  # a grid point's solve ends when Newton's step predicts a relative gap below this,
STALLED = 1e-6  # or one below this that no longer halves from pass to pass
GRID_C = tuple(np.logspace(-4, 4, 10).tolist())  # LogisticRegressionCV's Cs=10, strongest penalty first


def l2_grid(n_train: int) -> list[float]:
    """The penalties ``--model.l2 auto`` tries: ``l2 = 1 / (C * n_train)`` for LogisticRegressionCV's grid of
    ``C`` (Ridge's ``alpha = l2 * n_train / 2`` = ``1 / (2 C)``), strongest first."""
    return [1.0 / (c * n_train) for c in GRID_C]


class Newton(torch.optim.Optimizer):
    """Newton's method over the passes of an epoch, for a model that is one affine map.

    Args:
        weight: the model's weight ``(outputs, features)``; ``bias`` its bias ``(outputs,)``.
        kind: the loss, one of :data:`~lit_regression.optimum.LOSS_KINDS`.
        l2: the strength of the penalty ``l2 / 2 * ||W||^2`` on the weights.
        reduce: sums a tensor over the processes (the strategy's all-reduce); ``None`` on one process.
        grid: penalties to choose ``l2`` from on the validation rows (see the module's docstring); ``None``:
            ``l2`` as given.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, kind: str, l2: float = 0.0,
                 reduce: Callable[[torch.Tensor], torch.Tensor] | None = None, grid: list[float] | None = None) -> None:
        super().__init__([weight, bias], {})
        self.weight, self.bias, self.kind, self.reduce = weight, bias, kind, reduce
        self.grid = list(grid) if grid else None
        self.l2 = self.grid[0] if self.grid else l2
        self.path: list[dict[str, Any]] = []  # each l2 of the grid tried: its validation loss and solution
        self.solved = False  # the last step ended a grid point's solve: the next validation scores it
        self.first: PassSums | None = None  # least squares: the first pass's sums, for the closed-form path
        self.val_sums: PassSums | None = None
        self.sums: PassSums | None = None  # this epoch's, until its step
        self.due = False  # the next step() ends the pass: the model sets it on the epoch's last batch
        # the last accepted point: theta (flat, float64), objective, slope g.d of its step, the step d, its length t
        self.anchor: dict[str, Any] | None = None
        self.passes = 0  # passes completed (steps taken)
        self.last: dict[str, float] = {}  # the last pass: objective, largest gradient, Newton decrement, halved

    @staticmethod
    def of(trainer) -> Newton | None:
        """The trainer's Newton optimizer, ``None`` when it trains with another."""
        return next((o for o in trainer.optimizers if isinstance(o, Newton)), None)

    @property
    def searching(self) -> bool:
        """Whether ``l2`` is still being chosen."""
        return self.grid is not None and len(self.path) < len(self.grid)

    # --- one pass ---------------------------------------------------------------------------------------------
    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add a batch of scaled inputs and targets (as the model trains on them) to this pass's sums."""
        if self.sums is None:
            self.sums = PassSums(as_theta(self.weight, self.bias), self.kind)
        with torch.autocast(x.device.type, enabled=False):  # mixed precision: the sums stay float64
            self.sums.add(x, y)

    def discard(self) -> None:
        """Forget a pass left unfinished (an epoch cut short): the next one starts afresh."""
        self.sums, self.due = None, False

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Run ``closure`` (the training step, which adds its batch), and at the end of the pass move the
        parameters: a Newton step from an accepted point, or half the last step where the objective rose."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if not self.due or self.sums is None:
            return loss
        sums, self.sums, self.due = self.sums, None, False
        packed = sums.packed()
        if self.reduce is not None:
            packed = self.reduce(packed)
        sums.unpack(packed)
        if self.searching and self.solved:  # the last pass ended a solve, and no validation scored it
            raise InputError("model l2='auto' scores each l2 on the validation rows after the pass that solves it: "
                             "the data need validation rows, validated every epoch (trainer.check_val_every_n_epoch 1)")
        if self.searching and self.kind == "mse":
            self.first = sums
        value, grad, hess, _ = sums.objective(self.l2)
        theta = sums.theta.reshape(-1).to("cpu")
        anchor = self.anchor
        # a rise within float64's rounding of the objective is no rise: near the optimum, steps predict less
        halved = (anchor is not None and anchor["t"] > MIN_STEP and not value <= anchor["value"] + ARMIJO * anchor["t"]
                  * anchor["slope"] + ROUNDING * abs(anchor["value"]))
        if halved:  # back towards the accepted point: the objective rose (or is not a number) here
            anchor["t"] /= 2
            new = anchor["theta"] + anchor["t"] * anchor["direction"]
            decrement = float("nan")
        else:
            direction = newton_direction(grad, hess, theta)
            slope = float(grad @ direction)
            self.anchor = {"theta": theta, "value": value, "slope": slope, "direction": direction, "t": 1.0}
            new = theta + direction
            decrement = max(-slope, 0.0)  # g^T H^+ g: twice the fall that the step predicts
        self._write(new)
        self.passes += 1
        before = self.last.get("decrement", float("nan")) if self.last.get("searching") else float("nan")
        self.last = {"objective": value, "gradient": float(grad.abs().max()), "decrement": decrement,
                     "halved": float(halved), "searching": float(self.searching)}
        if self.searching:  # least squares: one pass is the whole solve; the others: a step that predicts no gain
            gap = decrement / 2 / max(abs(value), 1e-300)
            # or no gain worth a pass: the float32 parameters' floor, where the decrement stops shrinking
            self.solved = self.kind == "mse" or (not halved and (gap <= SOLVED or (gap <= STALLED and
                                                                                  decrement >= before / 2)))
        return loss

    # --- choosing l2 on the validation rows -------------------------------------------------------------------
    def add_validation(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add a batch of scaled validation inputs and targets, while ``l2`` is chosen."""
        if self.val_sums is None:
            self.val_sums = PassSums(as_theta(self.weight, self.bias), self.kind, hessian=self.kind == "mse")
        with torch.autocast(x.device.type, enabled=False):
            self.val_sums.add(x, y)

    def end_validation(self) -> None:
        """A validation epoch has ended: score the grid point it followed (least squares: all of them), and once
        every point is scored take the best one's solution and ``l2`` (the first of equal losses)."""
        sums, self.val_sums = self.val_sums, None
        if not self.searching or not self.solved:
            return
        if sums is None:  # no validation rows on this process: it adds nothing, but takes part in the all-reduce
            sums = PassSums(as_theta(self.weight, self.bias), self.kind, hessian=self.kind == "mse")
            sums.allocate(self.weight.device)
        packed = sums.packed()
        if self.reduce is not None:
            packed = self.reduce(packed)
        sums.unpack(packed)
        if not int(sums.rows):
            raise InputError("model l2='auto' scores each l2 on the validation rows, but the validation read none")
        self.solved = False
        if self.kind == "mse":
            self.path = self._ridge_path(sums)
        else:
            theta = as_theta(self.weight, self.bias).reshape(-1)
            self.path.append({"l2": self.l2, "val_loss": sums.objective(0.0)[0], "theta": theta})
        if self.searching:
            self.l2 = self.grid[len(self.path)]
        else:
            best = min(range(len(self.path)), key=lambda i: self.path[i]["val_loss"])
            self.l2 = self.path[best]["l2"]
            self._write(self.path[best]["theta"])
        self.anchor = None  # another objective: its first pass starts a new search for the step

    def _ridge_path(self, val: PassSums) -> list[dict[str, Any]]:
        """Every ridge solution on the grid, each one Newton step (exact for a quadratic) from the first pass's
        point, and its validation loss, exact from the validation pass's sums (a quadratic too)."""
        theta0 = self.first.theta.reshape(-1).to("cpu")
        at, value, grad, hess = val.theta.reshape(-1).to("cpu"), *val.objective(0.0)[:3]
        path = []
        for l2 in self.grid:
            _, g, h, _ = self.first.objective(l2)
            theta = theta0 + newton_direction(g, h, theta0)
            d = theta - at
            path.append({"l2": l2, "val_loss": value + float(grad @ d) + float(d @ (hess @ d)) / 2, "theta": theta})
        self.first = None
        return path

    def _write(self, theta: torch.Tensor) -> None:
        d = self.weight.shape[1]
        theta = theta.reshape(d + 1, -1)
        self.weight.copy_(theta[:d].T.to(self.weight.dtype))
        self.bias.copy_(theta[d].to(self.bias.dtype))

    # --- checkpoints ------------------------------------------------------------------------------------------
    # torch's Optimizer.load_state_dict casts floating state to the parameters' dtype (float32 here): the solver's
    # float64 state travels beside it, under its own key, instead
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        first = None if self.first is None else {"theta": self.first.theta, "packed": self.first.packed()}
        state["newton"] = {"anchor": self.anchor, "passes": self.passes, "last": dict(self.last), "l2": self.l2,
                           "grid": self.grid, "path": self.path, "solved": self.solved, "first": first}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        own = state_dict.pop("newton", None) or {}
        super().load_state_dict(state_dict)
        self.anchor = own.get("anchor")
        self.passes = own.get("passes", 0)
        self.last = dict(own.get("last") or {})
        self.l2 = own.get("l2", self.l2)
        self.grid, self.path, self.solved = own.get("grid", self.grid), own.get("path") or [], own.get("solved", False)
        self.first = None
        if own.get("first") is not None:
            self.first = PassSums(own["first"]["theta"], self.kind)
            self.first.unpack(own["first"]["packed"])
        self.discard()
