"""Image retrieval over global descriptors: search, evaluation and re-ranking.

* ``search``: inner-product nearest neighbours through faiss (exact
  ``IndexFlatIP`` by default, ``IndexIVFPQ`` for large databases), ties broken
  by database index.
* ``average_precision`` and ``instance_map``: the revisited Oxford and Paris
  evaluation (Radenovic et al., CVPR 2018; ``revisitop``'s ``compute_ap`` and
  ``compute_map``) with its Easy, Medium and Hard protocols.
* ``category_retrieval``: the deep-metric-learning protocol (every image
  queries all the others; mAP and recall@K).
* ``query_expansion`` (average QE, Chum et al. ICCV 2007; alpha-QE, Radenovic
  et al. 2018) and ``diffusion`` (Iscen et al., CVPR 2017) re-rank.

Descriptors are rows of a 2-D array and are used as given: the inner product
is the cosine only for L2-normalised rows. Every function checks its inputs
and raises ``DataError`` (bad arrays, indices) or ``ConfigError`` (bad
parameters) saying what was expected and what came. Rankings are ``(nq, k)``
arrays of database indices, best first, one row per query (``revisitop``
stores the transpose).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np

from .. import _faiss
from .._validation import ConfigError, DataError, check_choice
from ..config import SEARCH_INDEXES, RetrievalConfig
from ._rerank import diffusion, query_expansion
from ._base import (_BLOCK_ELEMENTS, _descriptors, _flat_topk, _indices,
                              _positive_int, _stable, _unique_rows)

logger = logging.getLogger(__name__)

_RC = RetrievalConfig  # the defaults live there, once

__all__ = ["PROTOCOLS", "average_precision", "category_retrieval", "diffusion",
           "instance_map", "query_expansion", "search"]

#: protocol -> (ground-truth lists that are positives, lists that are ignored)
PROTOCOLS = {
    "easy": (("easy",), ("junk", "hard")),
    "medium": (("easy", "hard"), ("junk",)),
    "hard": (("hard",), ("junk", "easy")),
}
_GND_KEYS = ("easy", "hard", "junk")


def _largest_divisor(d: int, cap: int) -> int:
    return max(m for m in range(1, max(1, cap) + 1) if d % m == 0)


def search(queries, database, k: int | None = None, *, index: str = _RC.index,
           nlist: int | None = None, m: int | None = None, nbits: int = 8,
           nprobe: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` database rows with the largest inner product with each query.

    Returns ``(scores (nq, k) float32, ranks (nq, k) int64)``, best first;
    ``k=None`` ranks the whole database. ``index="flat"`` is exact (faiss
    ``IndexFlatIP``) and breaks ties by database index, so the ranking equals
    a stable argsort of ``-queries @ database.T``. ``index="ivfpq"`` is
    approximate, for large databases: a ``faiss.IndexIVFPQ`` trained on the
    database with ``nlist`` cells (default ``round(4 sqrt(n))``, at most
    ``n // 39``), ``m`` sub-quantisers of ``nbits`` bits (default: the largest
    divisor of the dimension ``<= min(64, d // 2)``), ``nprobe`` cells visited
    (default ``min(nlist, retrieval.nprobe)``, 16) and k-means seeded with ``seed``; where the
    visited cells hold fewer than ``k`` items the row ends with index ``-1``,
    score ``-inf``. Its ties are broken by index among the results returned.
    """
    check_choice("index", index, SEARCH_INDEXES)
    b = _descriptors("search", "database", database)
    q = _descriptors("search", "queries", queries, dim=b.shape[1])
    n, d = b.shape
    k = n if k is None else _positive_int("k", k, 1, n)
    if index == "flat":
        return _flat_topk(q, b, k)
    nlist = max(1, min(round(4 * math.sqrt(n)), n // 39)) if nlist is None else nlist
    m = _largest_divisor(d, min(64, d // 2)) if m is None else m
    nprobe = min(nlist, _RC.nprobe) if nprobe is None else nprobe
    nlist = _positive_int("nlist", nlist, 1, n)
    m = _positive_int("m", m, 1, d)
    if d % m:
        raise ConfigError(f"m={m} should divide the descriptor dimension d={d}")
    nbits = _positive_int("nbits", nbits, 1, 16)
    if n < 2 ** nbits:
        raise ConfigError(f"index='ivfpq' with nbits={nbits} trains 2**{nbits}={2 ** nbits} "
                          f"centroids per sub-quantiser and needs at least that many database "
                          f"rows, got {n}; lower nbits or use index='flat'")
    nprobe = _positive_int("nprobe", nprobe, 1, nlist)
    s, i = _faiss.ivfpq_ip_search(q, b, k, nlist=nlist, m=m, nbits=nbits, nprobe=nprobe,
                                  seed=int(seed))
    return _stable(s, i)


# --------------------------------------------------------------------------- instance-level AP

def _ap_from_positions(pos: np.ndarray, n_pos: int) -> float:
    """revisitop's ``compute_ap``: ``pos`` the sorted 0-based ranks of the retrieved positives."""
    if pos.size == 0:
        return 0.0
    j = np.arange(pos.size, dtype=np.float64)
    r = pos.astype(np.float64)
    p0 = np.divide(j, r, out=np.ones_like(r), where=r > 0)  # precision before the j-th positive
    p1 = (j + 1) / (r + 1)  # precision at the j-th positive
    return float(((p0 + p1) / 2).sum() / n_pos)


def _positions(row: np.ndarray, positives: np.ndarray, junk: np.ndarray) -> np.ndarray:
    """0-based ranks of the positives in ``row`` once junk and ``-1`` entries are removed."""
    kept = row[row >= 0]
    if junk.size:
        kept = kept[~np.isin(kept, junk)]
    return np.flatnonzero(np.isin(kept, positives))


def _check_disjoint(where: str, a_name: str, a: np.ndarray, b_name: str, b: np.ndarray) -> None:
    both = np.intersect1d(a, b)
    if both.size:
        raise DataError(f"{where}: {a_name} and {b_name} should be disjoint, but both hold "
                        f"index {int(both[0])}")


def _check_no_duplicates(where: str, name: str, a: np.ndarray) -> None:
    s = np.sort(a)
    dup = s[1:][s[1:] == s[:-1]]
    if dup.size:
        raise DataError(f"{where}: {name} lists index {int(dup[0])} more than once")


def average_precision(ranks_row, positives, junk=()) -> float:
    """Average precision of one ranking, exactly as revisitop's ``compute_ap``.

    ``ranks_row`` ``(k,)``: database indices, best first (the whole database or
    a truncated list; ``-1`` entries, faiss's "no result", are skipped).
    ``positives`` and ``junk``: disjoint database indices; junk items are
    removed from the ranking before anything is counted. With ``r_j`` the
    0-based rank of the j-th retrieved positive (j = 0, 1, ...) in the ranking
    without junk, and ``N = len(positives)``::

        AP = (1 / N) * sum_j (P0_j + P1_j) / 2
        P0_j = j / r_j         (1 when r_j = 0)   precision just before it
        P1_j = (j + 1) / (r_j + 1)               precision at it

    that is each recall step ``1/N`` times the mean of the precision just
    before and at the positive. Positives absent from a truncated ranking add
    nothing (recall stays below 1).
    """
    row = _indices("average_precision", "ranks_row", ranks_row, None, allow_missing=True)
    _unique_rows("average_precision", "ranks_row", row)
    pos = _indices("average_precision", "positives", positives, None)
    jnk = _indices("average_precision", "junk", junk, None)
    if pos.size == 0:
        raise DataError("average_precision: positives is empty; AP needs at least one positive "
                        "(instance_map leaves such queries out of the mean)")
    _check_no_duplicates("average_precision", "positives", pos)
    _check_disjoint("average_precision", "positives", pos, "junk", jnk)
    return _ap_from_positions(_positions(row, pos, jnk), pos.size)


def _precision_at(pos: np.ndarray, kappas: Sequence[int]) -> list[float]:
    """revisitop's precision at each kappa: ``kq = min(max rank of a positive, kappa)``
    (1-based), the fraction of the top ``kq`` that are positives."""
    if pos.size == 0:
        return [0.0 for _ in kappas]
    pos1 = pos + 1
    out = []
    for kappa in kappas:
        kq = min(int(pos1.max()), int(kappa))
        out.append(float((pos1 <= kq).sum() / kq))
    return out


def _ground_truth(gnd, n_queries: int, n_db: int) -> list[dict[str, np.ndarray]]:
    if isinstance(gnd, Mapping) or not isinstance(gnd, Sequence):
        raise DataError(f"instance_map: gnd should be a list of {n_queries} dicts with keys "
                        f"'easy', 'hard', 'junk', got {type(gnd).__name__}")
    if len(gnd) != n_queries:
        raise DataError(f"instance_map: gnd has {len(gnd)} entries but ranks has {n_queries} "
                        "rows; expected one ground-truth dict per query")
    out = []
    for qi, g in enumerate(gnd):
        if not isinstance(g, Mapping):
            raise DataError(f"instance_map: gnd[{qi}] should be a dict with keys 'easy', 'hard', "
                            f"'junk', got {type(g).__name__}")
        missing = [key for key in _GND_KEYS if key not in g]
        if missing:
            raise DataError(f"instance_map: gnd[{qi}] lacks key(s) {missing}; expected 'easy', "
                            f"'hard' and 'junk' index lists (an empty list where none)")
        lists = {key: _indices("instance_map", f"gnd[{qi}][{key!r}]", g[key], n_db)
                 for key in _GND_KEYS}
        every = np.sort(np.concatenate([lists[key] for key in _GND_KEYS]))
        if (every[1:] == every[:-1]).any():  # find and name the repeat
            for key in _GND_KEYS:
                _check_no_duplicates("instance_map", f"gnd[{qi}][{key!r}]", lists[key])
            for a, b in (("easy", "hard"), ("easy", "junk"), ("hard", "junk")):
                _check_disjoint("instance_map", f"gnd[{qi}][{a!r}]", lists[a],
                                f"gnd[{qi}][{b!r}]", lists[b])
        out.append(lists)
    return out


def instance_map(ranks, gnd, protocol: str = "medium", *, kappas: Sequence[int] = (),
                 n_db: int | None = None) -> dict:
    """Mean average precision over queries under a revisited Oxford/Paris protocol.

    ``ranks`` ``(nq, k)``: database indices, best first, one row per query (as
    ``search`` returns; ``-1`` entries skipped). ``gnd``: one dict per query
    with ``"easy"``, ``"hard"`` and ``"junk"`` index lists into the database
    (other keys, such as ``"bbx"``, are ignored). ``protocol``:

    * ``"easy"``: positives = easy; ignored = junk + hard;
    * ``"medium"``: positives = easy + hard; ignored = junk;
    * ``"hard"``: positives = hard; ignored = junk + easy.

    Ignored items are removed from the ranking; AP is ``average_precision``'s
    (revisitop's ``compute_ap``). A query without positives under the protocol
    is left out of the mean, as revisitop does, and listed in ``"left_out"``.
    ``n_db``: the database size the indices must stay under (default
    ``ranks.shape[1]``, right for a full ranking; pass it for truncated ones).
    ``kappas``: also revisitop's mean precision at each kappa (``"mp@k"``).

    Returns ``{"map", "ap" (per query, None where left out), "n_queries"
    (queries in the mean), "left_out", "protocol"}`` and, with kappas,
    ``"mp@k"`` ``{kappa: mean}`` and ``"p@k"`` ``{kappa: per-query list}``.
    """
    check_choice("protocol", protocol, tuple(PROTOCOLS))
    r = _indices("instance_map", "ranks", ranks, None, ndim=2, allow_missing=True)
    n_db = r.shape[1] if n_db is None else _positive_int("n_db", n_db, 1)
    r = _indices("instance_map", "ranks", r, n_db, ndim=2, allow_missing=True)
    _unique_rows("instance_map", "ranks", r)
    kappas = [_positive_int("kappa", kq, 1) for kq in kappas]
    truth = _ground_truth(gnd, len(r), n_db)
    pos_keys, ignore_keys = PROTOCOLS[protocol]
    aps: list[float | None] = []
    prs: list[list[float] | None] = []
    left_out = []
    # 1 positive, 2 ignored, 0 other; the extra last slot is where faiss's -1 lands: ignored
    status = np.zeros(n_db + 1, np.int8)
    status[-1] = 2
    for qi, g in enumerate(truth):
        positives = np.concatenate([g[key] for key in pos_keys])
        if positives.size == 0:
            aps.append(None)
            prs.append(None)
            left_out.append(qi)
            continue
        ignored = np.concatenate([g[key] for key in ignore_keys])
        status[positives], status[ignored] = 1, 2
        seen = status[r[qi]]
        pos = np.flatnonzero(seen[seen != 2] == 1)  # ranks once ignored items are removed
        status[positives], status[ignored] = 0, 0
        aps.append(_ap_from_positions(pos, positives.size))
        prs.append(_precision_at(pos, kappas))
    counted = [a for a in aps if a is not None]
    if not counted:
        raise DataError(f"instance_map: no query has a positive under protocol {protocol!r} "
                        f"(all {len(r)} would be left out); check gnd")
    if left_out:
        logger.info("instance_map %s: %d of %d queries have no positive and are left out: %s",
                    protocol, len(left_out), len(r), left_out)
    result = {"map": float(np.mean(counted)), "ap": aps, "n_queries": len(counted),
              "left_out": left_out, "protocol": protocol}
    if kappas:
        result["p@k"] = {kq: [None if p is None else p[j] for p in prs]
                         for j, kq in enumerate(kappas)}
        result["mp@k"] = {kq: float(np.mean([p[j] for p in prs if p is not None]))
                          for j, kq in enumerate(kappas)}
    return result


# --------------------------------------------------------------------------- category level

def category_retrieval(x, labels, ks: Sequence[int] = _RC.ks, *, queries=None,
                       scores=None, block_size: int | None = None) -> dict:
    """Category-level retrieval: every image queries all the others (itself excluded).

    Re-ranked: ``queries`` ``(n, d)`` are the images' expanded queries (query
    expansion; query ``i`` is still image ``i``, excluded from its ranking), or
    ``scores`` ``(n, n)`` ranks by given similarities (diffusion) instead of ``x @ x.T``.

    ``x`` ``(n, d)`` descriptors, ``labels`` ``(n,)`` class labels (any
    comparable values). Similarities are inner products, ranked best first with
    ties broken by index; computed for ``block_size`` queries at a time
    (default: about 4M similarities per block, so memory stays bounded).

    * AP of a query: the non-interpolated mean, over its positives (the other
      images of its class, R of them), of the precision at each positive's
      1-based rank ``r``: ``AP = (1/R) sum_positives hits(<= r) / r``.
    * recall@K: 1 if any of the top K shares the query's label, else 0.
    * MAP@R (Musgrave, Belongie & Lim, "A metric learning reality check", ECCV 2020):
      AP truncated at R, ``(1/R) sum_{r <= R, positive at r} hits(<= r) / r``; 1 only
      when the R positives are the top R.

    Queries whose class has no other image are left out of the means and
    listed in ``"left_out"``. Returns ``{"map", "map@r", "recall@k" {K: mean}, "ap",
    "ap@r" (per query, None where left out), "hits" (per query, the recall@K of each
    K, None where left out), "n_queries", "left_out"}``.
    """
    x = _descriptors("category_retrieval", "x", x)
    n = len(x)
    if queries is not None:
        queries = _descriptors("category_retrieval", "queries", queries, x.shape[1])
    if scores is not None and np.shape(scores) != (n, n):
        raise DataError(f"category_retrieval: scores should be ({n}, {n}), got "
                        f"{np.shape(scores)}")
    if queries is not None and len(queries) != n:
        raise DataError(f"category_retrieval: {len(queries)} queries for {n} images")
    if n < 2:
        raise DataError(f"category_retrieval: needs at least 2 images to query one another, "
                        f"got {n}")
    lab = np.asarray(labels)
    if lab.ndim != 1 or len(lab) != n:
        raise DataError(f"category_retrieval: labels should have shape ({n},), one per row of x, "
                        f"got {lab.shape}")
    if lab.dtype.kind == "f" and not np.isfinite(lab).all():
        raise DataError("category_retrieval: labels hold NaN or infinite values")
    ks = list(ks)
    if not ks:
        raise ConfigError("ks should list at least one K for recall@K")
    for kk in ks:
        if isinstance(kk, bool) or not isinstance(kk, (int, np.integer)) or not 1 <= kk <= n - 1:
            raise ConfigError(f"recall@K: K={kk!r} should be an integer between 1 and n - 1 = "
                              f"{n - 1}, the number of images each query ranks")
    ks = [int(kk) for kk in ks]
    block = (max(1, _BLOCK_ELEMENTS // n) if block_size is None
             else _positive_int("block_size", block_size, 1))
    _, lab = np.unique(lab, return_inverse=True)
    lab = lab.ravel()
    n_pos = np.bincount(lab)[lab] - 1  # other images of each query's class
    ap = np.zeros(n)
    ap_r = np.zeros(n)
    hits = np.zeros((n, len(ks)), bool)
    for start in range(0, n, block):
        stop = min(n, start + block)
        b = stop - start
        if scores is not None:
            neg = -np.asarray(scores[start:stop], np.float64)
        else:
            neg = (x[start:stop] if queries is None else queries[start:stop]) @ x.T  # (b, n)
            np.negative(neg, out=neg)
        neg[np.arange(b), np.arange(start, stop)] = np.inf  # the query itself ranks last
        order = np.argsort(neg, axis=1, kind="stable")[:, :-1]  # (b, n - 1), self dropped
        del neg
        rel = lab[order] == lab[start:stop, None]
        del order
        for j, kk in enumerate(ks):
            hits[start:stop, j] = rel[:, :kk].any(axis=1)
        cum = np.cumsum(rel, axis=1, dtype=np.int32)
        flat = np.flatnonzero(rel)
        rank1 = flat % (n - 1) + 1
        prec = cum.ravel()[flat] / rank1
        ap[start:stop] = np.bincount(flat // (n - 1), weights=prec, minlength=b)
        within = rank1 <= n_pos[start + flat // (n - 1)]  # among the first R
        ap_r[start:stop] = np.bincount(flat[within] // (n - 1), weights=prec[within],
                                       minlength=b)
        del rel, cum
    valid = n_pos > 0
    if not valid.any():
        raise DataError("category_retrieval: every label occurs once, so no query has a "
                        "positive; expected classes with at least 2 images")
    ap[valid] /= n_pos[valid]
    ap_r[valid] /= n_pos[valid]
    left_out = np.flatnonzero(~valid).tolist()
    if left_out:
        logger.info("category_retrieval: %d of %d queries are alone in their class and left out",
                    len(left_out), n)
    return {"map": float(ap[valid].mean()), "map@r": float(ap_r[valid].mean()),
            "recall@k": {kk: float(hits[valid, j].mean()) for j, kk in enumerate(ks)},
            "ap": [float(a) if v else None for a, v in zip(ap, valid)],
            "ap@r": [float(a) if v else None for a, v in zip(ap_r, valid)],
            "hits": [h.tolist() if v else None for h, v in zip(hits, valid)],
            "n_queries": int(valid.sum()), "left_out": left_out}


# --------------------------------------------------------------------------- re-ranking
