"""Late fusion ``a|b`` of two fitted SVMs: their decisions weighted ``w`` and ``1 - w``,
``w`` chosen by the accuracy of the fused out-of-fold decisions."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .._validation import DataError
from ._svm import (CVSettings, LinearSVM, _cv_floats, _cv_keys, _Decisions, _fold_inputs,
                   _Folds, _splits, _svm_input)

logger = logging.getLogger(__name__)

FUSION_WEIGHTS = tuple(np.round(np.linspace(0, 1, 11), 2))  # weight on the first method


@dataclass(frozen=True, eq=False)
class FusedSVM(_Decisions):
    """``fit_late_fusion``'s model of ``method`` on the concatenated input ``[xa, xb]``:
    ``coef``/``intercept`` (exactly ``weight`` times the first SVM's decision plus ``1 -
    weight`` times the second's), ``classes``, ``weight``, ``cv`` (``{w: accuracy}``),
    ``cv_accuracy`` (at ``weight``), ``cv_folds``, the two SVMs' ``C`` and ``C_b``, and
    ``converged`` (both were)."""

    method: str
    weight: float
    cv: dict
    cv_accuracy: float
    cv_folds: int
    C: float
    C_b: float
    converged: bool
    coef: np.ndarray
    intercept: np.ndarray
    classes: np.ndarray
    C_at_edge: ClassVar[bool] = False  # the weights are a fixed grid; the Cs, the SVMs'

    def info(self) -> dict:
        """The scalars, JSON-ready (``cv``'s keys as ``f"{w:g}"``)."""
        return {"C": self.C, "cv_accuracy": self.cv_accuracy, "cv_folds": self.cv_folds,
                "C_at_edge": self.C_at_edge, "converged": self.converged,
                "cv": _cv_keys(self.cv), "weight": self.weight, "C_b": self.C_b}

    @classmethod
    def from_saved(cls, method: str, arrays, info: dict) -> FusedSVM:
        """The model back from ``arrays()`` and ``info()`` (as saved)."""
        return cls(method, info["weight"], _cv_floats(info["cv"]), info["cv_accuracy"],
                   info["cv_folds"], info["C"], info["C_b"], info["converged"],
                   *(np.asarray(arrays[a]) for a in cls.ARRAYS))


def fit_late_fusion(xa, xb, y, model_a: LinearSVM, model_b: LinearSVM,
                    cv: CVSettings = CVSettings(), *, weights=FUSION_WEIGHTS, name: str = "",
                    fold_xa=None, fold_xb=None) -> FusedSVM:
    """Late fusion of two fitted SVMs (``fit_svm``'s, on inputs ``xa`` and ``xb`` of the
    same images): scores ``w * a + (1 - w) * b``, ``w`` chosen by the accuracy of the
    fused out-of-fold scores (each SVM refitted at its own C on the folds ``fit_svm``
    used: same ``cv.random_state`` and the models' ``cv_folds``). Ties go to the smaller
    ``w``, so where ``a`` adds nothing the fusion is ``b`` alone (``w = 0``). ``cv``'s
    solver, device, memory_mb and max_iter: the folds' refits, as ``fit_svm`` (pass the
    settings the two SVMs were fitted with); ``fold_xa``, ``fold_xb``: their ``fold_x``, if
    they had one."""
    who = f"{name}: " if name else ""
    xa, y, plan_a = _svm_input(xa, y, cv, who)
    xb, _, plan_b = _svm_input(xb, y, cv, who)
    classes = model_a.classes
    if not np.array_equal(classes, model_b.classes):
        raise DataError(f"{name}: the two SVMs have different classes")
    k = int(model_a.cv_folds)
    splits = _splits(k, cv.random_state, y)
    oof = [_Folds(x, y, classes, splits, cv, plan, _fold_inputs(fx, y, splits, cv, who))
           .out_of_fold(model.C)
           for x, fx, model, plan in ((xa, fold_xa, model_a, plan_a),
                                      (xb, fold_xb, model_b, plan_b))]
    scores = {float(w): float((classes[(w * oof[0] + (1 - w) * oof[1]).argmax(axis=1)] == y)
                              .mean())
              for w in weights}
    best = max(scores, key=lambda w: (scores[w], -w))
    logger.info("%s: late-fusion weight %.2f on the first SVM (CV accuracy %.4f; %s)", name,
                best, scores[best], ", ".join(f"{w:g}: {a:.4f}" for w, a in scores.items()))
    coef = np.concatenate([best * model_a.coef, (1 - best) * model_b.coef], axis=1)
    intercept = best * model_a.intercept + (1 - best) * model_b.intercept
    return FusedSVM(name, best, scores, scores[best], k, model_a.C, model_b.C,
                    model_a.converged and model_b.converged, coef.astype(np.float32),
                    intercept.astype(np.float32), classes)
