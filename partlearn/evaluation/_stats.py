"""Test-split metrics and paired comparisons between methods.

``metrics``: top-1 accuracy, mean per-class accuracy, per-class accuracy and
the confusion matrix. ``paired_comparison``: the difference in top-1 between
two methods on the same test images, with a paired bootstrap 95% interval
(images resampled with replacement, both methods together) and the exact
McNemar p (two-sided binomial test on the images exactly one method gets right);
``paired_comparison_seeds`` the same for methods trained with several seeds (every
seed counts); ``holm`` corrects the p-values of one table for their number;
``paired_units`` the mean difference of two scores over units (classes, images) with a
bootstrap interval.
Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest

from ..config import ClassifierConfig


def metrics(y_true, y_pred, n_classes: int) -> dict:
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    confusion = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.diag(confusion) / support
    present = support > 0
    return {"top1": float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
            "mean_class_accuracy": float(per_class[present].mean()) if present.any()
            else float("nan"),
            "per_class_accuracy": [None if not p else float(a)
                                   for a, p in zip(per_class, present)],
            "n_test": int(len(y_true)), "confusion": confusion.tolist()}


def paired_comparison(correct_a, correct_b, n_bootstrap: int = ClassifierConfig.n_bootstrap,
                      seed: int = 0) -> dict:
    """``a`` minus ``b`` on the same images: ``diff`` (top-1), ``ci95`` (paired bootstrap
    percentile interval), ``mcnemar_p`` (exact), ``a_only``/``b_only`` (images only that
    method gets right), ``n``.

    Resampling images with replacement only moves the counts of the three kinds of
    image (right by ``a`` only, by ``b`` only, by both or neither), so the bootstrap
    draws those counts from their multinomial: the same distribution, in O(n_bootstrap).
    """
    a = np.asarray(correct_a, bool)
    b = np.asarray(correct_b, bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_comparison: shapes {a.shape} and {b.shape} differ")
    n = len(a)
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    diff = (a_only - b_only) / n if n else float("nan")
    if n == 0:
        return {"diff": diff, "ci95": [float("nan")] * 2, "mcnemar_p": float("nan"),
                "a_only": 0, "b_only": 0, "n": 0}
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, [a_only / n, b_only / n, 1 - (a_only + b_only) / n],
                            size=n_bootstrap)
    boot = (draws[:, 0] - draws[:, 1]) / n
    lo, hi = np.percentile(boot, [2.5, 97.5])
    discordant = a_only + b_only
    p = binomtest(a_only, discordant, 0.5).pvalue if discordant else 1.0
    return {"diff": float(diff), "ci95": [float(lo), float(hi)], "mcnemar_p": float(p),
            "a_only": a_only, "b_only": b_only, "n": n}


_CHUNK = 500  # bootstrap / sign-flip draws at a time (memory: _CHUNK x n)


def paired_comparison_seeds(correct_a, correct_b,
                            n_bootstrap: int = ClassifierConfig.n_bootstrap,
                            seed: int = 0) -> dict:
    """``a`` minus ``b`` when either was trained with several seeds: ``correct_*``
    ``(seeds, n)``. Each image counts by the fraction of a method's seeds that get it
    right, so every seed enters: ``diff`` is the difference of the mean top-1 over
    seeds, ``ci95`` a paired bootstrap over images, ``p`` a two-sided sign-flip test of
    the per-image differences (``n_bootstrap`` random flips; with one seed each it
    tests what McNemar tests). ``seeds_a``/``seeds_b``: how many seeds each has."""
    a = np.atleast_2d(np.asarray(correct_a, bool)).mean(axis=0)
    b = np.atleast_2d(np.asarray(correct_b, bool)).mean(axis=0)
    if a.shape != b.shape:
        raise ValueError(f"paired_comparison_seeds: {a.shape} and {b.shape} images differ")
    d = a - b
    n = len(d)
    out = {"diff": float(d.mean()) if n else float("nan"), "n": n,
           "seeds_a": int(np.atleast_2d(correct_a).shape[0]),
           "seeds_b": int(np.atleast_2d(correct_b).shape[0]),
           "test": "sign-flip over images, seeds averaged"}
    if n == 0 or not d.any():
        return out | {"ci95": [out["diff"]] * 2 if n else [float("nan")] * 2,
                      "p": 1.0 if n else float("nan")}
    rng = np.random.default_rng(seed)
    boot, extreme = [], 0
    observed = abs(d.sum())
    for start in range(0, n_bootstrap, _CHUNK):
        m = min(_CHUNK, n_bootstrap - start)
        boot.append(d[rng.integers(0, n, (m, n))].mean(axis=1))
        flips = rng.integers(0, 2, (m, n)) * 2 - 1
        extreme += int((np.abs(flips @ d) >= observed - 1e-12).sum())
    lo, hi = np.percentile(np.concatenate(boot), [2.5, 97.5])
    return out | {"ci95": [float(lo), float(hi)],
                  "p": float((1 + extreme) / (1 + n_bootstrap))}


def holm(pvalues) -> list[float]:
    """Holm's step-down correction of ``pvalues`` (one family): the k-th smallest times
    ``m - k``, made monotone, capped at 1. NaN stays NaN and does not count."""
    p = np.asarray(pvalues, np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out.tolist()


def paired_units(a: list, b: list, n_bootstrap: int = 10_000, seed: int = 0) -> dict:
    """``a`` minus ``b``, one value per unit each (the same units in the same order):
    ``diff`` (mean), ``ci95`` (bootstrap over units, percentile), ``n`` units."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    d = np.array([x - y for x, y in pairs], np.float64)
    if not len(d):
        return {"diff": None, "ci95": [None, None], "n": 0}
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, len(d), (n_bootstrap, len(d)))].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"diff": float(d.mean()), "ci95": [float(lo), float(hi)], "n": len(d)}
