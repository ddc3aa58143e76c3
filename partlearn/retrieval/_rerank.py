"""Re-ranking for ``partlearn.retrieval``: average and alpha-weighted query expansion,
and diffusion on a reciprocal k-NN graph (Iscen et al., CVPR 2017)."""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from ._base import (_BLOCK_ELEMENTS, _descriptors, _flat_topk, _indices,
                              _positive_int, _real, _unique_rows)
from .._validation import DataError
from ..config import RetrievalConfig

logger = logging.getLogger(__name__)

_RC = RetrievalConfig  # the defaults live there, once


def query_expansion(q, database, ranks, n: int = 10, alpha: float = 0.0) -> np.ndarray:
    """Expanded query descriptors: the query and its top ``n`` database items, averaged.

    ``alpha=0``: average query expansion (Chum et al., ICCV 2007), the mean of
    the query and its top ``n``. ``alpha > 0``: alpha-QE (Radenovic et al.,
    2018), item weights ``max(q . x, 0) ** alpha`` and the query weight 1 (its
    self-similarity for a unit query). ``ranks`` ``(nq, >= n)`` from
    ``search(q, database)``. Returns ``(nq, d)`` float32 rows of unit L2 norm,
    to search the database again with.
    """
    db = _descriptors("query_expansion", "database", database)
    qq = _descriptors("query_expansion", "q", q, dim=db.shape[1])
    n = _positive_int("n", n, 1, len(db))
    alpha = _real("alpha", alpha, 0.0)
    r = _indices("query_expansion", "ranks", ranks, len(db), ndim=2)
    if r.shape[0] != len(qq) or r.shape[1] < n:
        raise DataError(f"query_expansion: ranks should have shape ({len(qq)}, >= n={n}), one "
                        f"row per query, got {r.shape}")
    r = r[:, :n]
    _unique_rows("query_expansion", "ranks", r)
    out = np.empty_like(qq)
    block = max(1, _BLOCK_ELEMENTS // (n * db.shape[1]))
    for start in range(0, len(qq), block):
        stop = min(len(qq), start + block)
        nb = db[r[start:stop]]  # (b, n, d)
        if alpha == 0:
            w = np.ones(nb.shape[:2], np.float32)
        else:
            sims = np.einsum("bd,bnd->bn", qq[start:stop], nb)
            w = np.maximum(sims, 0) ** np.float32(alpha)
        out[start:stop] = qq[start:stop] + np.einsum("bn,bnd->bd", w, nb)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    if (norms == 0).any():
        row = int(np.flatnonzero(norms.ravel() == 0)[0])
        raise DataError(f"query_expansion: the expanded query {row} is the zero vector (the "
                        "query and its neighbours cancel); expected a non-zero sum")
    return out / norms


def _reciprocal_graph(db: np.ndarray, k: int, gamma: float) -> sp.csr_matrix:
    """Affinities ``max(s, 0) ** gamma`` between mutual k-nearest neighbours, no self-loops."""
    n = len(db)
    s, idx = _flat_topk(db, db, k + 1)
    drop = idx == np.arange(n)[:, None]
    drop[~drop.any(axis=1), -1] = True  # a row whose k + 1 hold no self (duplicates) drops its last
    nbr = idx[~drop].reshape(n, k)
    aff = np.maximum(s[~drop].reshape(n, k).astype(np.float64), 0) ** gamma
    knn = sp.csr_matrix((aff.ravel(), (np.repeat(np.arange(n), k), nbr.ravel())), shape=(n, n))
    a = knn.minimum(knn.T).tocsr()  # zero unless i and j are in each other's k-NN
    a.eliminate_zeros()
    return a


def _cg_columns(a, y: np.ndarray, tol: float, maxiter: int) -> tuple[np.ndarray, int]:
    """Conjugate gradient for ``a x = y[:, j]``, every column at once (``a`` symmetric
    positive definite): ``scipy.sparse.linalg.cg`` per column (zero start, stop when
    ``||r|| <= tol ||y_j||`` or after ``maxiter`` steps), with one sparse product per
    step for all columns, in float32 (the vectors stay float64; the product's rounding,
    ~1e-7, is below the default ``tol``). Returns ``(x.T, columns not converged)``."""
    a32 = a.astype(np.float32)  # the sparse product in float32: half the memory traffic
    x = np.zeros_like(y)
    r = y.copy()
    p = r.copy()
    tmp = np.empty_like(y)
    rr = np.einsum("ij,ij->j", r, r)
    stop = tol * np.sqrt(rr)
    for _ in range(maxiter):
        live = np.sqrt(rr) > stop  # converged columns step by 0: they stay as they are
        if not live.any():
            break
        ap = (a32 @ p.astype(np.float32)).astype(np.float64)
        alpha = np.divide(rr, np.einsum("ij,ij->j", p, ap), out=np.zeros_like(rr), where=live)
        x += np.multiply(p, alpha, out=tmp)
        r -= np.multiply(ap, alpha, out=tmp)
        rr_new = np.einsum("ij,ij->j", r, r)
        p *= np.divide(rr_new, rr, out=np.zeros_like(rr), where=live)
        p += r
        rr = np.where(live, rr_new, rr)
    return x.T, int((np.sqrt(rr) > stop).sum())


def diffusion(q, database, k: int = _RC.diffusion_k, alpha: float = _RC.diffusion_alpha,
              gamma: float = _RC.diffusion_gamma, *,
              k_query: int | None = None, tol: float = 1e-6, maxiter: int = 20) -> np.ndarray:
    """Diffusion ranking scores on a reciprocal k-NN graph (Iscen et al., CVPR 2017).

    Graph over the database: ``A_ij = max(x_i . x_j, 0) ** gamma`` when ``i``
    and ``j`` are among each other's ``k`` nearest neighbours (self excluded),
    else 0; ``W = D^-1/2 A D^-1/2`` with ``D`` the degrees (an isolated item
    keeps a zero row). For each query, ``y`` holds ``max(q . x_i, 0) ** gamma``
    on its ``k_query`` (default ``k``) nearest database items and 0 elsewhere,
    and ``(I - alpha W) f = y`` is solved by conjugate gradient (as
    ``scipy.sparse.linalg.cg``, relative tolerance ``tol``, at most ``maxiter``
    iterations, Iscen et al. stop at 20; all queries of a block in one
    sparse-times-dense product per step). Returns ``f`` ``(nq,
    n_db)`` float64, higher is better: rank with ``np.argsort(-f, axis=1,
    kind="stable")``.
    """
    db = _descriptors("diffusion", "database", database)
    qq = _descriptors("diffusion", "q", q, dim=db.shape[1])
    n = len(db)
    if n < 2:
        raise DataError(f"diffusion: the database needs at least 2 items for a graph, got {n}")
    k = _positive_int("k", k, 1, n - 1)
    k_query = k if k_query is None else k_query
    k_query = _positive_int("k_query", k_query, 1, n)
    alpha = _real("alpha", alpha, 0.0, 1.0, open_low=True, open_high=True)
    gamma = _real("gamma", gamma, 0.0, open_low=True)
    tol = _real("tol", tol, 0.0, open_low=True)
    maxiter = _positive_int("maxiter", maxiter, 1)
    a = _reciprocal_graph(db, k, gamma)
    deg = np.asarray(a.sum(axis=1)).ravel()
    dinv = np.divide(1.0, np.sqrt(deg), out=np.zeros_like(deg), where=deg > 0)
    w = sp.diags(dinv) @ a @ sp.diags(dinv)
    system = (sp.identity(n, format="csr") - alpha * w).tocsr()
    s, idx = _flat_topk(qq, db, k_query)
    y = np.zeros((len(qq), n))
    np.put_along_axis(y, idx, np.maximum(s.astype(np.float64), 0) ** gamma, axis=1)
    f = np.zeros_like(y)
    unconverged = 0
    block = max(1, _BLOCK_ELEMENTS // n)  # queries solved together
    for start in range(0, len(qq), block):
        f[start:start + block], left = _cg_columns(system, y[start:start + block].T, tol,
                                                   maxiter)
        unconverged += left
    if unconverged:
        logger.info("diffusion: %d of %d queries stopped at maxiter=%d before tol=%g",
                    unconverged, len(qq), maxiter, tol)
    return f
