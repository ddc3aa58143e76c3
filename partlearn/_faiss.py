"""The one gateway to faiss: k-means and exact inner-product top-k, on CPU or GPU.

Every array is converted at the boundary with
``np.ascontiguousarray(x, dtype="float32")``. When the installed faiss sees
GPUs (``faiss-gpu``), both functions run there behind the same interface;
otherwise on the CPU (top-k by BLAS there: see ``topk_inner``). No other
module imports faiss.
"""

from __future__ import annotations

import threading

import faiss
import numpy as np

from ._validation import ConfigError, DataError

_BLOCK_SCORES = 1 << 24  # scores per block of the CPU top-k (64 MB of float32)
_SMALL_KMEANS = 1 << 28  # points x centroids x dim below which k-means runs on one thread


def _f32(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype="float32")


def num_gpus() -> int:
    """GPUs that the installed faiss can use (0 with ``faiss-cpu``)."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


_local = threading.local()


def _gpu_resources():
    """This thread's GPU resources (a ``StandardGpuResources`` is not thread-safe)."""
    if not hasattr(_local, "gpu"):
        _local.gpu = faiss.StandardGpuResources()
    return _local.gpu


def kmeans(x, k: int, niter: int, nredo: int, seed: int) -> tuple[np.ndarray, float]:
    """Lloyd k-means of the rows of ``x`` (``faiss.Kmeans``): the best of ``nredo``
    seeded runs of ``niter`` iterations.

    Returns ``(centroids (k, D) float32, objective)``: the sum of squared
    distances of the points (faiss subsamples at most 256 per centroid) to
    their centroid, in the kept run. Same ``x`` and ``seed``, same centroids.
    """
    x = _f32(x)
    if x.ndim != 2:
        raise DataError(f"kmeans needs a 2-D array of row vectors, got shape {x.shape}")
    if not 1 <= k <= len(x):
        raise ConfigError(f"kmeans: n_samples={len(x)} should be >= k={k} >= 1")
    if niter < 1 or nredo < 1:
        raise ConfigError(f"kmeans: niter={niter} and nredo={nredo} must be >= 1")
    # faiss samples at most 256 points per centroid: for a few centroids its OpenMP
    # threads cost more than they save (2.8x slower on 2 cores, with BLAS spinning)
    small = min(len(x), 256 * k) * k * x.shape[1] < _SMALL_KMEANS
    threads = faiss.omp_get_max_threads()
    if small:
        faiss.omp_set_num_threads(1)  # OpenMP's count is per calling thread
    km = faiss.Kmeans(x.shape[1], int(k), niter=int(niter), nredo=int(nredo),
                      seed=int(seed) % (2**31), verbose=False, spherical=False,
                      min_points_per_centroid=1,  # no stderr warning on small classes
                      gpu=num_gpus() > 0)
    try:
        km.train(x)
    finally:
        faiss.omp_set_num_threads(threads)
    obj = np.asarray(km.obj, dtype=np.float64)
    # obj holds every iteration of every run; runs only decrease, the kept run ends lowest
    objective = float(obj.min()) if obj.size else 0.0
    return np.asarray(km.centroids, dtype=np.float32).reshape(k, x.shape[1]), objective


def topk_inner(queries, base, k: int, valid=None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``base`` with the largest inner product with each query.

    Returns ``(scores (Q, k) float32, indices (Q, k) int64)``, best first; ``k``
    is capped at the number of rows searched: all, or those where the boolean
    ``valid`` ``(N,)`` is true. Exact brute force, the search of an
    ``IndexFlatIP``: on a GPU, faiss's (``knn_gpu``); on the CPU, BLAS products
    over blocks of ``base`` and a partial sort. faiss's CPU search (``faiss.knn``)
    gives the same answer but, for a few queries against many rows, takes 2x
    the BLAS route alone and 4x inside the part-learning loop, where its OpenMP
    threads and OpenBLAS's spin against each other (faiss 1.15 uses BLAS only
    from 128k queries); see BENCHMARKS.md, "Part learning".
    """
    q, b = _f32(queries), _f32(base)
    if q.ndim != 2 or b.ndim != 2 or q.shape[1] != b.shape[1]:
        raise DataError(f"topk_inner: queries {q.shape} and base {b.shape} should be "
                        "(Q, D) and (N, D) with the same D")
    if valid is not None:
        valid = np.asarray(valid, bool)
        if valid.shape != (len(b),):
            raise DataError(f"topk_inner: valid {valid.shape} should be ({len(b)},)")
    k = min(int(k), len(b) if valid is None else int(valid.sum()))
    if k < 1:
        return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
    if num_gpus() > 0:
        rows = None if valid is None else np.flatnonzero(valid)
        scores, indices = faiss.knn_gpu(_gpu_resources(), q, b if rows is None else b[rows], k,
                                        metric=faiss.METRIC_INNER_PRODUCT)
        indices = np.asarray(indices, np.int64)
        return np.asarray(scores, np.float32), indices if rows is None else rows[indices]
    return _topk_blas(q, b, k, valid)


def _topk_blas(q: np.ndarray, b: np.ndarray, k: int,
               valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    rows = max(k, _BLOCK_SCORES // max(len(q), 1))  # bounds the (Q, rows) score block
    best_s = np.empty((len(q), 0), np.float32)
    best_i = np.empty((len(q), 0), np.int64)
    for start in range(0, len(b), rows):
        s = q @ b[start:start + rows].T  # (Q, rows)
        if valid is not None:
            s[:, ~valid[start:start + rows]] = -np.inf
        if s.shape[1] > k:
            part = np.argpartition(-s, k - 1, axis=1)[:, :k]
            s = np.take_along_axis(s, part, axis=1)
        else:
            part = np.broadcast_to(np.arange(s.shape[1]), s.shape)
        best_s = np.concatenate([best_s, s], axis=1)
        best_i = np.concatenate([best_i, part + start], axis=1)
        if best_s.shape[1] > k:
            keep = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
            best_s = np.take_along_axis(best_s, keep, axis=1)
            best_i = np.take_along_axis(best_i, keep, axis=1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return (np.take_along_axis(best_s, order, axis=1),
            np.take_along_axis(best_i, order, axis=1))


def flat_ip_search(queries, base, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product search of the rows of ``base`` (``faiss.IndexFlatIP``, CPU).

    Returns faiss's ``(scores (Q, k) float32, indices (Q, k) int64)``, best
    first; the order among equal scores is faiss's (callers wanting ties broken
    by row index re-sort: see ``partlearn.retrieval.search``). ``1 <= k <= N``.
    """
    q, b = _f32(queries), _f32(base)
    if q.ndim != 2 or b.ndim != 2 or q.shape[1] != b.shape[1]:
        raise DataError(f"flat_ip_search: queries {q.shape} and base {b.shape} should be "
                        "(Q, D) and (N, D) with the same D")
    if not 1 <= k <= len(b):
        raise ConfigError(f"flat_ip_search: k={k} should be between 1 and N={len(b)}")
    index = faiss.IndexFlatIP(b.shape[1])
    index.add(b)
    scores, indices = index.search(q, int(k))
    return np.asarray(scores, np.float32), np.asarray(indices, np.int64)


def ivfpq_ip_search(queries, base, k: int, *, nlist: int, m: int, nbits: int, nprobe: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Approximate inner-product search through a ``faiss.IndexIVFPQ`` trained on ``base``.

    A flat inner-product coarse quantiser of ``nlist`` cells, residuals
    product-quantised into ``m`` sub-vectors of ``nbits`` bits; ``nprobe`` cells
    visited per query; k-means seeded with ``seed``. Returns
    ``(scores (Q, k) float32, indices (Q, k) int64)``, best first; where the
    visited cells hold fewer than ``k`` rows, faiss pads with index ``-1``
    (its score is then set to ``-inf`` here).
    """
    q, b = _f32(queries), _f32(base)
    if q.ndim != 2 or b.ndim != 2 or q.shape[1] != b.shape[1]:
        raise DataError(f"ivfpq_ip_search: queries {q.shape} and base {b.shape} should be "
                        "(Q, D) and (N, D) with the same D")
    d = b.shape[1]
    if not 1 <= nlist <= len(b):
        raise ConfigError(f"ivfpq_ip_search: nlist={nlist} should be between 1 and "
                          f"the number of database rows N={len(b)}")
    if m < 1 or d % m:
        raise ConfigError(f"ivfpq_ip_search: m={m} should divide the dimension D={d}")
    if not 1 <= nbits <= 16 or len(b) < 2 ** nbits:
        raise ConfigError(f"ivfpq_ip_search: nbits={nbits} needs 1 <= nbits <= 16 and at "
                          f"least 2**nbits={2 ** nbits} database rows to train on, got N={len(b)}")
    if not 1 <= nprobe <= nlist:
        raise ConfigError(f"ivfpq_ip_search: nprobe={nprobe} should be between 1 and nlist={nlist}")
    if k < 1:
        raise ConfigError(f"ivfpq_ip_search: k={k} should be >= 1")
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFPQ(quantizer, d, int(nlist), int(m), int(nbits),
                             faiss.METRIC_INNER_PRODUCT)
    for cp in (index.cp, index.pq.cp):  # seeded, and no stderr warning on small training sets
        cp.seed = int(seed) % (2**31)
        cp.min_points_per_centroid = 1
    index.train(b)
    index.add(b)
    index.nprobe = int(nprobe)
    scores, indices = index.search(q, int(k))
    scores = np.asarray(scores, np.float32)
    indices = np.asarray(indices, np.int64)
    scores[indices < 0] = -np.inf
    return scores, indices
