"""Batched one-vs-rest linear SVMs in torch: liblinear's L2-regularised squared-hinge primal.

For every class ``k`` at once, with ``t_ik = +1`` if ``y_i == classes[k]`` else ``-1``
and ``x~_i = [x_i, 1]`` (the intercept is a bias feature of value 1, regularised, as
liblinear does)::

    min_w  0.5 * ||w_k||^2 + C * sum_i max(0, 1 - t_ik * w_k . x~_i)^2

exactly ``LinearSVC(loss="squared_hinge", penalty="l2")``'s objective (two classes: one
problem, for ``classes[1]``, returned as the rows ``[-w, w]``). Solver: Newton's method
with the generalised Hessian ``I + 2C X~_A' X~_A`` (``A``: the points inside the margin),
each step by conjugate gradients to a forcing tolerance, then an Armijo backtracking
line search; the classes (and, for cross-validation, the folds: held-out rows masked
out) are columns of one problem and leave it as they converge.

Every iterate is ``w = X~' beta`` (the optimum is, by its optimality condition
``w = 2C sum_i t_i max(0, 1 - t_i w . x~_i) x~_i``), so the solver works on ``beta``
with ``Q = X~ X~'``: the Gram matrix once when ``n <= 2 D``, costing ``n^2`` per column
and product instead of ``2 n D``, else ``X~ (X~' v)``. Float64 on every device (the
Gram matrix in float32 would move the objective by ~1e-5 relative, more than promised).

Tolerance promised: the objective is 1-strongly convex, so ``||w - w*|| <= ||grad f(w)||``;
a class stops when ``||grad|| <= tol * ||w||`` (liblinear stops on ``||grad|| <= eps *
||grad(0)||``, which is loose at large C), so every returned ``[coef_k, intercept_k]``
is within ``tol / (1 - tol)`` relative L2 distance of the exact minimiser, and its
objective within ``tol^2 ||w||^2 / 2`` of the minimum. Default ``tol = 1e-6``.
"""

from __future__ import annotations

import numpy as np
import torch

from ._device import resolve_device

TOL = 1e-6
MAX_ITER = 200  # Newton steps per class; the method needs ~5-30
CG_MAX = 2000  # conjugate-gradient steps per Newton step


class Problem:
    """``x`` ``(n, D)`` on ``device`` in float64, with ``Q = X~ X~'`` (explicit when
    ``n <= 2 D``). ``targets(y, classes)``: the ``(n, K')`` ±1 columns (``K' = 1`` for
    two classes). ``weights(beta)``: ``(K', D + 1)``, ``[w, b]`` per column."""

    def __init__(self, x, device="cpu"):
        self.device = resolve_device(device)
        self.x = torch.as_tensor(np.asarray(x), device=self.device).to(torch.float64)
        n, d = self.x.shape
        self.gram = self.x @ self.x.T + 1.0 if n <= 2 * d else None

    def qmul(self, v: torch.Tensor) -> torch.Tensor:
        if self.gram is not None:
            return self.gram @ v
        return self.x @ (self.x.T @ v) + v.sum(0)

    def targets(self, y, classes) -> torch.Tensor:
        y, classes = np.asarray(y), np.asarray(classes)
        pos = classes[1:] if len(classes) == 2 else classes
        return torch.as_tensor(np.where(y[:, None] == pos[None, :], 1.0, -1.0),
                               device=self.device)

    def weights(self, beta: torch.Tensor) -> np.ndarray:
        return torch.cat([self.x.T @ beta, beta.sum(0, keepdim=True)]).T.cpu().numpy()

    def beta_from(self, w0: np.ndarray, t: torch.Tensor) -> torch.Tensor:
        """Coefficients ``beta`` for a warm start ``w0`` ``(K', D + 1)``: the optimality
        condition's ``s * t * max(0, 1 - t * x~ . w0)``, ``s`` the least-squares fit of
        ``w0`` along it (exactly ``w0`` when ``w0`` is a minimiser for some C)."""
        w0 = torch.as_tensor(np.asarray(w0), device=self.device).to(torch.float64).T
        xw = self.x @ w0[:-1] + w0[-1]
        v = t * (1 - t * xw).clamp(min=0)
        vqv = (v * self.qmul(v)).sum(0)
        s = torch.where(vqv > 0, (xw * v).sum(0) / vqv.clamp(min=1e-300), 0.0)
        return s * v


def solve(p: Problem, t: torch.Tensor, mask: torch.Tensor, C, beta=None, *, tol=TOL,
          max_iter=MAX_ITER) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Columns ``j`` of ``t`` ``(n, J)`` are independent problems over the rows where
    ``mask[:, j]`` (0/1) is 1, each with its own ``C[j]``. Returns ``beta`` ``(n, J)``
    (``w_j = X~' beta_j``), Newton steps per column and whether each converged."""
    n, J = t.shape
    c_all = torch.as_tensor(C, dtype=torch.float64, device=t.device).expand(J)
    beta = torch.zeros_like(t) if beta is None else beta.clone()
    qbeta = p.qmul(beta)
    steps = torch.zeros(J, dtype=torch.long, device=t.device)
    converged = torch.zeros(J, dtype=torch.bool, device=t.device)
    todo = torch.arange(J, device=t.device)
    for it in range(max_iter + 1):
        b, qb, tt, m, c = beta[:, todo], qbeta[:, todo], t[:, todo], mask[:, todo], c_all[todo]
        h = m * (1 - tt * qb).clamp(min=0)
        f = 0.5 * (b * qb).sum(0) + c * (h * h).sum(0)
        g = b - 2 * c * tt * h  # grad f = X~' g
        qg = qb - 2 * c * p.qmul(tt * h)
        gn = (g * qg).sum(0).clamp(min=0).sqrt()
        if it == 0:
            gn0 = gn  # grad f(w0), every column
        done = gn <= tol * (b * qb).sum(0).clamp(min=0).sqrt()
        converged[todo[done]] = True
        if done.all() or it == max_iter:
            break
        keep = ~done
        todo, b, qb, tt, m, c, h, f, g, qg, gn = (
            a[..., keep] for a in (todo, b, qb, tt, m, c, h, f, g, qg, gn))
        eta = torch.sqrt(gn / gn0[todo]).clamp(max=0.1)  # forcing -> 0: superlinear
        d, qd = _newton_step(p, h > 0, c, g, qg, gn, eta)
        # Armijo backtracking on f(w + s d), every term from qb and qd
        bqb, dqb, dqd = (b * qb).sum(0), (d * qb).sum(0), (d * qd).sum(0)
        slope = (d * qg).sum(0)  # grad f . d, < 0 for a descent direction
        u = tt * qd
        s = torch.ones_like(f)
        for _ in range(50):
            hs = m * (1 - tt * qb - s * u).clamp(min=0)
            fs = 0.5 * (bqb + 2 * s * dqb + s * s * dqd) + c * (hs * hs).sum(0)
            worse = fs > f + 0.01 * s * slope
            if not worse.any():
                break
            s = torch.where(worse, s / 2, s)
        moved = ~worse & (slope < 0)  # a column that cannot descend any more stops
        s = torch.where(moved, s, 0.0)
        beta[:, todo] = b + s * d
        qbeta[:, todo] = qb + s * qd
        steps[todo] += 1
        todo = todo[moved]
        if not len(todo):
            break
    return beta, steps, converged


def _newton_step(p: Problem, active, c, g, qg, gn, eta):
    """Conjugate gradients on ``(I + 2C X~_A' X~_A) d = -grad`` in the coefficients
    (``d = X~' delta``; ``Q`` times the search direction carried along: one product
    with ``Q`` a step) until ``||residual|| <= eta ||grad||``. Returns ``delta`` and
    ``Q delta``."""
    a = active.to(g.dtype)
    delta, qdelta = torch.zeros_like(g), torch.zeros_like(g)
    r, qr = -g, -qg
    pp, qp = r.clone(), qr.clone()
    rr = gn * gn
    stop = eta * gn
    live = torch.ones_like(gn, dtype=torch.bool)
    for _ in range(CG_MAX):
        aqp = a * qp
        php = (pp * qp).sum(0) + 2 * c * (aqp * qp).sum(0)
        alpha = torch.where(live, rr / php.clamp(min=1e-300), 0.0)
        delta += alpha * pp
        qdelta += alpha * qp
        r = r - alpha * (pp + 2 * c * aqp)
        qr = qr - alpha * (qp + 2 * c * p.qmul(aqp))
        rr_new = (r * qr).sum(0).clamp(min=0)
        live &= rr_new.sqrt() > stop
        if not live.any():
            break
        ratio = rr_new / rr.clamp(min=1e-300)
        pp, qp, rr = r + ratio * pp, qr + ratio * qp, rr_new
    return delta, p.qmul(delta)


def fit_ovr_squared_hinge(x, y, classes, C: float, *, device="cpu", tol: float = TOL,
                          max_iter: int = MAX_ITER, w0=None):
    """One-vs-rest squared-hinge linear SVMs on ``x`` ``(n, D)``: ``(coef (K, D),
    intercept (K,), n_iter, converged)``, ``n_iter`` the most Newton steps a class took.
    ``w0``: a warm start ``(coef, intercept)`` (e.g. the solution at a smaller C)."""
    p = Problem(x, device)
    t = p.targets(y, classes)
    beta0 = None
    if w0 is not None:
        coef, intercept = (np.asarray(a, np.float64) for a in w0)
        w = np.concatenate([coef, intercept[:, None]], axis=1)
        beta0 = p.beta_from(w[1:] if len(classes) == 2 else w, t)
    beta, steps, ok = solve(p, t, torch.ones_like(t), C, beta0, tol=tol, max_iter=max_iter)
    coef, intercept = split(p.weights(beta), len(classes))
    return coef, intercept, int(steps.max()), bool(ok.all())


def split(w: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(K', D + 1)`` → ``coef (K, D)``, ``intercept (K,)`` (two classes: ``[-w, w]``)."""
    if n_classes == 2:
        w = np.concatenate([-w, w])
    return w[:, :-1], w[:, -1]
