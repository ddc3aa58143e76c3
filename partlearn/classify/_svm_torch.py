"""Batched one-vs-rest linear SVMs in torch: liblinear's L2-regularised squared-hinge primal.

For every class ``k`` at once, with ``t_ik = +1`` if ``y_i == classes[k]`` else ``-1``
and ``x~_i = [x_i, 1]`` (the intercept is a bias feature of value 1, regularised, as
liblinear does)::

    min_w  0.5 * ||w_k||^2 + C * sum_i max(0, 1 - t_ik * w_k . x~_i)^2

exactly ``LinearSVC(loss="squared_hinge", penalty="l2")``'s objective (two classes: one
problem, for ``classes[1]``, returned as the rows ``[-w, w]``). Solver: Newton's method
with the generalised Hessian ``I + 2C X~_A' X~_A`` (``A``: the points inside the margin),
each step by conjugate gradients to a forcing tolerance, then an exact line search
(the objective is piecewise quadratic along a line); the classes (and, for
cross-validation, the folds: held-out rows masked out) are columns of one problem and
leave it, and each conjugate-gradient solve, as they converge.

Every iterate is ``w = X~' beta`` (the optimum is, by its optimality condition
``w = 2C sum_i t_i max(0, 1 - t_i w . x~_i) x~_i``), so the solver works on ``beta``
with ``Q = X~ X~'``: the Gram matrix once when ``n <= 2 D``, costing ``n^2`` per column
and product instead of ``2 n D``, else ``X~ (X~' v)``. Float64 on every device, CUDA
included: the certificate below needs gradients to ~1e-7 of ``||w||``, sums of
thousands of products that float32 does not resolve.

Tolerance promised: the objective is 1-strongly convex, so ``||w - w*|| <= ||grad f(w)||``;
a class stops when ``||grad|| <= tol * ||w||`` (liblinear stops on ``||grad|| <= eps *
||grad(0)||``, which is loose at large C), so every returned ``[coef_k, intercept_k]``
is within ``tol / (1 - tol)`` relative L2 distance of the exact minimiser, and its
objective within ``tol^2 ||w||^2 / 2`` of the minimum. Default ``tol = 1e-6``.
"""

from __future__ import annotations

import numpy as np
import torch

from .._device import resolve_device

TOL = 1e-6
MAX_ITER = 200  # Newton steps per class: ~3-25 on part codes, ~100 on hard n ~ D problems
CG_MAX = 2000  # conjugate-gradient steps per Newton step


class Problem:
    """``x`` ``(n, D)`` on ``device`` in float64, with ``Q = X~ X~'`` (explicit when
    ``n <= 2 D``). ``targets(y, classes)``: the ``(n, K')`` ±1 columns (``K' = 1`` for
    two classes). ``weights(beta)``: ``(K', D + 1)``, ``[w, b]`` per column.

    Out of core (``block_rows``, an int): ``x`` is kept as given (float16 or float32, an
    ``np.memmap`` included) and read ``block_rows`` rows at a time, each block converted
    to float64 on ``device`` and dropped after use; every product with ``X~`` or ``X~'``
    is a sum, or a stack, over the blocks, so the solve is the in-memory one to float
    rounding. ``gram``: keep ``Q`` (built block pair by block pair; default: when
    ``n <= 2 D``), else each product with ``Q`` reads ``x`` twice."""

    def __init__(self, x, device="cpu", *, block_rows: int | None = None,
                 gram: bool | None = None):
        self.device = resolve_device(device)
        if block_rows is None:
            # a copy in float64 (as .to(float64) made): a read-only memory map is never
            # wrapped, so torch does not warn that it is not writable
            self.x = torch.from_numpy(np.array(x, dtype=np.float64)).to(self.device)
        else:
            self.src, self.x = x, None
        n, d = self.shape = tuple(x.shape if self.x is None else self.x.shape)
        self.block_rows = block_rows
        self.gram = None
        if n <= 2 * d if gram is None else gram:
            self.gram = self.x @ self.x.T + 1.0 if self.x is not None else self._blocked_gram()

    def _blocks(self, start: int = 0):
        """``(rows, x[rows] in float64 on the device)``, block by block from row ``start``
        (in memory: one block, every row)."""
        if self.x is not None:
            yield slice(None), self.x
            return
        for i in range(start, self.shape[0], self.block_rows):
            rows = slice(i, i + self.block_rows)
            yield rows, torch.from_numpy(np.array(self.src[rows], np.float64)).to(self.device)

    def _blocked_gram(self) -> torch.Tensor:
        """``Q``, block pair by block pair (upper blocks, mirrored)."""
        n = self.shape[0]
        g = torch.empty((n, n), dtype=torch.float64, device=self.device)
        for i in range(0, n, self.block_rows):
            blocks = self._blocks(i)
            ri, xi = next(blocks)
            g[ri, ri] = xi @ xi.T + 1.0
            for rj, xj in blocks:
                g[ri, rj] = xi @ xj.T + 1.0
                g[rj, ri] = g[ri, rj].T
        return g

    def xt_mul(self, v: torch.Tensor) -> torch.Tensor:
        """``X' v`` ``(D, J)`` (without the bias row)."""
        if self.x is not None:
            return self.x.T @ v
        out = torch.zeros((self.shape[1], v.shape[1]), dtype=v.dtype, device=v.device)
        for rows, xb in self._blocks():
            out += xb.T @ v[rows]
        return out

    def x_mul(self, u: torch.Tensor) -> torch.Tensor:
        """``X u`` ``(n, J)``."""
        if self.x is not None:
            return self.x @ u
        return torch.cat([xb @ u for _, xb in self._blocks()])

    def qmul(self, v: torch.Tensor) -> torch.Tensor:
        if self.gram is not None:
            return self.gram @ v
        return self.x_mul(self.xt_mul(v)) + v.sum(0)

    def targets(self, y, classes) -> torch.Tensor:
        y, classes = np.asarray(y), np.asarray(classes)
        pos = classes[1:] if len(classes) == 2 else classes
        return torch.as_tensor(np.where(y[:, None] == pos[None, :], 1.0, -1.0),
                               device=self.device)

    def weights(self, beta: torch.Tensor) -> np.ndarray:
        return torch.cat([self.xt_mul(beta), beta.sum(0, keepdim=True)]).T.cpu().numpy()

    def beta_from(self, w0: np.ndarray, t: torch.Tensor) -> torch.Tensor:
        """Coefficients ``beta`` for a warm start ``w0`` ``(K', D + 1)``: the optimality
        condition's ``s * t * max(0, 1 - t * x~ . w0)``, ``s`` the least-squares fit of
        ``w0`` along it (exactly ``w0`` when ``w0`` is a minimiser for some C)."""
        w0 = torch.as_tensor(np.asarray(w0), device=self.device).to(torch.float64).T
        xw = self.x_mul(w0[:-1]) + w0[-1]
        v = t * (1 - t * xw).clamp(min=0)
        vqv = (v * self.qmul(v)).sum(0)
        s = torch.where(vqv > 0, (xw * v).sum(0) / vqv.clamp(min=1e-300), 0.0)
        return s * v


def solve(p: Problem, t: torch.Tensor, mask: torch.Tensor, C, beta=None, *, tol=TOL,
          max_iter=MAX_ITER) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Columns ``j`` of ``t`` ``(n, J)`` are independent problems over the rows where
    ``mask[:, j]`` (0/1; None: every row) is 1, each with its own ``C[j]``. Returns
    ``beta`` ``(n, J)`` (``w_j = X~' beta_j``), Newton steps per column and whether each
    converged."""
    J = t.shape[1]
    mask = torch.ones_like(t) if mask is None else mask
    c_all = torch.as_tensor(C, dtype=torch.float64, device=t.device).expand(J)
    beta = torch.zeros_like(t) if beta is None else beta.clone()
    qbeta = torch.zeros_like(t) if beta is None else p.qmul(beta)
    steps = torch.zeros(J, dtype=torch.long, device=t.device)
    converged = torch.zeros(J, dtype=torch.bool, device=t.device)
    todo = torch.arange(J, device=t.device)
    for it in range(max_iter + 1):
        b, qb, tt, m, c = beta[:, todo], qbeta[:, todo], t[:, todo], mask[:, todo], c_all[todo]
        h = m * (1 - tt * qb).clamp(min=0)
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
        todo, b, qb, tt, m, c, h, g, qg, gn = (
            a[..., keep] for a in (todo, b, qb, tt, m, c, h, g, qg, gn))
        eta = torch.sqrt(gn / gn0[todo]).clamp(max=0.1)  # forcing -> 0: superlinear
        d, qd = _newton_step(p, h > 0, c, g, qg, gn, eta)
        s, moved = _line_search(qb, qd, d, tt, m, c, (d * qg).sum(0))
        beta[:, todo] = b + s * d
        qbeta[:, todo] = qb + s * qd
        steps[todo] += 1
        todo = todo[moved]
        if not len(todo):
            break
    return beta, steps, converged


def _line_search(qb, qd, d, t, m, c, slope):
    """The exact minimiser ``s > 0`` of the convex piecewise quadratic ``f(w + s d)`` along a
    descent direction (``slope``, the derivative at 0, < 0): its derivative, piecewise
    linear and increasing, zeroed by Newton steps kept inside a bracket. Found from
    derivatives only, so it still moves where the decrease of ``f`` is below its
    rounding. Returns ``s`` (0 where ``d`` does not descend) and where it moved."""
    z, u = t * qb, t * qd
    dqb, dqd = (d * qb).sum(0), (d * qd).sum(0)
    lo, hi, s = torch.zeros_like(slope), torch.full_like(slope, float("inf")), torch.ones_like(slope)
    for _ in range(60):
        h = m * (1 - z - s * u).clamp(min=0)
        d1 = dqb + s * dqd - 2 * c * (h * u).sum(0)
        d2 = dqd + 2 * c * ((h > 0) * u * u).sum(0)
        lo, hi = torch.where(d1 < 0, s, lo), torch.where(d1 < 0, hi, s)
        step = s - d1 / d2
        s_new = torch.where((step > lo) & (step < hi), step,
                            torch.where(torch.isinf(hi), 2 * s, (lo + hi) / 2))
        if bool(((s_new - s).abs() <= 1e-12 * s).all()):
            break
        s = s_new
    moved = (slope < 0) & (s > 0)  # a column that cannot descend any more stops
    return torch.where(moved, s, 0.0), moved


def _newton_step(p: Problem, active, c, g, qg, gn, eta):
    """Conjugate gradients on ``(I + 2C X~_A' X~_A) d = -grad`` in the coefficients
    (``d = X~' delta``; ``Q`` times the search direction carried along: one product
    with ``Q`` a step, over the columns still short of ``||residual|| <= eta ||grad||``).
    Returns ``delta`` and ``Q delta``."""
    delta = torch.zeros_like(g)
    cols = torch.arange(g.shape[1], device=g.device)
    a, d, r, qr = active.to(g.dtype), torch.zeros_like(g), -g, -qg
    pp, qp, rr, stop = r, qr, gn * gn, eta * gn
    for _ in range(CG_MAX):
        aqp = a * qp
        alpha = rr / ((pp * qp).sum(0) + 2 * c * (aqp * qp).sum(0)).clamp(min=1e-300)
        d = d + alpha * pp
        r = r - alpha * (pp + 2 * c * aqp)
        qr = qr - alpha * (qp + 2 * c * p.qmul(aqp))
        rr_new = (r * qr).sum(0).clamp(min=0)
        live = rr_new.sqrt() > stop
        if not live.all():  # finished columns leave
            delta[:, cols[~live]] = d[:, ~live]
            if not live.any():
                break
            cols, a, c, d, r, qr, pp, qp, rr, rr_new, stop = (
                v[..., live] for v in (cols, a, c, d, r, qr, pp, qp, rr, rr_new, stop))
        ratio = rr_new / rr.clamp(min=1e-300)
        pp, qp, rr = r + ratio * pp, qr + ratio * qp, rr_new
    else:
        delta[:, cols] = d
    return delta, p.qmul(delta)


def fit_ovr_squared_hinge(x, y, classes, C: float, *, device="cpu", tol: float = TOL,
                          max_iter: int = MAX_ITER, w0=None, block_rows: int | None = None,
                          gram: bool | None = None):
    """One-vs-rest squared-hinge linear SVMs on ``x`` ``(n, D)``: ``(coef (K, D),
    intercept (K,), n_iter, converged)``, ``n_iter`` the most Newton steps a class took.
    ``w0``: a warm start ``(coef, intercept)`` (e.g. the solution at a smaller C).
    ``block_rows``, ``gram``: out of core, as ``Problem``."""
    p = Problem(x, device, block_rows=block_rows, gram=gram)
    t = p.targets(y, classes)
    beta0 = None
    if w0 is not None:
        coef, intercept = (np.asarray(a, np.float64) for a in w0)
        w = np.concatenate([coef, intercept[:, None]], axis=1)
        beta0 = p.beta_from(w[1:] if len(classes) == 2 else w, t)
    beta, steps, ok = solve(p, t, None, C, beta0, tol=tol, max_iter=max_iter)
    coef, intercept = split(p.weights(beta), len(classes))
    return coef, intercept, int(steps.max()), bool(ok.all())


def split(w: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(K', D + 1)`` → ``coef (K, D)``, ``intercept (K,)`` (two classes: ``[-w, w]``)."""
    if n_classes == 2:
        w = np.concatenate([-w, w])
    return w[:, :-1], w[:, -1]
