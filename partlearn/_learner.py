"""``PartLearner``: the scikit-learn transformer that learns every class's parts.

The background from ``_arrays.sample_regions``, one ``negative_pool`` shared by the
classes, then ``parts.learn_class_parts`` per class on threads (``learn_classes``):
the procedure the pipeline's parts stage runs (it calls ``fit`` with its cache's
hooks and rebuilds a cached learner with ``PartLearner.from_results``).
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
from sklearn.utils.validation import check_is_fitted, check_random_state
from threadpoolctl import threadpool_limits

from . import parts as _parts
from .backend import LocalBackend
from ._arrays import sample_regions, stack_regions
from ._region_input import _check_background, _check_fit_inputs, _validate_regions
from ._validation import DataError
from .config import Config, PartsConfig
from .parts import _BLOCK_ROWS, CLASS_PARAMS, fit_background

logger = logging.getLogger(__name__)

_P = PartsConfig  # defaults live there, once


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

        And for hierarchical parts (``partlearn.hierarchy``):

        - ``negatives``: per class (of ``classes_``), the indices into ``X`` of its
          negative images, instead of its share of the drawn pool (e.g. mostly its
          siblings, ``sibling_negatives``); the pool is then their union;
        - ``class_n_parts``: per class, its number of parts instead of ``n_parts``.
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
            params = {f: getattr(cfg, f) for f in CLASS_PARAMS}
            items = [([X[i] for i in positives[k]],
                      dict(boxes=None if boxes is None else [boxes[i] for i in positives[k]],
                           negative_images=negatives[k], random_state=seed + k, name=names[k],
                           **(params | {"n_parts": int(n_parts[k])})))
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
        result = _parts.learn_class_parts(positives, stack, background, **kwargs)
    return result, time.perf_counter() - t0
