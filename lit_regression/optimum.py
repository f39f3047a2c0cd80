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


def _logistic_pass(chunks: Chunks, theta: torch.Tensor, n_classes: int, l2: float, hessian: bool):
    """Objective, gradient and (optionally) Hessian of the mean cross-entropy plus ``l2 / 2 * ||W||^2`` at
    ``theta``; gradient and Hessian are over ``theta.reshape(-1)``."""
    total, grad, hess, n = 0.0, torch.zeros_like(theta), None, 0
    size = theta.numel()
    if hessian:
        hess = torch.zeros(size, size, dtype=torch.float64)
    for x, y in chunks():
        z = design(x)
        labels = y.detach().to("cpu").reshape(-1).long()
        logits = z @ theta
        if n_classes == 2:
            target = labels.double()[:, None]
            total += float((F.softplus(logits) - target * logits).sum())
            p = torch.sigmoid(logits)
            grad += z.T @ (p - target)
            if hessian:
                hess += z.T @ (z * (p * (1 - p)))
        else:
            total += float((torch.logsumexp(logits, dim=1) - logits.gather(1, labels[:, None])[:, 0]).sum())
            p = torch.softmax(logits, dim=1)
            grad += z.T @ (p - F.one_hot(labels, n_classes).double())
            if hessian:  # sum_i z_i z_i^T (x) (diag(p_i) - p_i p_i^T), indexed (feature, class) as theta
                outer = (z[:, :, None] * p[:, None, :]).reshape(len(z), -1)
                blocks = torch.einsum("ij,il,ia->jla", z, z, p)
                full = torch.zeros(theta.shape + theta.shape, dtype=torch.float64)
                for a in range(n_classes):
                    full[:, a, :, a] = blocks[..., a]
                hess += full.reshape(size, size) - outer.T @ outer
        n += len(z)
    weights = theta[:-1]
    value = total / n + l2 / 2 * float((weights**2).sum())
    grad = grad / n
    grad[:-1] += l2 * weights
    if hessian:
        hess = hess / n
        penalised = torch.ones_like(theta)
        penalised[-1] = 0
        hess += torch.diag(l2 * penalised.reshape(-1))
    return value, grad.reshape(-1), hess, n


def logistic_optimum(chunks: Chunks, n_features: int, n_classes: int, l2: float,
                     max_iter: int = 100) -> tuple[Optimum | None, str | None]:
    """Newton's method, with a backtracking line search, on the logistic objective; ``(None, why)`` when it
    has no finite optimum (separable classes and no penalty) or Newton does not converge."""
    m = 1 if n_classes == 2 else n_classes
    theta = torch.zeros(n_features + 1, m, dtype=torch.float64)
    converged = False
    for _ in range(max_iter):
        value, grad, hess, n = _logistic_pass(chunks, theta, n_classes, l2, hessian=True)
        if float(grad.abs().max()) <= NEWTON_TOL:
            converged = True
            break
        inverse, _ = pseudo_inverse(hess)
        step = -(inverse @ grad)
        slope, t = float(grad @ step), 1.0
        for _ in range(40):  # Armijo backtracking
            trial = theta + t * step.reshape(theta.shape)
            if _logistic_pass(chunks, trial, n_classes, l2, hessian=False)[0] <= value + 1e-4 * t * slope:
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
    return Optimum(theta, value, lambda t: _logistic_pass(chunks, t, n_classes, l2, hessian=False)[0], null,
                   full_rank, covariance, None), None
