"""Two-level decisions ``2level:m``: an SVM for the group of classes, then, within the
group, one for the class (``parts.hierarchy.two_level_scores``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .._validation import DataError
from ._svm import (CVSettings, _cv_floats, _cv_keys, _Decisions, _Folds, _search_C,
                   _svm_input, cv_splits, fit_svm)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class TwoLevelSVM(_Decisions):
    """``fit_two_level``'s model of ``method``: ``coef``/``intercept`` ``(classes, D)``/
    ``(classes,)`` (the within-group SVMs; 0 for a group's only class), ``group_coef``/
    ``group_intercept`` (the group SVM), ``class_group``, ``classes``, ``C`` (the group
    SVM's), ``C_within``, ``cv`` (``{C_within: two-level accuracy}``), ``cv_accuracy``
    (at the chosen one), ``cv_group_accuracy`` (the group SVM's), ``cv_folds``,
    ``C_at_edge`` and ``converged``."""

    method: str
    C: float
    C_within: float
    cv: dict
    cv_accuracy: float
    cv_group_accuracy: float
    cv_folds: int
    C_at_edge: bool
    converged: bool
    coef: np.ndarray
    intercept: np.ndarray
    classes: np.ndarray
    group_coef: np.ndarray
    group_intercept: np.ndarray
    class_group: np.ndarray
    ARRAYS: ClassVar[tuple[str, ...]] = ("coef", "intercept", "classes", "group_coef",
                                          "group_intercept", "class_group")

    def decision_function(self, x) -> np.ndarray:
        """``(n, classes)`` scores of the two-level decision (``two_level_scores``)."""
        from ..parts.hierarchy import two_level_scores

        x = np.asarray(x, np.float32)
        group = x @ self.group_coef.T + self.group_intercept
        return two_level_scores(group, x @ self.coef.T + self.intercept, self.class_group)

    def info(self) -> dict:
        """The scalars, JSON-ready (``cv``'s keys as ``f"{C:g}"``)."""
        return {"C": self.C, "cv_accuracy": self.cv_accuracy, "cv_folds": self.cv_folds,
                "C_at_edge": self.C_at_edge, "converged": self.converged,
                "cv": _cv_keys(self.cv), "C_within": self.C_within,
                "cv_group_accuracy": self.cv_group_accuracy}

    @classmethod
    def from_saved(cls, method: str, arrays, info: dict) -> TwoLevelSVM:
        """The model back from ``arrays()`` and ``info()`` (as saved)."""
        return cls(method, info["C"], info["C_within"], _cv_floats(info["cv"]),
                   info["cv_accuracy"], info["cv_group_accuracy"], info["cv_folds"],
                   info["C_at_edge"], info["converged"],
                   *(np.asarray(arrays[a]) for a in cls.ARRAYS))


def fit_two_level(x, y, class_group, cv: CVSettings = CVSettings(), *,
                  name: str = "") -> TwoLevelSVM:
    """A two-level decision (``hierarchy.two_level_scores``): one SVM for the group
    (``class_group[y]``, C by ``fit_svm``'s CV), then, per group of two classes or more,
    one SVM on its images for the class within it. The within-group SVMs share one C,
    chosen by the two-level decision's own accuracy out of fold (class-stratified folds,
    the grid extended at an edge as ``fit_svm``'s): a group of a few classes rarely
    tells Cs apart by itself."""
    from ..parts.hierarchy import two_level_scores

    who = f"{name}: " if name else ""
    x, y, plan = _svm_input(x, y, cv, who)
    class_group = np.asarray(class_group, np.int64)
    classes = np.unique(y)
    if not np.array_equal(classes, np.arange(len(class_group))):
        raise DataError(f"{who}a two-level SVM needs labels 0..{len(class_group) - 1}, one per "
                        "class of the hierarchy")
    yg = class_group[y]
    group = fit_svm(x, yg, cv, name=f"{name} (groups)")
    splits = cv_splits(y, cv.folds, cv.random_state, who)
    k = len(splits)
    oof_group = _Folds(x, yg, np.unique(yg), splits, cv, plan).out_of_fold(group.C)
    within = []  # (members, rows, their _Folds) of every group of two classes or more
    for g in range(int(class_group.max()) + 1):
        members = np.flatnonzero(class_group == g)
        if len(members) > 1:
            rows = np.flatnonzero(np.isin(y, members))
            sub = [(np.flatnonzero(np.isin(rows, tr)), np.flatnonzero(np.isin(rows, te)))
                   for tr, te in splits]
            xr, yr, plan_r = _svm_input(x[rows], y[rows], cv, who)
            within.append((members, rows, _Folds(xr, yr, members, sub, cv, plan_r)))

    def accuracies(grid) -> dict:
        out = {}
        for c in grid:
            oof = np.zeros((len(y), len(classes)), np.float64)
            for members, rows, folds_g in within:
                oof[np.ix_(rows, members)] = folds_g.out_of_fold(c)
            pred = two_level_scores(oof_group, oof, class_group).argmax(axis=1)
            out[c] = (float((pred == y).mean()), False)
        return out

    scores, best, _ = _search_C(accuracies, cv.Cs, cv.extend)
    grid = sorted(scores)
    at_edge = best in (grid[0], grid[-1]) and len(grid) > 1
    coef = np.zeros((len(classes), x.shape[1]), np.float32)
    intercept = np.zeros(len(classes), np.float32)
    converged = group.converged
    for members, _, folds_g in within:
        coef[members], intercept[members], late = folds_g.final(best)
        converged &= not late
    logger.info("%stwo-level: group C=%g (CV accuracy %.4f), within-group C=%g; two-level "
                "CV accuracy %.4f (%s)", who, group.C, group.cv_accuracy, best, scores[best],
                ", ".join(f"{c:g}: {scores[c]:.4f}" for c in grid))
    return TwoLevelSVM(name, group.C, best, scores, scores[best], group.cv_accuracy, k,
                       bool(group.C_at_edge or at_edge), bool(converged), coef, intercept,
                       classes, group.coef, group.intercept, class_group)
