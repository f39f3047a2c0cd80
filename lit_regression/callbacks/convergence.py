"""Stop ``fit`` once the objective has converged, as scikit-learn's ``tol`` does, and say so in one line."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from lit_regression.errors import count, say
from lit_regression.hooks import OwnHooks
from lit_regression.newton import Newton


class Convergence(OwnHooks, L.Callback):
    """Watches the objective (mean training loss plus penalty) that the optimizer minimises, and stops ``fit``
    when it has converged:

    - training on one batch per epoch with a smooth objective: when the largest component of the objective's
      gradient, at the start of an epoch, is at most ``tol`` (scikit-learn's ``gtol``), times the square root
      of the objective where that is above 1 (targets in their own units make the gradients that much larger).
      With L-BFGS, if the gradient does not halve in ``patience`` epochs (float32 arithmetic has a floor), it
      first turns the line search off (see :func:`_drop_line_search`), then stops, and the report says how far
      from the optimum that left it;
    - one batch per epoch otherwise (an L1 term, or another optimizer): when for ``patience`` epochs in a row
      the objective has stayed within ``tol`` times its size of its best value (an objective that rises again,
      as with momentum, has not settled);
    - mini-batches: when for ``patience`` epochs in a row the mean objective over an epoch's batches has not
      improved on its best by more than ``tol`` times its size (scikit-learn's ``n_iter_no_change``).

    The report at the end of ``fit`` (report.json, ``"optimization"``) measures the gap to the exact optimum
    where it can be computed; this callback decides only when to stop.

    Args:
        tol: the tolerance above.
        patience: epochs without improvement before stopping.
        stop: ``false`` trains for ``trainer.max_epochs`` whatever happens (the seed configs, which reproduce a
            fixed number of epochs); the reason is still recorded.
    """

    def __init__(self, tol: float = 1e-6, patience: int = 5, stop: bool = True) -> None:
        self.tol = tol
        self.patience = patience
        self.stop = stop
        self.best: float | None = None
        self.waited = 0
        self.reason: str | None = None  # why it counts as converged; None while it does not
        self.epoch: int | None = None  # the epoch at which it converged
        self._first = False  # the current batch's first evaluation (L-BFGS evaluates a batch many times)
        self._batch_rows = 0
        self._sum: torch.Tensor | float = 0.0
        self._rows = 0
        self._grad: torch.Tensor | None = None
        self._stalled = self._small_gradient = False

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "waited": self.waited, "reason": self.reason, "epoch": self.epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update({k: state_dict.get(k) for k in ("best", "reason", "epoch")})
        self.waited = state_dict.get("waited", 0)

    # --- the objective and gradient at each training step's starting point -----------------------------------
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sum, self._rows, self._grad = 0.0, 0, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._first = True
        self._batch_rows = len(batch[0])

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        if self._first:  # L-BFGS evaluates a batch many times: the first is at the step's starting point
            self._sum = self._sum + loss.detach() * self._batch_rows
            self._rows += self._batch_rows

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the full gradient (DDP has averaged it), which _check reads for smooth objectives only
        if self._first and trainer.num_training_batches == 1 and getattr(pl_module, "smooth", lambda: True)():
            grads = [p.grad.abs().max() for p in pl_module.parameters() if p.grad is not None]
            self._grad = torch.stack(grads).max() if grads else None
        self._first = False

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        newton = Newton.of(trainer)
        if newton is not None:  # the exact objective and gradient of the pass, the same on every process
            if newton.last and self.reason is None:
                self.reason = self._newton_check(newton.last)
                self._report(trainer)
            if self.reason is not None and self.stop:
                trainer.should_stop = True
            return
        if not self._rows:
            return
        objective = self._sum / self._rows
        if trainer.world_size > 1:  # the same decision on every process
            values = torch.stack([torch.as_tensor(objective, dtype=torch.float64),
                                  torch.as_tensor(-1.0 if self._grad is None else self._grad, dtype=torch.float64)])
            values = trainer.strategy.reduce(values.to(trainer.strategy.root_device), reduce_op="mean")
            objective, grad = (float(v) for v in values.cpu())
        else:
            objective, grad = float(objective), -1.0 if self._grad is None else float(self._grad)
        if self.reason is None:
            self.reason = self._check(objective, grad, getattr(pl_module, "smooth", lambda: True)(),
                                      trainer.num_training_batches == 1,
                                      any(isinstance(o, torch.optim.LBFGS) for o in trainer.optimizers))
            if self.reason is not None and self._stalled and _drop_line_search(trainer):
                self.reason, self.best, self.waited = None, None, 0  # go on with unit steps
            self._report(trainer)
        if self.reason is not None and self.stop:
            trainer.should_stop = True

    def _report(self, trainer: L.Trainer) -> None:
        if self.reason is not None:
            self.epoch = trainer.current_epoch
            if self.stop:  # only a small gradient is convergence; a plateau is a stop the report judges
                verb = "converged" if self._small_gradient else "stopped"
                say(f"{verb} after {count(self.epoch + 1, 'epoch')}: {self.reason}")

    def _newton_check(self, last: dict[str, float]) -> str | None:
        """Newton's passes: converged when the pass's largest gradient is within the tolerance of the smooth
        full-batch case, or when the Newton decrement predicts a relative gap to the optimum within ``tol`` (the
        gradient of float32 parameters has a floor that grows with the inputs' scale; the decrement does not)."""
        self._stalled = self._small_gradient = False
        if last.get("searching"):
            return None  # l2 auto: still choosing the objective
        objective, grad, decrement = last["objective"], last["gradient"], last["decrement"]
        limit = self.tol * max(1.0, abs(objective)) ** 0.5
        if grad <= limit:
            self._small_gradient = True
            return f"the objective's largest gradient, {grad:.3g}, is within {limit:.3g}"
        if last["halved"]:
            return None  # the pass tried a step that was too long: the search goes on from the point before
        if decrement / 2 <= self.tol * abs(objective):
            self._small_gradient = True
            return (f"Newton's step predicts a relative gap of {decrement / 2 / abs(objective):.3g} to the optimum, "
                    f"within tol {self.tol:g}")
        margin = self.tol * max(abs(objective), 1e-12)
        return self._plateau(objective, margin, f"the objective {{:.6g}} has stayed within tol {self.tol:g} (relative) "
                             f"of its best for {count(self.patience, 'pass')}", margin)

    def _check(self, objective: float, grad: float, smooth: bool, full_batch: bool, lbfgs: bool) -> str | None:
        self._stalled = self._small_gradient = False  # which of the reasons below it is
        if smooth and full_batch and grad >= 0:
            # the float32 objective goes flat long before the parameters settle: watch the gradient instead
            # residuals in the target's own units (not standardised) make gradients as large as their root
            limit = self.tol * max(1.0, abs(objective)) ** 0.5
            if grad <= limit:
                self._small_gradient = True
                return f"the objective's largest gradient, {grad:.3g}, is within {limit:.3g}"
            if lbfgs:  # 20 iterations an epoch: a gradient that does not halve in a few epochs has stalled
                self._stalled = True
                message = (f"the objective's largest gradient has stopped shrinking at {{:.3g}} (the floor of the "
                           f"arithmetic's precision; tolerance {limit:.3g})")
                return self._plateau(grad, -1.0, message, margin=(self.best or 0.0) / 2)  # must halve
        margin = self.tol * max(abs(self.best if self.best is not None else objective), 1e-12)
        # full batches: the objective must settle, not merely stop improving (momentum overshoots)
        return self._plateau(objective, margin if full_batch else -1.0,
                             f"the objective {{:.6g}} has {'stayed within' if full_batch else 'not improved by more than'}"
                             f" tol {self.tol:g} (relative) {'of its best ' if full_batch else ''}for "
                             f"{count(self.patience, 'epoch')}", margin)

    def _plateau(self, value: float, above: float, message: str, margin: float = 0.0) -> str | None:
        """Track the best ``value``; a message once it has not improved by more than ``margin`` for ``patience``
        epochs, nor risen more than ``above`` above the best (a negative ``above``: rising is allowed)."""
        if self.best is None or value < self.best - margin or (above >= 0 and value > self.best + above):
            self.best, self.waited = value if self.best is None else min(value, self.best), 0
            return None
        self.waited += 1
        return message.format(self.best) if self.waited >= self.patience else None


def _drop_line_search(trainer: L.Trainer) -> bool:
    """Switch L-BFGS's line search off, if it is on; whether it was.

    Near the optimum a float32 objective changes by less than its rounding, so a line search, which compares
    objective values, can no longer tell a good step from a bad one and L-BFGS stalls while the gradient is
    still well above its own rounding. Unit quasi-Newton steps, which use only gradients, go on to the optimum
    (on diabetes, from a largest gradient of 5e-6 to 1e-8). The choice lives in the optimizer's param_groups,
    so a checkpoint keeps it."""
    dropped = False
    for optimizer in trainer.optimizers:
        if isinstance(optimizer, torch.optim.LBFGS):
            for group in optimizer.param_groups:
                dropped = dropped or group["line_search_fn"] is not None
                group["line_search_fn"] = None
    return dropped
