"""Test-split metrics and paired comparisons between methods.

``metrics``: top-1 accuracy, mean per-class accuracy, per-class accuracy and
the confusion matrix. ``paired_comparison``: the difference in top-1 between
two methods on the same test images, with a paired bootstrap 95% interval
(images resampled with replacement, both methods together) and the exact
McNemar p (two-sided binomial test on the images exactly one method gets right).
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
