"""Discriminative parts per class: graduated assignment with part constraints.

Sicre & Jurie (CVIU 2015): for every class, a small vocabulary of parts
(linear models on region features) that are generative (found in most images
of the class) and distinctive (rarely fire on other classes).

1. ``fit_background``: an LDA background model of region features, mean μ0 and
   shrunk covariance Σλ; the whitened space is ``z = (x - μ0) @ W`` with
   ``W = Σλ^(-1/2)``. A unit direction ŵ there scores a region ``s = z·ŵ``, a
   z-score under the background model, so ``slack`` and ``1/beta`` are in
   background standard deviations.
2. ``learn_class_parts``: k-means (faiss) on the class's whitened regions gives
   the initial parts; then, for ``beta`` on a geometric schedule, a soft
   matching between each positive image's regions and the parts, with a slack
   row and column (Sinkhorn in the log domain, all images at once in one padded
   tensor), re-estimates every part as the matched mean of its regions minus
   ``negative_weight`` times the mean of its hard negatives (its top-scoring
   regions of other-class images, ``_faiss.topk_inner``, mined once per
   ``beta`` level: over all negatives at the first level, which keeps each
   part's top ``hard_negatives * negative_cache`` as the pool of the later
   levels, so all negatives are read twice, there and for the final
   responses; negatives are never whitened: they score as ``x @ w + b``).
   Constraints: ``orthogonality`` between the parts of a class, spatial
   competition (``nms_iou``, needs the region boxes) and ``sparsity`` (a
   region serves at most one part). At the end each part's best region per
   positive image is chosen greedily (``matches``) and each part gets the
   average precision of its max response, positives against negatives.
3. ``PartLearner``: the scikit-learn transformer over all classes, in parallel:
   the background from ``_arrays.sample_regions``, one ``negative_pool``, then
   ``learn_class_parts`` per class (``learn_classes``), the procedure the
   pipeline's parts stage runs (it calls ``fit`` with its cache's hooks and
   rebuilds a cached learner with ``PartLearner.from_results``).

Functions take and return arrays; caching is the caller's business. This
module does not import torch.
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
import time

import numpy as np
from joblib import Parallel, cpu_count, delayed, effective_n_jobs
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.metrics import average_precision_score
from sklearn.utils import get_tags
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data
from threadpoolctl import threadpool_limits

from . import _faiss
from ._arrays import RegionStack, sample_regions, stack_regions  # noqa: F401  (this module's API)
from ._validation import ConfigError, DataError
from .config import Config, PartsConfig

logger = logging.getLogger(__name__)

_P = PartsConfig  # defaults live there, once

#: ``PartsConfig`` fields that ``learn_class_parts`` takes as keyword arguments.
#: The others belong to its caller: ``shrinkage`` (``fit_background``),
#: ``background_regions``, ``n_negative_images`` and ``min_images``.
CLASS_PARAMS = ("n_parts", "n_init", "kmeans_iter", "beta_start", "beta_growth", "beta_end",
                "updates_per_beta", "sinkhorn_iter", "slack", "hard_negatives", "negative_cache",
                "negative_weight", "orthogonality", "nms_iou", "sparsity", "tol", "keep")

_BLOCK_ROWS = 16384  # rows per block when reducing large region arrays


# ------------------------------------------------------------------ the inputs


def _check_params(**params) -> None:
    """The ``PartsConfig`` checks (``ConfigError`` naming ``parts.<field>``)."""
    Config(parts=PartsConfig(**params))


def _check_boxes(boxes, counts: np.ndarray, who: str) -> list[np.ndarray]:
    if len(boxes) != len(counts):
        raise DataError(f"{who}: {len(boxes)} box arrays for {len(counts)} images")
    out = []
    for i, (b, r) in enumerate(zip(boxes, counts)):
        b = np.asarray(b, dtype=np.float32)
        if b.shape != (r, 4):
            raise DataError(f"{who} image {i}: boxes should be ({r}, 4) like its regions, "
                            f"got {b.shape}")
        out.append(b)
    return out


# ------------------------------------------------------------------ background


def fit_background(x, shrinkage: float = _P.shrinkage) -> dict:
    """The LDA background of region features ``x`` ``(N, D)`` (float16 memmaps welcome).

    Returns ``{"mean": μ0 (D,), "whitener": W (D, D)}`` float32, with
    ``W = Σλ^(-1/2)``, ``Σλ = (1 - λ) Σ + λ (tr Σ / D) I``, ``λ = shrinkage``.
    """
    if not 0 <= shrinkage <= 1:
        raise ConfigError(f"shrinkage={shrinkage} must be in [0, 1]")
    shape = np.shape(x)
    if len(shape) != 2 or shape[0] < 2 or shape[1] < 1:
        raise DataError(f"fit_background needs (N, D) regions with N >= 2, got shape {shape}")
    n, d = shape
    blocks = range(0, n, _BLOCK_ROWS)
    total = np.zeros(d, np.float64)
    for s in blocks:
        total += np.asarray(x[s:s + _BLOCK_ROWS], np.float32).sum(axis=0, dtype=np.float64)
    mean = total / n
    if not np.isfinite(mean).all():
        raise DataError(f"fit_background: the {n} regions hold NaN or inf")
    mean32 = mean.astype(np.float32)
    cov = np.zeros((d, d), np.float64)
    for s in blocks:
        c = np.asarray(x[s:s + _BLOCK_ROWS], np.float32) - mean32
        cov += c.T @ c
    cov /= n - 1
    avg = np.trace(cov) / d
    if not avg > 0:
        raise DataError(f"fit_background: the {n} regions do not vary (zero covariance)")
    cov *= 1.0 - shrinkage
    cov[np.diag_indices(d)] += shrinkage * avg
    evals, evecs = np.linalg.eigh(cov)
    if evals[0] <= 1e-10 * evals[-1]:
        raise DataError(
            f"fit_background: the covariance of {n} regions in {d} dimensions is singular "
            f"(smallest eigenvalue {evals[0]:.3g}); use shrinkage > 0 (got {shrinkage})")
    whitener = (evecs / np.sqrt(evals)) @ evecs.T
    return {"mean": mean32, "whitener": whitener.astype(np.float32)}


# ------------------------------------------------------------------ assignment


def _log_normalise(a: np.ndarray, axis: int) -> None:
    """``a -= logsumexp(a, axis)`` in place (every slice holds a finite entry)."""
    m = a.max(axis=axis, keepdims=True)
    t = np.subtract(a, m)
    np.exp(t, out=t)
    s = t.sum(axis=axis, keepdims=True)
    np.log(s, out=s)
    s += m
    a -= s


def _softassign(spad: np.ndarray, beta: float, slack: float, n_iter: int,
                sparsity: bool) -> np.ndarray:
    """Soft matching of every image's regions to the parts, all images at once.

    ``spad`` ``(n, P, R)``: scores, ``-inf`` for padding and suppressed pairs.
    The log matching matrix ``(n, P + 1, R + 1)`` gets a slack region (the part
    matches nothing) and a slack part (the region stays unassigned), both
    scoring ``slack``, so ``log M = beta * (s - slack)`` and 0 on the slacks.
    Each part's row (its regions and its slack: one region or none) and, with
    ``sparsity``, each region's column (its parts and its slack: at most one
    part) are normalised alternately, parts last. Returns the region-part
    weights ``(n, P, R)``. (Parts along the middle axis: both reductions run
    on long or contiguous axes.)
    """
    n, p, r = spad.shape
    log_m = np.zeros((n, p + 1, r + 1), np.float32)
    np.multiply(spad - np.float32(slack), np.float32(beta), out=log_m[:, :p, :r])
    parts = log_m[:, :p, :]
    if not sparsity:  # no region constraint: one pass over the parts is exact
        _log_normalise(parts, axis=2)
    else:
        regions = log_m[:, :, :r]  # a padded region holds only its slack entry: it stays put
        for _ in range(n_iter):
            _log_normalise(regions, axis=1)
            _log_normalise(parts, axis=2)
    weights = log_m[:, :p, :r]
    np.exp(weights, out=weights)
    return weights


def _harden(spad: np.ndarray, slack: float, sparsity: bool,
            overlap: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Each part's region in each image, greedily by score over all images at once.

    ``spad`` ``(n, P, R)``. The best remaining (part, region) pair of every
    image is taken while it scores above ``slack``; the part is then done in
    that image, and its region is removed for the other parts (``sparsity``),
    as are the regions that ``overlap`` it (NMS). Returns ``(match (n, P)
    int64, -1 for the slack; score (n, P) float32, NaN for the slack)``.
    """
    n, p, r = spad.shape
    avail = spad.copy()
    match = np.full((n, p), -1, np.int64)
    score = np.full((n, p), np.nan, np.float32)
    images = np.arange(n)
    for _ in range(p):
        flat = avail.reshape(n, p * r)
        best = flat.argmax(axis=1)
        value = flat[images, best]
        ok = value > slack
        if not ok.any():
            break
        i = images[ok]
        part, reg = np.divmod(best[ok], r)
        match[i, part] = reg
        score[i, part] = value[ok]
        avail[i, part, :] = -np.inf
        if sparsity:
            avail[i, :, reg] = -np.inf
        if overlap is not None:
            avail[i] = np.where(overlap[i, reg][:, None, :], -np.inf, avail[i])
    return match, score


def _suppression(match: np.ndarray, overlap: np.ndarray) -> np.ndarray:
    """``(n, P, R)``: region ``r`` overlaps the region chosen by another part than ``p``."""
    n = len(match)
    chosen = overlap[np.arange(n)[:, None], np.maximum(match, 0)]  # (n, P, R)
    chosen &= (match >= 0)[:, :, None]
    count = chosen.sum(axis=1, dtype=np.int32)  # (n, R)
    return (count[:, None, :] - chosen) > 0


def _iou_overlap(boxes: list[np.ndarray], r_max: int, threshold: float) -> np.ndarray:
    """``(n, R, R)`` bool: IoU above ``threshold`` within each image (padding: never)."""
    n = len(boxes)
    pad = np.zeros((n, r_max, 4), np.float32)
    for i, b in enumerate(boxes):
        pad[i, :len(b)] = b
    x0, y0, x1, y1 = (pad[..., k] for k in range(4))
    area = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    iw = np.clip(np.minimum(x1[:, :, None], x1[:, None, :])
                 - np.maximum(x0[:, :, None], x0[:, None, :]), 0, None)
    ih = np.clip(np.minimum(y1[:, :, None], y1[:, None, :])
                 - np.maximum(y0[:, :, None], y0[:, None, :]), 0, None)
    inter = iw * ih
    union = area[:, :, None] + area[:, None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter > threshold * union * (union > 0)  # > 0 of the IoU when union is 0


def _normalise_rows(u: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(u, axis=1, keepdims=True)
    return u / np.maximum(norm, np.finfo(np.float32).tiny)


def _mean_abs_cos(u: np.ndarray) -> float:
    p = len(u)
    if p < 2:
        return 0.0
    g = np.abs(_normalise_rows(u) @ _normalise_rows(u).T)
    return float((g.sum() - np.trace(g)) / (p * (p - 1)))


# ------------------------------------------------------------------ one class


def learn_class_parts(positives, negatives, background: dict, *, boxes=None,
                      negative_images=None, n_parts: int = _P.n_parts, n_init: int = _P.n_init,
                      kmeans_iter: int = _P.kmeans_iter, beta_start: float = _P.beta_start,
                      beta_growth: float = _P.beta_growth, beta_end: float = _P.beta_end,
                      updates_per_beta: int = _P.updates_per_beta,
                      sinkhorn_iter: int = _P.sinkhorn_iter, slack: float = _P.slack,
                      hard_negatives: int = _P.hard_negatives,
                      negative_cache: int = _P.negative_cache,
                      negative_weight: float = _P.negative_weight,
                      orthogonality: float = _P.orthogonality, nms_iou: float = _P.nms_iou,
                      sparsity: bool = _P.sparsity, tol: float = _P.tol, keep: int = _P.keep,
                      random_state=0, name: str = "") -> dict:
    """Learn the parts of one class.

    ``positives``: the class's images, a list of ``(R_i, D)`` region arrays
    (float16 memmaps are read one image at a time); ``negatives``: other-class
    images, likewise, or a ``RegionStack`` shared by several classes (no
    conversion per class) of which ``negative_images`` (indices) are this
    class's negatives (default: all); ``background``: from ``fit_background``; ``boxes``: the
    positives' region boxes ``(R_i, 4)`` (x0, y0, x1, y1), needed by NMS
    (without them NMS is off). ``name`` (the class) is used in messages.

    Returns a dict of arrays (P = ``keep`` or ``n_parts``; ``n_pos`` positives):
    ``weights`` (P, D) and ``bias`` (P,): a region ``x`` scores
    ``x @ weights.T + bias`` (background z-score); ``directions`` (P, D): unit
    parts in the whitened space; ``loo_directions`` (n_pos, P, D) float16:
    the directions without each positive image (see ``_leave_one_out``), to
    score that image as if it were unseen (weights ``d @ W``, bias
    ``-(d @ W) @ μ0`` with the background's whitener and mean);
    ``discriminativeness`` (P,): average precision of the part's max response
    per image, positives (scored by their leave-one-out parts) against
    negatives; ``matches`` (P, n_pos): each part's region in each positive
    image, -1 where the slack won; ``match_scores`` (P, n_pos), NaN there;
    ``kept`` (P,): indices among the ``n_parts`` learned; ``objective``
    (updates,): mean expected matched score; 0-d: ``n_updates``,
    ``beta_final``, ``mean_abs_cos`` (between the kept parts),
    ``kmeans_objective``, ``n_positives``, ``n_negatives``.
    """
    _check_params(n_parts=n_parts, n_init=n_init, kmeans_iter=kmeans_iter,
                  beta_start=beta_start, beta_growth=beta_growth, beta_end=beta_end,
                  updates_per_beta=updates_per_beta, sinkhorn_iter=sinkhorn_iter, slack=slack,
                  hard_negatives=hard_negatives, negative_cache=negative_cache,
                  negative_weight=negative_weight,
                  orthogonality=orthogonality, nms_iou=nms_iou, sparsity=sparsity, tol=tol,
                  keep=keep)
    who = f"class {name!r}" if name else "positives"
    mean = np.asarray(background["mean"], np.float32)
    whitener = np.asarray(background["whitener"], np.float32)
    dim = len(mean)
    xn, offn, neg_images = _negatives(negatives, negative_images, dim, who)
    if len(positives) < 1 or len(neg_images) < 1:
        raise DataError(f"{who}: part learning needs positive and negative images, got "
                        f"{len(positives)} positive and {len(neg_images)} negative")
    xp, offp = stack_regions(positives, dim, f"{who}: positive")
    n_stacked = len(offn) - 1
    neg_rows = None  # rows of xn that are this class's negatives: all
    if len(neg_images) < n_stacked:
        neg_rows = np.repeat(np.isin(np.arange(n_stacked), neg_images), np.diff(offn))
    counts = np.diff(offp)
    n_pos, n_regions = len(counts), len(xp)
    if n_regions < n_parts:
        raise DataError(f"{who}: n_parts={n_parts} is more than the {n_regions} regions "
                        f"of its {n_pos} images")
    nms = boxes is not None and 0 < nms_iou < 1
    if boxes is not None:
        boxes = _check_boxes(boxes, counts, who)
    seed = int(check_random_state(random_state).randint(2**31 - 1))

    # whitened positives; negatives stay in x-space (scored as x @ w + b)
    xp -= mean
    z = xp @ whitener
    del xp
    r_max = int(counts.max())
    valid = np.arange(r_max)[None, :] < counts[:, None]  # (n_pos, r_max), row-major = z's rows
    overlap = _iou_overlap(boxes, r_max, nms_iou) if nms else None

    centroids, km_objective = _faiss.kmeans(z, n_parts, kmeans_iter, n_init, seed)
    u = _normalise_rows(centroids)
    betas = [beta_start]
    while betas[-1] * beta_growth <= beta_end * (1 + 1e-9):
        betas.append(betas[-1] * beta_growth)

    spad = np.full((n_pos, n_parts, r_max), -np.inf, np.float32)
    spad_rows = spad.transpose(0, 2, 1)  # (n_pos, r_max, P): z's rows under ``valid``
    objective = []
    beta = beta_start
    mine = bool(negative_weight and hard_negatives)
    pool, pool_rows = xn, neg_rows  # where hard negatives are mined
    for level, beta in enumerate(betas):
        if mine:  # once per level, with the parts of that moment
            if level == 0 and negative_cache:  # the only pass over all negatives until the end
                _, idx = _faiss.topk_inner(u @ whitener, xn, hard_negatives * negative_cache,
                                           valid=neg_rows)
                pool, pool_rows = xn[np.unique(idx)], None
            hard = np.float32(negative_weight) * _hard_negative_mean(
                u, pool, mean, whitener, hard_negatives, pool_rows)
        for _ in range(updates_per_beta):
            spad_rows[valid] = z @ u.T
            if nms:
                match, _ = _harden(spad, slack, sparsity, overlap)
                spad[_suppression(match, overlap)] = -np.inf
            weights = _softassign(spad, beta, slack, sinkhorn_iter, sparsity)
            objective.append(_expected_score(weights, spad, slack))
            a = weights.transpose(0, 2, 1)[valid]  # (n_regions, P)
            mass = a.sum(axis=0)
            total = a.T @ z
            new = _part_update(total, mass, hard if mine else None, u)
            correction = None
            if orthogonality and n_parts > 1:
                gram = new @ new.T
                np.fill_diagonal(gram, 0.0)
                correction = np.float32(orthogonality) * (gram @ new)
                new = _normalise_rows(new - correction)
            last = (a, total, mass, hard if mine else None, u, correction)
            move = float(np.linalg.norm(new - u, axis=1).max())
            u = new.astype(np.float32, copy=False)
            if move < tol:
                break

    # harden, then measure
    s = z @ u.T
    spad_rows[valid] = s
    match, match_score = _harden(spad, slack, sparsity, overlap)
    w = u @ whitener  # W is symmetric: (W û)ᵀ
    b = -(w @ mean)
    loo = _leave_one_out(z, offp, *last)  # (n_pos, P, D)
    pos_max = np.stack([(z[offp[i]:offp[i + 1]] @ loo[i].T).max(axis=0) for i in range(n_pos)])
    neg_max = _max_per_image(xn, offn, w, b)[neg_images]
    labels = np.r_[np.ones(n_pos), np.zeros(len(neg_images))]
    ap = np.array([average_precision_score(labels, np.r_[pos_max[:, k], neg_max[:, k]])
                   for k in range(n_parts)], np.float32)
    kept = np.arange(n_parts)
    if keep:
        kept = np.sort(np.argsort(-ap, kind="stable")[:keep])
    logger.debug("%s: %d updates, final beta %.3g, AP %s", who, len(objective), beta,
                 np.round(ap[kept], 3))
    return {
        "weights": np.ascontiguousarray(w[kept], np.float32),
        "bias": b[kept].astype(np.float32),
        "directions": np.ascontiguousarray(u[kept], np.float32),
        "loo_directions": loo[:, kept].astype(np.float16),
        "discriminativeness": ap[kept],
        "matches": np.ascontiguousarray(match.T[kept], np.int64),
        "match_scores": np.ascontiguousarray(match_score.T[kept], np.float32),
        "kept": kept.astype(np.int64),
        "objective": np.asarray(objective, np.float64),
        "n_updates": np.asarray(len(objective)),
        "beta_final": np.asarray(beta, np.float64),
        "mean_abs_cos": np.asarray(_mean_abs_cos(u[kept]), np.float64),
        "kmeans_objective": np.asarray(km_objective, np.float64),
        "n_positives": np.asarray(n_pos),
        "n_negatives": np.asarray(len(neg_images)),
    }


def _part_update(total, mass, hard, u) -> np.ndarray:
    """Unit parts from the weighted sums ``total`` (P, D) of their regions and their
    ``mass`` (P,), minus ``hard`` (the scaled hard-negative means) when given; a
    part that matched (next to) nothing anywhere keeps its direction ``u``."""
    new = u.copy()
    active = mass >= 1e-6
    new[active] = total[active] / mass[active, None]
    if hard is not None:
        new[active] -= hard[active]
    new[active] = _normalise_rows(new[active])
    return new


def _leave_one_out(z, offsets, a, total, mass, hard, u, correction) -> np.ndarray:
    """``(n_pos, P, D)``: the parts of the last update without each positive image.

    Image ``i``'s regions leave the weighted sums and masses of every part (the
    hard negatives and the orthogonality correction stay as they were), so
    ``z_i`` scored by part ``i`` of this array is what an image the parts never
    saw would get: the training images' encoding is not inflated by their own
    contribution to the parts.
    """
    out = np.empty((len(offsets) - 1,) + total.shape, np.float32)
    for i in range(len(out)):
        rows = slice(offsets[i], offsets[i + 1])
        own = a[rows]
        v = _part_update(total - own.T @ z[rows], mass - own.sum(axis=0), hard, u)
        out[i] = v if correction is None else _normalise_rows(v - correction)
    return out


def _negatives(negatives, negative_images, dim: int, who: str):
    """``(x, offsets, images)``: the stacked negatives and the indices of the images to use."""
    if isinstance(negatives, RegionStack):
        x, offsets = negatives
        if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != dim:
            raise DataError(f"{who}: negatives should be a float32 (N, {dim}) RegionStack, "
                            f"got {x.dtype} {x.shape}")
    else:
        x, offsets = stack_regions(negatives, dim, f"{who}: negative")
    n = len(offsets) - 1
    if negative_images is None:
        return x, offsets, np.arange(n)
    images = np.unique(np.asarray(negative_images, np.int64))
    if len(images) and (images[0] < 0 or images[-1] >= n):
        raise DataError(f"{who}: negative_images should index the {n} negative images, "
                        f"got values from {images[0]} to {images[-1]}")
    return x, offsets, images


def _max_per_image(x, offsets, w, b) -> np.ndarray:
    """``(n_images, P)``: each part's max response ``x @ w.T + b`` over every image's rows."""
    out = np.empty((len(offsets) - 1, len(w)), np.float32)
    for start in range(0, len(out), 256):  # blocks of images bound the score array
        stop = min(start + 256, len(out))
        s = x[offsets[start]:offsets[stop]] @ w.T
        out[start:stop] = np.maximum.reduceat(s, offsets[start:stop] - offsets[start], axis=0)
    return out + b


def _hard_negative_mean(u, xn, mean, whitener, k, valid=None) -> np.ndarray:
    """``(P, D)``: each part's mean whitened negative among its ``k`` top-scoring rows
    of ``xn`` (those where ``valid``, when given)."""
    w = u @ whitener  # scores in x-space: x @ w.T - mean @ w.T; the shift changes no order
    _, idx = _faiss.topk_inner(w, xn, k, valid=valid)
    hard = xn[idx].mean(axis=1) - mean  # (P, D)
    return hard @ whitener


def _expected_score(weights, spad, slack) -> float:
    """Mean over images and parts of a part's expected matched score (slack: ``slack``)."""
    region = np.where(weights > 0, weights * np.where(np.isfinite(spad), spad, 0.0), 0.0)
    unmatched = np.clip(1.0 - weights.sum(axis=2), 0.0, None)  # the slack region's share
    n, p, _ = spad.shape
    return float((region.sum() + slack * unmatched.sum()) / (n * p))


# ------------------------------------------------------------------ estimator

_DTYPES = (np.float32, np.float64, np.float16)  # array forms keep these; others become float32


def _is_region_list(X) -> bool:
    """``X`` is a sequence of per-image ``(R_i, D)`` region arrays (the main input form)."""
    if isinstance(X, np.ndarray):
        if X.dtype != object or X.ndim != 1:
            return False
    elif not isinstance(X, (list, tuple)):
        return False
    return len(X) == 0 or np.ndim(X[0]) == 2


def _shape(X) -> tuple:
    shape = getattr(X, "shape", None)
    if shape is not None:
        return tuple(shape)
    try:
        return np.asarray(X).shape
    except (ValueError, TypeError):  # e.g. a ragged nested sequence: validate_data says
        return ()


def _unpack(out, y):
    no_y = y is None or (isinstance(y, str) and y == "no_validation")
    return (out, y) if no_y else out


def _validate_regions(est, X, y="no_validation", *, boxes=None, reset: bool,
                      min_samples: int = 1):
    """``(X, y, form)``: the images of ``X`` as a sequence of ``(R_i, D)`` arrays.

    ``form`` "list": ``X`` a list of ``(R_i, D)`` region arrays, one per image,
    returned as it is (memmaps unread; the caller checks the images, with
    messages naming them); "3d": an ``(N, R, D)`` array; "2d": an ``(N, D)``
    array, one region per image, returned as an ``(N, 1, D)`` view. The array
    forms go through scikit-learn's ``validate_data`` (its messages: NaN/inf,
    complex, empty, too few samples, n_features; with ``reset`` it sets
    ``n_features_in_``, else checks it). ``y`` as ``validate_data`` takes it
    ("no_validation": not checked; None: an error when the estimator needs y).
    """
    name = type(est).__name__
    if _is_region_list(X):
        if y is None and get_tags(est).target_tags.required:
            raise ValueError(f"This {name} estimator requires y to be passed, but the "
                             "target y is None.")
        if reset and hasattr(est, "feature_names_in_"):
            del est.feature_names_in_
        return X, y, "list"
    if len(_shape(X)) == 3:
        out = validate_data(est, X, y, reset=reset, ensure_2d=False, allow_nd=True,
                            dtype=_DTYPES, ensure_min_samples=min_samples)
        X, y = _unpack(out, y)
        _, r, d = X.shape
        if r < 1 or d < 1:
            raise DataError(f"X: a 3-D X should be (n_images, n_regions, n_features) with "
                            f"n_regions >= 1 and n_features >= 1, got shape {X.shape}")
        if reset:
            est.n_features_in_ = d
        elif d != est.n_features_in_:  # validate_data's message (it checks 2-D X only)
            raise ValueError(f"X has {d} features, but {name} is expecting "
                             f"{est.n_features_in_} features as input.")
        return X, y, "3d"
    if boxes is not None:
        raise DataError("boxes go with X as a list of (R_i, D) region arrays or an (N, R, D) "
                        f"array; a 2-D X (N, D) is one region per image, got X of shape "
                        f"{_shape(X)} and boxes")
    out = validate_data(est, X, y, reset=reset, dtype=_DTYPES, ensure_min_samples=min_samples)
    X, y = _unpack(out, y)
    return X[:, None, :], y, "2d"


class PartLearner(TransformerMixin, BaseEstimator):
    """Parts for every class (``learn_class_parts``), classes in parallel.

    ``fit(X, y, boxes=None)``: ``X`` the images' regions, one of

    - a list of ``(R_i, D)`` region arrays, one per image (the main form;
      float16 memmaps are read one image at a time), ``boxes`` optional
      ``(R_i, 4)`` region boxes ``x0, y0, x1, y1`` (for NMS);
    - an ``(N, R, D)`` array (every image ``R`` regions), ``boxes`` likewise;
    - an ``(N, D)`` array: one region per image (no boxes).

    ``y`` ``(N,)`` class labels. Parameters are the ``PartsConfig`` fields
    (``from_config``), plus ``random_state`` and ``n_jobs`` (threads, over
    classes: see ``learn_classes``).

    Fitted: ``parts_`` (n_total, D) float32 weights and ``part_bias_`` (a
    region's response is ``x @ parts_.T + part_bias_``, a background z-score),
    ``part_class_`` (each part's class, an index into ``classes_``),
    ``discriminativeness_``, ``matches_`` (per class, (P_c, n_c) region
    indices into its images ``positive_images_``, indices into ``X``; -1:
    none), ``class_results_`` (per class, ``learn_class_parts``'s dict),
    ``background_`` (``fit_background``'s dict), ``classes_``,
    ``n_features_in_``. ``from_results`` rebuilds a fitted learner from those
    arrays. ``transform(X)``: each part's max response per image.
    """

    def __init__(self, n_parts=_P.n_parts, n_init=_P.n_init, kmeans_iter=_P.kmeans_iter,
                 beta_start=_P.beta_start, beta_growth=_P.beta_growth, beta_end=_P.beta_end,
                 updates_per_beta=_P.updates_per_beta, sinkhorn_iter=_P.sinkhorn_iter,
                 slack=_P.slack, hard_negatives=_P.hard_negatives,
                 negative_cache=_P.negative_cache, negative_weight=_P.negative_weight,
                 orthogonality=_P.orthogonality, nms_iou=_P.nms_iou, sparsity=_P.sparsity,
                 tol=_P.tol, keep=_P.keep, n_negative_images=_P.n_negative_images,
                 min_images=_P.min_images, background_regions=_P.background_regions,
                 shrinkage=_P.shrinkage, random_state=None, n_jobs=None):
        self.n_parts = n_parts
        self.n_init = n_init
        self.kmeans_iter = kmeans_iter
        self.beta_start = beta_start
        self.beta_growth = beta_growth
        self.beta_end = beta_end
        self.updates_per_beta = updates_per_beta
        self.sinkhorn_iter = sinkhorn_iter
        self.slack = slack
        self.hard_negatives = hard_negatives
        self.negative_cache = negative_cache
        self.negative_weight = negative_weight
        self.orthogonality = orthogonality
        self.nms_iou = nms_iou
        self.sparsity = sparsity
        self.tol = tol
        self.keep = keep
        self.n_negative_images = n_negative_images
        self.min_images = min_images
        self.background_regions = background_regions
        self.shrinkage = shrinkage
        self.random_state = random_state
        self.n_jobs = n_jobs

    @classmethod
    def from_config(cls, parts_cfg: PartsConfig, random_state=None, n_jobs=None) -> PartLearner:
        """An unfitted learner with the parameters of ``parts_cfg`` (a ``PartsConfig``)."""
        fields = {f.name: getattr(parts_cfg, f.name) for f in dataclasses.fields(PartsConfig)}
        return cls(**fields, random_state=random_state, n_jobs=n_jobs)

    @classmethod
    def from_results(cls, params: dict, classes, background: dict, class_results,
                     positive_images, n_features: int) -> PartLearner:
        """A fitted learner from stored arrays (no pickles), as ``fit`` would leave it.

        ``params``: constructor parameters (``get_params()``); ``classes``: the
        fitted ``classes_``; ``background``: ``{"mean", "whitener"}``;
        ``class_results``: per class, ``learn_class_parts``'s dict (at least
        ``weights``, ``bias``, ``discriminativeness``, ``matches``; the encoder's
        leave-one-out codes need ``loo_directions``); ``positive_images``: per
        class, the indices of its training images; ``n_features``: D.
        """
        classes, class_results = np.asarray(classes), list(class_results)
        if not len(classes) == len(class_results) == len(positive_images):
            raise DataError(f"from_results: {len(classes)} classes, {len(class_results)} class "
                            f"results and {len(positive_images)} positive image lists should "
                            "be as many")
        background = _check_background(background, n_features, "from_results")
        for k, r in enumerate(class_results):
            shape = np.shape(r["weights"])
            if len(shape) != 2 or shape[1] != n_features or np.shape(r["bias"]) != shape[:1]:
                raise DataError(f"from_results: class {k}: weights {shape} and bias "
                                f"{np.shape(r['bias'])} should be (P, {n_features}) and (P,)")
        return cls(**params)._set_fitted(classes, background, class_results, positive_images,
                                         n_features)

    def _config(self) -> PartsConfig:
        fields = dataclasses.fields(PartsConfig)
        cfg = PartsConfig(**{f.name: getattr(self, f.name) for f in fields})
        Config(parts=cfg)  # the config's checks
        return cfg

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True  # one region per image
        tags.input_tags.three_d_array = True  # (images, regions, features)
        tags.target_tags.required = True
        tags.transformer_tags.preserves_dtype = ["float32"]  # responses are float32
        return tags

    def fit(self, X, y, boxes=None, *, class_names=None, background=None, class_results=None,
            on_background=None, on_class=None):
        """Learn every class's parts. Returns ``self``.

        The procedure of the pipeline's parts stage: with ``seed`` the
        ``random_state`` (an int, or one drawn from it), the background model
        (``fit_background``, ``shrinkage``) of ``sample_regions(X,
        background_regions, default_rng(seed))``; one negative pool for every
        class (``negative_pool``, its own ``default_rng(seed)``, so it does not
        depend on whether the background was fitted); then class ``k`` of
        ``classes_`` by ``learn_class_parts`` (its images and their boxes
        against its ``n_negative_images`` images of the pool, ``random_state=
        seed + k``), classes on ``n_jobs`` threads (``learn_classes``).

        Keyword-only, for a caller that caches and resumes (the pipeline):

        - ``class_names``: the names of ``classes_``, for messages and the
          ``name`` given to ``learn_class_parts`` (default ``str(c)``);
        - ``background``: a ``{"mean", "whitener"}`` dict used instead of
          fitting one (a resumed run; everything else is drawn as without it);
        - ``class_results``: ``{k: dict}``, ``learn_class_parts``'s results of
          classes already learnt (``k`` indexes ``classes_``), not learnt again;
        - ``on_background(background)``: called once the background is fitted
          (not when it was given);
        - ``on_class(k, result, seconds)``: called as each class is learnt, in
          the order they finish.
        """
        cfg = self._config()
        X, y, form = _validate_regions(self, X, y, boxes=boxes, reset=True, min_samples=2)
        X, codes, classes, names, dim = _check_fit_inputs(X, y, boxes, cfg, class_names,
                                                          finite_checked=form != "list")
        rs = self.random_state
        seed = (int(rs) if isinstance(rs, numbers.Integral)
                else int(check_random_state(rs).randint(2**31 - 1)))
        if background is None:
            sample = sample_regions(X, cfg.background_regions, np.random.default_rng(seed))
            background = fit_background(sample, cfg.shrinkage)
            logger.info("parts: background model from %d training regions", len(sample))
            del sample
            if on_background is not None:
                on_background(background)
        else:
            background = _check_background(background, dim, "fit: background")
        results = dict(class_results or {})
        if not set(results) <= set(range(len(classes))):
            raise DataError(f"fit: class_results should be keyed by class index 0..."
                            f"{len(classes) - 1}, got keys {sorted(results)}")
        positives = [np.flatnonzero(codes == k) for k in range(len(classes))]
        todo = [k for k in range(len(classes)) if k not in results]
        if len(todo) < len(classes):
            logger.debug("parts: %d of %d classes already learnt", len(classes) - len(todo),
                         len(classes))
        # one negative pool for every class (read and converted once), drawn whatever
        # is left to learn, so a resumed run draws the same
        pool, negatives = negative_pool(codes, cfg.n_negative_images,
                                        np.random.default_rng(seed))
        if todo:
            stack = stack_regions([X[i] for i in pool], dim, "negative pool")
            params = {f: getattr(cfg, f) for f in CLASS_PARAMS}
            calls = [(([X[i] for i in positives[k]], stack, background),
                      dict(boxes=None if boxes is None else [boxes[i] for i in positives[k]],
                           negative_images=negatives[k], random_state=seed + k, name=names[k],
                           **params))
                     for k in todo]
            for j, result, seconds in learn_classes(calls, self.n_jobs):
                k = todo[j]
                results[k] = result
                logger.debug("parts: %s: %d parts, mean AP %.3f, mean |cos| %.3f, %d updates, "
                             "%.1f s", names[k], len(result["weights"]),
                             result["discriminativeness"].mean(),
                             float(result["mean_abs_cos"]), int(result["n_updates"]), seconds)
                if on_class is not None:
                    on_class(k, result, seconds)
        return self._set_fitted(classes, background, [results[k] for k in range(len(classes))],
                                positives, dim)

    def _set_fitted(self, classes, background, class_results, positive_images, n_features):
        """The fitted attributes, from the per-class results (``fit``, ``from_results``)."""
        self.classes_ = np.asarray(classes)
        self.n_features_in_ = int(n_features)
        self.background_ = background
        self.class_results_ = list(class_results)
        self.positive_images_ = [np.asarray(p, np.int64) for p in positive_images]
        results = self.class_results_
        self.parts_ = np.concatenate([np.asarray(r["weights"], np.float32) for r in results])
        self.part_bias_ = np.concatenate([np.asarray(r["bias"], np.float32) for r in results])
        self.part_class_ = np.concatenate([np.full(len(r["bias"]), k, np.int64)
                                           for k, r in enumerate(results)])
        self.discriminativeness_ = np.concatenate([np.asarray(r["discriminativeness"])
                                                   for r in results])
        self.matches_ = [np.asarray(r["matches"]) for r in results]
        return self

    def transform(self, X) -> np.ndarray:
        """``(n_images, n_parts_total)`` float32: each part's max response over an
        image's regions (``X`` in any of ``fit``'s forms)."""
        check_is_fitted(self, "parts_")
        X, _, _ = _validate_regions(self, X, reset=False)
        out = np.empty((len(X), len(self.parts_)), np.float32)
        start = 0
        while start < len(X):  # blocks of images, so large sets need little memory
            stop, rows = start, 0
            while stop < len(X) and (rows < _BLOCK_ROWS or stop == start):
                rows += len(X[stop])
                stop += 1
            x, off = stack_regions(X[start:stop], self.n_features_in_, "transform: X")
            scores = x @ self.parts_.T + self.part_bias_
            out[start:stop] = np.maximum.reduceat(scores, off[:-1], axis=0)
            start = stop
        return out


def _check_background(background, dim: int, who: str) -> dict:
    try:
        mean = np.asarray(background["mean"], np.float32)
        whitener = np.asarray(background["whitener"], np.float32)
    except (KeyError, TypeError, IndexError):
        raise DataError(f"{who}: a background should be a dict with 'mean' and 'whitener' "
                        f"arrays (fit_background's), got {type(background).__name__}") from None
    if mean.shape != (dim,) or whitener.shape != (dim, dim):
        raise DataError(f"{who}: mean {mean.shape} and whitener {whitener.shape} should be "
                        f"({dim},) and ({dim}, {dim}) for regions of dimension {dim}")
    return {"mean": mean, "whitener": whitener}


def _check_fit_inputs(X, y, boxes, cfg: PartsConfig, class_names=None, finite_checked=False):
    """``(X, codes, classes, names, dim)``: ``codes`` the index of each image's class
    in ``classes`` (``np.unique(y)``), ``names`` the classes' names."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(X):
        raise DataError(f"X and y should have one entry per image: got {len(X)} images in X "
                        f"and y of shape {y.shape}")
    check_classification_targets(y)
    if boxes is not None and len(boxes) != len(X):
        raise DataError(f"boxes should have one entry per image: got {len(boxes)} for "
                        f"{len(X)} images")
    classes, codes, per_class = np.unique(y, return_inverse=True, return_counts=True)
    if len(classes) < 2:
        n = len(classes)
        raise DataError(f"part learning needs images of at least 2 classes (negatives are "
                        f"other classes' images), got {n} {'class' if n == 1 else 'classes'}: "
                        f"{classes.tolist()}")
    if class_names is None:
        names = [str(c) for c in classes]
    else:
        names = [str(c) for c in class_names]
        if len(names) != len(classes):
            raise DataError(f"class_names should name the {len(classes)} classes of y, got "
                            f"{len(names)} names")
    dim = None
    counts = np.zeros(len(X), np.int64)
    for i, x in enumerate(X):
        shape = np.shape(x)
        who = f"class {names[codes[i]]!r}, image {i} of X"
        if len(shape) != 2 or shape[0] < 1 or (dim is not None and shape[1] != dim):
            want = f"(R, {dim})" if dim is not None else "(R, D)"
            raise DataError(f"{who}: regions should be a {want} array with R >= 1, got shape "
                            f"{shape}")
        dim = shape[1]
        counts[i] = shape[0]
        if boxes is not None and np.shape(boxes[i]) != (shape[0], 4):
            raise DataError(f"{who}: boxes should be ({shape[0]}, 4) like its regions, got "
                            f"{np.shape(boxes[i])}")
        if not finite_checked:
            finite = np.isfinite(np.asarray(x))
            if not finite.all():
                bad = int((~finite.all(axis=1)).sum())
                raise DataError(f"{who}: {bad} of its {shape[0]} regions hold NaN or inf")
    regions = np.bincount(codes, weights=counts, minlength=len(classes)).astype(np.int64)
    for name, n, r in zip(names, per_class, regions):
        if n < cfg.min_images:
            raise DataError(f"class {name!r} has {n} training images; part learning needs at "
                            f"least parts.min_images={cfg.min_images}")
        if r < cfg.n_parts:
            raise DataError(f"class {name!r}: n_parts={cfg.n_parts} is more than the {r} "
                            f"regions of its {n} images")
    return X, codes, classes, names, dim


def negative_pool(y, n_negative_images: int, rng) -> tuple[np.ndarray, list[np.ndarray]]:
    """One pool of images whose regions serve as every class's negatives (stacked
    once, see ``RegionStack``), and each class's share of it.

    Returns ``(pool, per_class)``: ``pool`` the sorted indices into ``y`` of the
    pooled images, the shortest prefix of a random permutation that holds
    ``n_negative_images`` images of other classes for every class (or all
    there are); ``per_class[k]`` (classes in ``np.unique(y)`` order) the sorted
    positions in ``pool`` of class k's negatives: ``n_negative_images`` of them
    sampled, or all when fewer. ``rng``: a numpy ``Generator`` or ``RandomState``.
    """
    y = np.asarray(y)
    classes = np.unique(y)
    perm = rng.permutation(len(y))
    size = 0
    for c in classes:
        others = np.cumsum(y[perm] != c)
        size = max(size, min(len(y), int(np.searchsorted(others, n_negative_images)) + 1))
    pool = np.sort(perm[:size])
    per_class = []
    for c in classes:
        neg = np.flatnonzero(y[pool] != c)
        if len(neg) > n_negative_images:
            neg = np.sort(rng.choice(neg, n_negative_images, replace=False))
        per_class.append(neg)
    return pool, per_class


def learn_classes(calls, n_jobs):
    """Yield ``(k, learn_class_parts(*args, **kwargs), seconds)`` for each ``(args,
    kwargs)`` ``calls[k]``, in the order the classes finish.

    On ``n_jobs`` threads (joblib, shared memory): the region arrays, memmaps
    too, are shared as they are and nothing is pickled; BLAS, faiss and numpy's
    loops release the GIL. Measured on 2 cores, 8 classes: 1.76x over one
    thread, against 1.58x for 2 loky processes (BENCHMARKS.md). While the
    threads run, BLAS gets ``cores // n_jobs`` threads (its count is
    process-wide), as does faiss's OpenMP in each class thread.
    """
    n = effective_n_jobs(n_jobs)
    if n == 1 or len(calls) < 2:
        for k, (args, kwargs) in enumerate(calls):
            yield _learn_timed(k, args, kwargs, 0)
        return
    inner = max(1, cpu_count() // n)
    with threadpool_limits(inner, user_api="blas"):
        yield from Parallel(n_jobs=n, require="sharedmem", return_as="generator_unordered")(
            delayed(_learn_timed)(k, args, kwargs, inner) for k, (args, kwargs) in enumerate(calls))


def _learn_timed(k, args, kwargs, threads: int):
    t0 = time.perf_counter()
    if threads:
        with threadpool_limits(threads, user_api="openmp"):  # OpenMP's count is per thread
            result = learn_class_parts(*args, **kwargs)
    else:
        result = learn_class_parts(*args, **kwargs)
    return k, result, time.perf_counter() - t0
