"""The input forms of ``PartLearner`` and their checks: a list of per-image ``(R_i, D)``
region arrays (the main form), an ``(N, R, D)`` array, or an ``(N, D)`` array (one
region per image); the array forms through scikit-learn's ``validate_data``."""

from __future__ import annotations

import numpy as np
from sklearn.utils import get_tags
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from .._validation import DataError
from ..config import PartsConfig

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


def _sequence_form(est, y, reset: bool) -> None:
    """What ``validate_data`` would check of a sequence-of-images ``X`` that it cannot
    take: ``y`` present when required; ``feature_names_in_`` forgotten on refit."""
    if y is None and get_tags(est).target_tags.required:
        raise ValueError(f"This {type(est).__name__} estimator requires y to be passed, but "
                         "the target y is None.")
    if reset and hasattr(est, "feature_names_in_"):
        del est.feature_names_in_


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
        _sequence_form(est, y, reset)
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
