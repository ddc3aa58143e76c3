"""Shared pieces of ``partlearn.retrieval``: the boundary checks of descriptors, indices
and parameters (``DataError``/``ConfigError`` naming what was expected), and the exact
top-k by inner product with ties broken by database index."""

from __future__ import annotations

import math

import numpy as np

from .. import _faiss
from .._validation import ConfigError, DataError

_BLOCK_ELEMENTS = 1 << 22  # similarities per block of queries (16 MB of float32)


def _descriptors(where: str, name: str, x, dim: int | None = None) -> np.ndarray:
    """``x`` as a C-contiguous float32 ``(n, d)`` array of finite numbers, n >= 1."""
    try:
        a = np.asarray(x)
    except Exception as exc:  # ragged nested lists
        raise DataError(f"{where}: {name} should be a 2-D (n, d) array of numbers: {exc}") from None
    if a.dtype.kind not in "biuf":
        raise DataError(f"{where}: {name} should be a 2-D (n, d) array of numbers, "
                        f"got dtype {a.dtype}")
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise DataError(f"{where}: {name} should be a 2-D (n, d) array with n, d >= 1, "
                        f"got shape {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise DataError(f"{where}: {name} has dimension d={a.shape[1]}, expected d={dim} "
                        f"like the database")
    a = np.ascontiguousarray(a, dtype="float32")
    bad = ~np.isfinite(a)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise DataError(f"{where}: {name} should hold finite numbers, got {int(bad.sum())} "
                        f"NaN or infinite values (first in row {row})")
    return a


def _indices(where: str, name: str, values, n_db: int | None, ndim: int = 1,
             allow_missing: bool = False) -> np.ndarray:
    """``values`` as an int64 array of database indices in ``[0, n_db)``
    (``-1`` also allowed, as faiss's "no result", when ``allow_missing``)."""
    try:
        a = np.asarray(values)
    except Exception as exc:
        raise DataError(f"{where}: {name} should be an array of integer indices: {exc}") from None
    if a.size == 0 and a.ndim == 1 and ndim == 1:
        return np.zeros(0, np.int64)
    if a.dtype.kind not in "iu":
        raise DataError(f"{where}: {name} should hold integer database indices, "
                        f"got dtype {a.dtype}")
    if a.ndim != ndim:
        shape = "(k,)" if ndim == 1 else "(n_queries, k)"
        raise DataError(f"{where}: {name} should be a {ndim}-D {shape} array of indices, "
                        f"got shape {a.shape}")
    a = a.astype(np.int64, copy=False)
    low = -1 if allow_missing else 0
    if a.size:
        out = (a < low) | (a >= n_db) if n_db is not None else a < low
        if out.any():
            first = a[out].ravel()[0]
            limit = f"[{low}, {n_db})" if n_db is not None else f">= {low}"
            raise DataError(f"{where}: {name} holds index {int(first)} out of range; expected "
                            f"database indices in {limit}"
                            + (" (-1 meaning no result)" if allow_missing else ""))
    return a


def _unique_rows(where: str, name: str, ranks: np.ndarray) -> None:
    """Raise unless no row of ``ranks`` repeats a (non-negative) index."""
    if ranks.shape[-1] < 2:
        return
    s = np.sort(ranks, axis=-1)
    dup = (s[..., 1:] == s[..., :-1]) & (s[..., 1:] >= 0)
    if dup.any():
        at = tuple(np.argwhere(dup)[0])
        row = int(at[0]) if ranks.ndim == 2 else 0
        value = int(s[at])
        raise DataError(f"{where}: {name} should rank each database item at most once, but "
                        f"row {row} lists index {value} twice")


def _positive_int(name: str, value, low: int = 1, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name}={value!r} should be an integer")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ConfigError(f"{name}={value} should be {bound}")
    return int(value)


def _real(name: str, value, low: float, high: float | None = None, *,
          open_low: bool = False, open_high: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name}={value!r} should be a number")
    v = float(value)
    ok = math.isfinite(v) and (v > low if open_low else v >= low)
    if high is not None:
        ok = ok and (v < high if open_high else v <= high)
    if not ok:
        lo = "(" if open_low else "["
        hi = ")" if open_high else "]"
        raise ConfigError(f"{name}={value!r} should be in {lo}{low}, "
                          f"{high if high is not None else 'inf'}{hi}")
    return v


# --------------------------------------------------------------------------- search

def _stable(scores: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows re-sorted by score, best first, equal scores by increasing index."""
    order = np.lexsort((indices, -scores), axis=-1)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(indices, order, axis=1)


def _flat_topk(q: np.ndarray, b: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k, ties broken by index also across the k-th place: by a matrix
    product and a stable sort when ``k`` is a quarter of the database or more, else
    by faiss.

    faiss is asked for k + 1 results; a row whose (k+1)-th score equals its
    k-th may have tied items left out, and is searched again with twice as
    many (up to the whole database) until the last score fetched is lower.
    """
    n = len(b)
    out_s = np.empty((len(q), k), np.float32)
    out_i = np.empty((len(q), k), np.int64)
    if 4 * k >= n:  # most of the database: one product and a stable sort beat faiss's heaps
        block = max(1, _BLOCK_ELEMENTS // n)
        for start in range(0, len(q), block):
            s = q[start:start + block] @ b.T
            order = np.argsort(-s, axis=1, kind="stable")[:, :k]
            out_i[start:start + block] = order
            out_s[start:start + block] = np.take_along_axis(s, order, axis=1)
        return out_s, out_i
    rows = np.arange(len(q))
    fetch = min(n, k + 1)
    while rows.size:
        s, i = _faiss.flat_ip_search(q[rows], b, fetch)
        done = (s[:, -1] < s[:, k - 1]) if fetch < n else np.ones(len(rows), bool)
        s_done, i_done = _stable(s[done], i[done])
        out_s[rows[done]] = s_done[:, :k]
        out_i[rows[done]] = i_done[:, :k]
        rows = rows[~done]
        fetch = min(n, 2 * fetch)
    return out_s, out_i
