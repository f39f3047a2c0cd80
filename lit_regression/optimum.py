"""The exact optimum of the convex models' objective, in float64, and the uncertainty of their coefficients.

Parameters are held as ``theta`` of shape ``(n_features + 1, m)``: one column per output (``m`` targets, the
classes, or one logit for two classes), the weights first and the bias last, as the design ``Z = [X, 1]`` has
its column of ones last. The rows are read in chunks from a ``chunks()`` callable (one pass per call), so the
same code serves tables held in memory and tables streamed from disk.

- Linear with MSE: the objective ``mean((y - Z theta)^2) + l2 / 2 * ||W||^2`` is quadratic; its optimum solves
  ``M theta = Z^T y / n`` with ``M = Z^T Z / n + (m * l2 / 2) D`` (``D`` picks the weights), from moments
  accumulated in one pass (:class:`Moments`). Standard errors (no penalty): ``sigma^2 (Z^T Z)^-1``.
- Logistic: Newton's method on the mean cross-entropy plus ``l2 / 2 * ||W||^2``, one pass per iteration, to a
  largest gradient of 1e-10. Standard errors: the inverse of ``n`` times the Hessian at the optimum (what
  statsmodels' ``Logit`` gives without a penalty).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Chunks = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]

# eigenvalues of the equilibrated normal matrix below this fraction of the largest count as zero (collinear)
RANK_TOL = 1e-12
NEWTON_TOL = 1e-10  # largest gradient of the float64 optimum: far below the report's tolerance


def design(x: torch.Tensor) -> torch.Tensor:
    """``[x, 1]`` in float64 on the CPU (moved first: MPS has no float64)."""
    x = x.detach().to("cpu").double()
    return torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)


def as_theta(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A model's ``(weight (m, n_features), bias (m,))`` as ``theta (n_features + 1, m)``."""
    return torch.cat([weight.detach().to("cpu").double().T, bias.detach().to("cpu").double()[None]], dim=0)


def pseudo_inverse(m: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The pseudo-inverse of a symmetric positive semi-definite ``m``, and whether it has full rank. Solved on
    ``m`` scaled to a unit diagonal, so that columns in very different units do not pass for collinear."""
    scale = m.diagonal().clamp_min(0).sqrt()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    values, vectors = torch.linalg.eigh(m / scale[:, None] / scale[None, :])
    keep = values > values.max().clamp_min(0) * RANK_TOL
    inverse = (vectors[:, keep] / values[keep]) @ vectors[:, keep].T
    return inverse / scale[:, None] / scale[None, :], bool(keep.all())


@dataclass
class Optimum:
    """The optimum of a model's objective on its training rows."""

    theta: torch.Tensor  # (n_features + 1, m)
    objective: float  # its value there
    objective_at: Callable[[torch.Tensor], float]  # the objective at any theta (exact, in float64)
    null_objective: float  # the objective of the best constant model (a scale for gaps near a zero optimum)
    full_rank: bool  # whether the optimum is unique
    covariance: list[torch.Tensor] | None = None  # per output: (n_features + 1)^2 covariance of theta[:, j]
    dof: int | None = None  # degrees of freedom of the t distribution; None: normal (z)


class Moments:
    """``Z^T Z``, ``Z^T y`` and ``sum(y^2)`` of the training rows, accumulated in float64 one chunk at a time."""

    def __init__(self) -> None:
        self.zz: torch.Tensor | None = None
        self.zy: torch.Tensor | None = None
        self.yy: torch.Tensor | None = None
        self.n = 0

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        z = design(x)
        y = y.detach().to("cpu").double().reshape(len(z), -1)
        parts = (z.T @ z, z.T @ y, (y * y).sum(dim=0))
        if self.zz is None:
            self.zz, self.zy, self.yy = parts
        else:
            self.zz, self.zy, self.yy = self.zz + parts[0], self.zy + parts[1], self.yy + parts[2]
        self.n += len(z)

    @classmethod
    def of(cls, chunks: Chunks) -> Moments:
        moments = cls()
        for x, y in chunks():
            moments.update(x, y)
        return moments


def least_squares_optimum(moments: Moments, l2: float = 0.0) -> Optimum:
    """The optimum of ``mean over rows and outputs of (y - Z theta)^2 + l2 / 2 * ||W||^2`` (ridge regression;
    least squares for ``l2 = 0``, then the smallest of the solutions if the inputs are collinear)."""
    n, m = moments.n, moments.zy.shape[1]
    a, c, s = moments.zz / n, moments.zy / n, moments.yy / n
    penalty = torch.ones(len(a), dtype=torch.float64)
    penalty[-1] = 0
    matrix = a + torch.diag(penalty * (m * l2 / 2))
    inverse, full_rank = pseudo_inverse(matrix)
    theta = inverse @ c

    def objective_at(t: torch.Tensor) -> float:  # f(t) = f* + (t - theta)^T M (t - theta) / m: no cancellation
        d = t - theta
        return optimum + float((d * (matrix @ d)).sum()) / m

    optimum = float((s - (theta * c).sum(dim=0)).mean())
    null = float((s - c[-1] ** 2).mean())  # the mean of y: its variance
    covariance, dof = None, None
    if l2 == 0 and full_rank and n > len(a):
        dof = n - len(a)
        rss = n * (s - (theta * c).sum(dim=0))  # per output, at the optimum
        covariance = [float(r) / dof * inverse / n for r in rss]  # sigma^2 (Z^T Z)^-1
    return Optimum(theta, optimum, objective_at, null, full_rank, covariance, dof)


# the losses whose objective one pass can sum with its gradient and Hessian (Newton's method): what each model's
# ``newton_loss()`` names
LOSS_KINDS = ("mse", "huber", "binary", "multiclass")
HUBER_DELTA = 1.0  # torch.nn.HuberLoss's default, which the regression models use


def row_derivatives(kind: str, outputs: torch.Tensor, target: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The summed loss of a chunk's rows at ``outputs`` (``(n, m)``, float64), and per row its derivative ``g``
    (``(n, m)``) and curvature ``h`` with respect to the outputs: ``(n, m)`` for losses that act on each output
    alone, ``(n, m, m)`` for the softmax, a number (0-dimensional) where it is the same for every row and output
    (MSE). Regression losses are means over the outputs, as torch's are.

    ``huber`` takes Huber's IRLS weights ``min(1, delta / |r|)`` for ``h``: beyond ``delta`` the loss is linear
    and its true second derivative is 0, which leaves a Hessian without rank once most residuals are large (a
    first pass from random weights); the weights bound the loss from above, so each step still lowers it."""
    n, m = outputs.shape
    if kind in ("mse", "huber"):
        r = outputs - target.to(outputs.dtype).reshape(n, m)
        if kind == "mse":
            return r.square().sum() / m, 2 * r / m, r.new_tensor(2.0 / m)
        small = r.abs() <= HUBER_DELTA
        loss = torch.where(small, r.square() / 2, HUBER_DELTA * (r.abs() - HUBER_DELTA / 2))
        return (loss.sum() / m, r.clamp(-HUBER_DELTA, HUBER_DELTA) / m,
                torch.where(small, 1.0, HUBER_DELTA / r.abs().clamp_min(HUBER_DELTA)) / m)
    labels = target.reshape(-1).long()
    if kind == "binary":
        y = labels.to(outputs.dtype)[:, None]
        p = torch.sigmoid(outputs)
        return (F.softplus(outputs) - y * outputs).sum(), p - y, p * (1 - p)
    p = torch.softmax(outputs, dim=1)
    loss = (torch.logsumexp(outputs, dim=1) - outputs.gather(1, labels[:, None])[:, 0]).sum()
    return loss, p - F.one_hot(labels, m).to(p.dtype), torch.diag_embed(p) - p[:, :, None] * p[:, None, :]


class PassSums:
    """The sums of one pass over the training rows at ``theta`` (``(n_features + 1, m)``): the loss, its
    gradient and (optionally) its Hessian over ``theta.reshape(-1)``, and the rows, in float64 on the device of
    the chunks (the CPU for MPS). :meth:`packed` lays them in one tensor for an all-reduce across processes."""

    def __init__(self, theta: torch.Tensor, kind: str, hessian: bool = True) -> None:
        if kind not in LOSS_KINDS:
            raise ValueError(f"no pass sums for the loss {kind!r}: expected one of {LOSS_KINDS}")
        self.theta, self.kind, self.hessian = theta, kind, hessian
        self.loss = self.rows = None
        self.grad = self.hess = None

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add a chunk of (scaled) inputs ``x`` and their targets ``y``. The design ``[x, 1]`` is never built: its
        column of ones makes the bias rows and columns sums (a copy of a big chunk costs more than the maths)."""
        x = x.detach()
        x = (x if x.device.type != "mps" else x.to("cpu")).double()
        theta = self.theta.to(x.device)
        if self.grad is None:
            self.allocate(x.device)
        loss, g, h = row_derivatives(self.kind, torch.addmm(theta[-1], x, theta[:-1]), y.to(x.device))
        self.loss += loss
        self.rows += len(x)
        self.grad[:-1] += x.T @ g
        self.grad[-1] += g.sum(0)
        if not self.hessian:
            return
        # sum_i z_i z_i^T (x) h_i, indexed (feature, output) as theta.reshape(-1), with z_i = [x_i, 1]
        d, m = theta.shape
        blocks = self.hess.view(d, m, d, m)
        same = None  # X^T X, where every row weighs the same
        for a in range(m):
            for b in range(a, m) if h.dim() == 3 else (a,):
                if h.dim() == 0:
                    if same is None:
                        same = _weighted_gram(x, None)
                    block = same * h
                else:
                    block = _weighted_gram(x, h[:, a, b] if h.dim() == 3 else h[:, a])
                blocks[:, a, :, b] += block
                if b != a:
                    blocks[:, b, :, a] += block

    def allocate(self, device: torch.device) -> None:
        """Zero sums on ``device`` (the CPU for MPS): a process without rows still takes part in the all-reduce."""
        device = torch.device("cpu") if torch.device(device).type == "mps" else device
        size = self.theta.numel()
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.rows = torch.zeros((), dtype=torch.float64, device=device)
        self.grad = torch.zeros(self.theta.shape, dtype=torch.float64, device=device)
        if self.hessian:
            self.hess = torch.zeros(size, size, dtype=torch.float64, device=device)

    def packed(self) -> torch.Tensor:
        parts = [self.loss[None], self.rows[None], self.grad.reshape(-1)]
        return torch.cat(parts + ([self.hess.reshape(-1)] if self.hessian else []))

    def unpack(self, packed: torch.Tensor) -> None:
        """Take the sums from ``packed`` (the all-reduced :meth:`packed` of every process)."""
        packed = packed.to("cpu")
        size = self.theta.numel()
        self.loss, self.rows = packed[0], packed[1]
        self.grad = packed[2:2 + size].reshape(self.theta.shape)
        if self.hessian:
            self.hess = packed[2 + size:].reshape(size, size)

    def objective(self, l2: float) -> tuple[float, torch.Tensor, torch.Tensor | None, int]:
        """The mean loss plus ``l2 / 2 * ||W||^2``, its gradient and Hessian over ``theta.reshape(-1)`` (on the
        CPU), and the rows."""
        n = int(self.rows)
        theta = self.theta.to("cpu")
        weights = theta[:-1]
        value = float(self.loss) / n + l2 / 2 * float((weights**2).sum())
        grad = self.grad.to("cpu") / n
        grad[:-1] += l2 * weights
        hess = None
        if self.hessian:
            penalised = torch.ones_like(theta)
            penalised[-1] = 0
            hess = self.hess.to("cpu") / n + torch.diag(l2 * penalised.reshape(-1))
        return value, grad.reshape(-1), hess, n


def _weighted_gram(x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """``Z^T diag(w) Z`` for ``Z = [x, 1]`` (``w`` ``None``: all ones), without building ``Z``."""
    d = x.shape[1]
    xw = x if w is None else x * w[:, None]
    gram = x.new_empty(d + 1, d + 1)
    gram[:d, :d] = x.T @ xw
    gram[:d, d] = gram[d, :d] = xw.sum(0)
    gram[d, d] = len(x) if w is None else w.sum()
    return gram


def objective_pass(chunks: Chunks, theta: torch.Tensor, kind: str, l2: float, hessian: bool = True):
    """:meth:`PassSums.objective` of one pass over ``chunks`` at ``theta``."""
    sums = PassSums(theta, kind, hessian)
    for x, y in chunks():
        sums.add(x, y)
    return sums.objective(l2)


def newton_direction(grad: torch.Tensor, hess: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """The Newton step from ``theta`` (flat), ``-H^+ g``, less the part of ``theta`` that the Hessian cannot see:
    where the inputs are collinear (one-hot levels and the bias), the objective is flat along some directions,
    and the step lands on the smallest solution, as ``lstsq`` does, whatever ``theta`` held there."""
    inverse, full_rank = pseudo_inverse(hess)
    step = -(inverse @ grad)
    if not full_rank:
        step = step - (theta - inverse @ (hess @ theta))
    return step


def logistic_optimum(chunks: Chunks, n_features: int, n_classes: int, l2: float, max_iter: int = 100,
                     start: torch.Tensor | None = None) -> tuple[Optimum | None, str | None]:
    """Newton's method, with a backtracking line search, on the logistic objective, from zero or from ``start``
    (a ``theta`` near the optimum: a model fitted to it needs a pass or two); ``(None, why)`` when it has no
    finite optimum (separable classes and no penalty) or Newton does not converge."""
    m = 1 if n_classes == 2 else n_classes
    kind = "binary" if n_classes == 2 else "multiclass"
    theta = torch.zeros(n_features + 1, m, dtype=torch.float64)
    if start is not None and bool(torch.isfinite(start).all()):
        theta = start.detach().to("cpu", torch.float64).reshape(n_features + 1, m).clone()
    converged = False
    for _ in range(max_iter):
        value, grad, hess, n = objective_pass(chunks, theta, kind, l2)
        if float(grad.abs().max()) <= NEWTON_TOL:
            converged = True
            break
        step = newton_direction(grad, hess, theta.reshape(-1))
        slope, t = float(grad @ step), 1.0
        for _ in range(40):  # Armijo backtracking
            trial = theta + t * step.reshape(theta.shape)
            if objective_pass(chunks, trial, kind, l2, hessian=False)[0] <= value + 1e-4 * t * slope:
                break
            t /= 2
        theta = trial
    if l2 == 0 and (not converged or value < 1e-8):
        return None, ("the classes are separable on the training rows: without a penalty (l2 = 0) the objective "
                      "has no minimum and the weights grow without end; use l2 > 0")
    if not converged:
        return None, f"Newton's method did not reach a gradient of {NEWTON_TOL:g} in {max_iter} iterations"
    inverse, full_rank = pseudo_inverse(n * hess)
    size = n_features + 1
    covariance = [inverse.reshape(size, m, size, m)[:, j, :, j] for j in range(m)]
    counts = torch.zeros(n_classes, dtype=torch.float64)
    for _, y in chunks():
        counts += torch.bincount(y.detach().to("cpu").reshape(-1).long(), minlength=n_classes).double()
    share = counts / counts.sum()
    null = float(-(share[share > 0] * share[share > 0].log()).sum())  # cross-entropy of the class shares
    return Optimum(theta, value, lambda t: objective_pass(chunks, t, kind, l2, hessian=False)[0], null,
                   full_rank, covariance, None), None
