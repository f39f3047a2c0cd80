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

All of the solver's state is in :meth:`Newton.state_dict`, so a run killed between two passes, even in the middle
of a step-halving, resumes with the same steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from lit_regression.optimum import PassSums, as_theta, newton_direction

ARMIJO = 1e-4  # the objective must fall by this fraction of the step's predicted fall (as scipy's line searches)
MIN_STEP = 2.0**-30  # a step halved this often is taken as it is: the objective is flat to float64 there


class Newton(torch.optim.Optimizer):
    """Newton's method over the passes of an epoch, for a model that is one affine map.

    Args:
        weight: the model's weight ``(outputs, features)``; ``bias`` its bias ``(outputs,)``.
        kind: the loss, one of :data:`~lit_regression.optimum.LOSS_KINDS`.
        l2: the strength of the penalty ``l2 / 2 * ||W||^2`` on the weights.
        reduce: sums a tensor over the processes (the strategy's all-reduce); ``None`` on one process.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, kind: str, l2: float = 0.0,
                 reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__([weight, bias], {})
        self.weight, self.bias, self.kind, self.l2, self.reduce = weight, bias, kind, l2, reduce
        self.sums: PassSums | None = None  # this epoch's, until its step
        self.due = False  # the next step() ends the pass: the model sets it on the epoch's last batch
        # the last accepted point: theta (flat, float64), objective, slope g.d of its step, the step d, its length t
        self.anchor: dict[str, Any] | None = None
        self.passes = 0  # passes completed (steps taken)
        self.last: dict[str, float] = {}  # the last pass: objective, largest gradient, Newton decrement, halved

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
        value, grad, hess, _ = sums.objective(self.l2)
        theta = sums.theta.reshape(-1).to("cpu")
        anchor = self.anchor
        halved = (anchor is not None and anchor["t"] > MIN_STEP
                  and not value <= anchor["value"] + ARMIJO * anchor["t"] * anchor["slope"])
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
        self.last = {"objective": value, "gradient": float(grad.abs().max()), "decrement": decrement,
                     "halved": float(halved)}
        return loss

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
        state["newton"] = {"anchor": self.anchor, "passes": self.passes, "last": dict(self.last)}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        own = state_dict.pop("newton", None) or {}
        super().load_state_dict(state_dict)
        self.anchor = own.get("anchor")
        self.passes = own.get("passes", 0)
        self.last = dict(own.get("last") or {})
        self.discard()
