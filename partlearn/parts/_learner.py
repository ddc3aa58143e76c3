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
3. ``PartLearner`` (below; exported by ``partlearn.parts`` and ``partlearn``):
   the scikit-learn transformer over all classes, in parallel:
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
import threading
import time
import uuid

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.metrics import average_precision_score
from sklearn.utils.validation import check_is_fitted, check_random_state
from threadpoolctl import threadpool_limits

from .. import _faiss
from ..backend import LocalBackend
from .._arrays import RegionStack, indices_by_label, sample_regions, stack_regions
from ._assignment import (_expected_score, _harden, _iou_overlap,  # noqa: F401 (tests use them)
                          _softassign, _suppression)
from ._input import _check_background, _check_fit_inputs, _validate_regions
from .._validation import ConfigError, DataError
from ..config import PartsConfig, check_setting

logger = logging.getLogger(__name__)

_P = PartsConfig  # defaults live there, once

_BLOCK_ROWS = 16384  # rows per block when reducing large region arrays


# ------------------------------------------------------------------ the inputs


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
    check_setting(PartsConfig, "shrinkage", shrinkage)
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


# long (~150 lines, half of them the signature and docstring): one algorithm whose state
# (parts u, scores spad, hard negatives, the last update) flows through every step
def learn_class_parts(positives, negatives, background: dict, params: PartsConfig = _P(), *,
                      boxes=None, negative_images=None, random_state=0, name: str = "") -> dict:
    """Learn the parts of one class.

    ``params``: the ``PartsConfig`` section (checked when it was built; its
    ``shrinkage``, ``background_regions``, ``n_negative_images`` and ``min_images``
    belong to the caller, ``PartLearner.fit``). ``positives``: the class's images, a list
    of ``(R_i, D)`` region arrays
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
    if not isinstance(params, PartsConfig):
        raise ConfigError(f"learn_class_parts: params should be a PartsConfig (the parts "
                          f"section), got {type(params).__name__}")
    n_parts, n_init, kmeans_iter = params.n_parts, params.n_init, params.kmeans_iter
    beta_start, beta_growth, beta_end = params.beta_start, params.beta_growth, params.beta_end
    updates_per_beta, sinkhorn_iter, slack = (params.updates_per_beta, params.sinkhorn_iter,
                                              params.slack)
    hard_negatives, negative_cache, negative_weight = (params.hard_negatives,
                                                       params.negative_cache,
                                                       params.negative_weight)
    orthogonality, nms_iou, sparsity = params.orthogonality, params.nms_iou, params.sparsity
    tol, keep = params.tol, params.keep
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


# ---- the estimator: every class's parts, classes in parallel ----



class PartLearner(TransformerMixin, BaseEstimator):
    """Parts for every class (``learn_class_parts``), classes in parallel.

    ``fit(X, y, boxes=None)``: ``X`` the images' regions, one of

    - a list of ``(R_i, D)`` region arrays, one per image (the main form;
      float16 memmaps are read one image at a time), ``boxes`` optional
      ``(R_i, 4)`` region boxes ``x0, y0, x1, y1`` (for NMS);
    - an ``(N, R, D)`` array (every image ``R`` regions), ``boxes`` likewise;
    - an ``(N, D)`` array: one region per image (no boxes).

    ``y`` ``(N,)`` class labels. Parameters are the ``PartsConfig`` fields
    (``from_config``), their defaults its declarations', plus ``random_state`` and
    ``n_jobs`` (threads, over classes: see ``learn_classes``). ``__init__`` stores them;
    ``fit`` checks them once, by the declarations, building the ``PartsConfig`` that
    ``learn_class_parts`` then takes.

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
        params = locals()  # the signature is explicit (get_params, clone); its names are
        for f in dataclasses.fields(PartsConfig):  # PartsConfig's, defaults included (tested)
            setattr(self, f.name, params[f.name])
        self.random_state = random_state
        self.n_jobs = n_jobs

    @classmethod
    def from_config(cls, parts_cfg: PartsConfig, random_state=None, n_jobs=None) -> PartLearner:
        """An unfitted learner with the parameters of ``parts_cfg`` (a ``PartsConfig``)."""
        if not isinstance(parts_cfg, PartsConfig):
            raise ConfigError(f"PartLearner.from_config takes the parts section, a PartsConfig, "
                              f"got {type(parts_cfg).__name__}")
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

    def _validated_params(self) -> PartsConfig:
        """The parameters as the ``PartsConfig`` section, which checks them by its
        declarations as it is built: ``fit``'s one check."""
        return PartsConfig(**{f.name: getattr(self, f.name)
                              for f in dataclasses.fields(PartsConfig)})

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True  # one region per image
        tags.input_tags.three_d_array = True  # (images, regions, features)
        tags.target_tags.required = True
        tags.transformer_tags.preserves_dtype = ["float32"]  # responses are float32
        return tags

    # long: 30 lines of docstring (the procedure and the resume hooks), 45 of code
    def fit(self, X, y, boxes=None, *, class_names=None, background=None, class_results=None,
            on_background=None, on_class=None, backend=None, negatives=None,
            class_n_parts=None):
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
          the order they finish;
        - ``backend``: where the classes are learnt (``partlearn.backend``; default
          ``LocalBackend(n_jobs)``, threads); the results do not depend on it.

        And for hierarchical parts (``partlearn.parts.hierarchy``):

        - ``negatives``: per class (of ``classes_``), the indices into ``X`` of its
          negative images, instead of its share of the drawn pool (e.g. mostly its
          siblings, ``sibling_negatives``); the pool is then their union;
        - ``class_n_parts``: per class, its number of parts instead of ``n_parts``.
        """
        cfg = self._validated_params()
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
        positives = indices_by_label(codes, len(classes))
        todo = [k for k in range(len(classes)) if k not in results]
        if len(todo) < len(classes):
            logger.debug("parts: %d of %d classes already learnt", len(classes) - len(todo),
                         len(classes))
        # one negative pool for every class (read and converted once), drawn whatever
        # is left to learn, so a resumed run draws the same
        if negatives is None:
            pool, negatives = negative_pool(codes, cfg.n_negative_images,
                                            np.random.default_rng(seed))
        else:
            pool, negatives = _given_negatives(negatives, codes)
        n_parts = [cfg.n_parts] * len(classes) if class_n_parts is None else list(class_n_parts)
        if len(n_parts) != len(classes) or not all(
                isinstance(p, numbers.Integral) and p >= 1 for p in n_parts):
            raise DataError(f"fit: class_n_parts should be {len(classes)} positive integers, "
                            f"one per class, got {class_n_parts!r}")
        if todo:
            backend = LocalBackend(self.n_jobs) if backend is None else backend
            pool_images = [X[i] for i in pool]
            # threads share one stack of the pool; remote workers stack it themselves,
            # once each, from the memory-mapped images (``_negative_stack``)
            pool_regions = (stack_regions(pool_images, dim, "negative pool")
                            if backend.shares_memory else pool_images)
            items = [([X[i] for i in positives[k]],
                      dict(params=_with_n_parts(cfg, int(n_parts[k])),
                           boxes=None if boxes is None else [boxes[i] for i in positives[k]],
                           negative_images=negatives[k], random_state=seed + k, name=names[k]))
                     for k in todo]
            shared = {"negatives": pool_regions, "background": background, "dim": dim,
                      "token": uuid.uuid4().hex}
            for j, result, seconds in learn_classes(items, shared, backend):
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


def _with_n_parts(cfg: PartsConfig, n_parts: int) -> PartsConfig:
    """``cfg``, or for a class given its own number of parts (``fit``'s ``class_n_parts``)
    a copy with it, checked as any section is (``keep <= n_parts``)."""
    return cfg if n_parts == cfg.n_parts else dataclasses.replace(cfg, n_parts=n_parts)


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


def _given_negatives(negatives, codes) -> tuple[np.ndarray, list[np.ndarray]]:
    """``fit``'s ``negatives`` as ``negative_pool`` gives them: the pool (their union) and
    each class's positions in it; each class's are checked against its positives."""
    n_classes = int(codes.max()) + 1
    if len(negatives) != n_classes:
        raise DataError(f"fit: negatives should hold {n_classes} index arrays, one per class, "
                        f"got {len(negatives)}")
    negatives = [np.asarray(n, np.int64).ravel() for n in negatives]
    for k, n in enumerate(negatives):
        if len(n) and (n.min() < 0 or n.max() >= len(codes)):
            raise DataError(f"fit: negatives[{k}] holds indices outside 0..{len(codes) - 1}")
        if (codes[n] == k).any():
            raise DataError(f"fit: negatives[{k}] holds images of class {k} itself")
    pool = np.unique(np.concatenate(negatives)) if negatives else np.zeros(0, np.int64)
    return pool, [np.searchsorted(pool, n) for n in negatives]


def learn_classes(items, shared, backend):
    """Yield ``(k, learn_class_parts(...), seconds)`` for class ``items[k] = (positive
    images, keyword arguments)``, in the order the classes finish.

    ``shared``: ``negatives`` (the negative pool: a ``RegionStack``, or its images'
    arrays, stacked by each worker once), ``background``, ``dim``, and ``token``
    naming this pool. On ``backend`` (``partlearn.backend``): ``LocalBackend``'s
    threads share the region arrays, memmaps too, as they are and pickle nothing;
    BLAS, faiss and numpy's loops release the GIL (measured on 2 cores, 8 classes:
    1.76x over one thread, against 1.58x for 2 loky processes, BENCHMARKS.md).
    Every class is learnt with one BLAS and one OpenMP thread, whatever the
    backend and ``n_jobs``: the thread count changes the sums' rounding (parts
    differed by ~4e-5 between 1 and 2 BLAS threads), and where a class is learnt
    must not change it (``n_jobs`` and ``backend`` key nothing).
    """
    # BLAS's count is process-wide: set once here for the threads (and again in each
    # task, for worker processes: a no-op under this one); OpenMP's is per thread
    with threadpool_limits(1, user_api="blas"):
        for j, (result, seconds) in backend.map(_learn_timed, items, shared=shared):
            yield j, result, seconds


_STACK: dict = {}  # token -> the negative pool stacked, one per process (remote workers)
_STACK_LOCK = threading.Lock()


def _negative_stack(negatives, dim: int, token: str):
    if not isinstance(negatives, list):
        return negatives  # stacked already (threads of the process that fitted)
    with _STACK_LOCK:
        if token not in _STACK:
            _STACK.clear()
            _STACK[token] = stack_regions(negatives, dim, "negative pool")
        return _STACK[token]


def _learn_timed(item, negatives, background, dim, token):
    t0 = time.perf_counter()
    positives, kwargs = item
    stack = _negative_stack(negatives, dim, token)
    with threadpool_limits(1, user_api="blas"), threadpool_limits(1, user_api="openmp"):
        result = learn_class_parts(positives, stack, background, **kwargs)
    return result, time.perf_counter() - t0
