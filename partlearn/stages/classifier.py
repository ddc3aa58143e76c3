"""``classifier``: one linear SVM per method (``global``, ``parts``, ``parts+global``),
C chosen by cross-validation on the training split (``partlearn.classify``), late
fusions ``a|b`` of two methods' SVMs with their weight chosen by the same folds, and
two-level decisions ``2level:m`` (group, then class, ``fit_two_level``); the models as
arrays and their test predictions."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import numpy as np

from .._validation import DataError
from ..classify import (decision, fit_late_fusion, fit_svm, fit_two_level, fused, method_blocks,
                        method_features, two_level)
from . import encoding, encoding_cv, encoding_hier, encoding_unsup, hierarchy
from ._base import Stage


def file_name(method: str) -> str:
    """``parts+global`` → ``parts_global``, ``parts[unsup]+global`` → ``parts_unsup_global``,
    ``parts|global`` → ``parts_late_global``."""
    return re.sub(r"[^a-z0-9]+", "_", method.replace("|", "_late_")).strip("_")


@dataclass(frozen=True)
class Classifiers:
    """Per method ``models[method]``: ``coef``, ``intercept``, ``classes``, ``test_scores``,
    ``test_pred`` and ``info`` (C, CV accuracy, ...); ``test_images`` (kept indices)."""

    models: dict
    test_images: np.ndarray


def method_inputs(cfg, feats, codes=None, codes_unsup=None) -> dict:
    """Each method's ``(n_images, D)`` input, by the same functions for every run."""
    glob = feats.global_features(cfg.encoding.flip_average)
    return {m: method_features(m, glob, codes, codes_unsup) for m in cfg.classifier.methods}


#: the part codes a method may use, by the stage that makes them
_CODES = ("encoding", "encoding_unsup", "encoding_hier")
#: the arrays of a two-level model beyond coef, intercept, classes
_TWO_LEVEL = ("group_coef", "group_intercept", "class_group")


def inputs(cfg) -> tuple[str, ...]:
    return ("dataset", "features") + tuple(
        s.name for s in (encoding.STAGE, encoding_unsup.STAGE, encoding_hier.STAGE,
                         encoding_cv.STAGE, hierarchy.STAGE) if s.applies(cfg))


def compute(ctx, w) -> None:
    k = ctx.cfg.classifier
    data, feats = ctx.get("dataset"), ctx.get("features")
    codes = {name: np.asarray(ctx.get(name).codes) if name in inputs(ctx.cfg) else None
             for name in _CODES}
    m, train, test = data.manifest, data.train, data.test
    glob = feats.global_features(ctx.cfg.encoding.flip_average)
    y = m.label[train]
    fitted: dict[str, dict] = {}

    def feature(method):
        return method_features(method, glob, *(codes[name] for name in _CODES))

    fold_codes = ctx.get("encoding_cv") if "encoding_cv" in inputs(ctx.cfg) else None

    def fold_feature(method):
        """Per CV fold, the training rows by parts learnt without the fold (encoding_cv),
        for a method of global and supervised part blocks; else None."""
        if (fold_codes is None or two_level(method) or "parts" not in method_blocks(method)
                or not set(method_blocks(method)) <= {"parts", "global"}):
            return None
        return [method_features(method, glob[train], np.asarray(c)) for c in fold_codes]

    def fit(method) -> dict:  # a late fusion's two SVMs are fitted once, also as methods
        if method not in fitted:
            common = dict(folds=k.cv_folds, max_iter=k.max_iter, random_state=ctx.cfg.seed,
                          n_jobs=ctx.backend.n_jobs, name=method, solver=k.solver,
                          memory_mb=k.memory_mb)
            if fused(method):
                a, b = fused(method)
                fitted[method] = fit_late_fusion(feature(a)[train], feature(b)[train], y,
                                                 fit(a), fit(b), fold_xa=fold_feature(a),
                                                 fold_xb=fold_feature(b), **common)
            elif two_level(method):
                fitted[method] = fit_two_level(feature(method)[train], y,
                                               ctx.get("hierarchy").class_group, Cs=k.C,
                                               extend=k.extend, **common)
            else:
                fitted[method] = fit_svm(feature(method)[train], y, Cs=k.C, extend=k.extend,
                                         fold_x=fold_feature(method), **common)
        return fitted[method]

    for method in k.methods:
        t0 = time.perf_counter()
        with ctx.backend.joblib():  # the CV grid's folds on the run's backend
            model = fit(method)
        x = feature(method)
        seconds = time.perf_counter() - t0
        name = file_name(method)
        for a in ("coef", "intercept", "classes") + (_TWO_LEVEL if two_level(method) else ()):
            w.save_array(f"{name}_{a}", np.asarray(model[a]))
        scores = decision(model, x[test])
        w.save_array(f"{name}_test_scores", scores)
        w.save_array(f"{name}_test_pred",
                     np.asarray(model["classes"])[scores.argmax(axis=1)].astype(np.int64))
        w.meta[method] = {"C": model["C"], "cv_accuracy": model["cv_accuracy"],
                          "cv_folds": model["cv_folds"], "C_at_edge": model["C_at_edge"],
                          "converged": model["converged"], "dim": int(x.shape[1]),
                          "cv": {f"{c:g}": a for c, a in model["cv"].items()},
                          # the CV's folds were held out of part learning too
                          "cv_parts": any(fold_feature(m) is not None
                                          for m in (fused(method) or (method,))),
                          "train_seconds": round(seconds, 3)} | (
            {"weight": model["weight"], "C_b": model["C_b"]} if fused(method) else {}) | (
            {"C_within": model["C_within"], "cv_group_accuracy": model["cv_group_accuracy"]}
            if two_level(method) else {})
    w.meta["test_images"] = test.tolist()


def load(ctx, entry) -> Classifiers:
    test = ctx.get("dataset").test
    if entry.meta.get("test_images") != test.tolist():  # meta.json edited by hand
        raise DataError(f"{entry.path}/meta.json: its test_images are not this dataset's "
                        f"{len(test)} test images; remove the entry (`partlearn cache rm "
                        f"{entry.key}`) and run again")
    models = {}
    for method in ctx.cfg.classifier.methods:
        name = file_name(method)
        models[method] = {a: entry.array(f"{name}_{a}", mmap=False)
                          for a in ("coef", "intercept", "classes", "test_scores", "test_pred")
                          + (_TWO_LEVEL if two_level(method) else ())}
        models[method]["info"] = entry.meta[method]
    return Classifiers(models, np.asarray(entry.meta["test_images"], np.int64))


# encoding.flip_average: the global descriptor is averaged with its mirror's too
def check(ctx) -> None:
    """The SVMs need training images of two classes or more; accuracy, test images of
    every class; with ``classifier.cv_parts``, every CV fold enough images per class for
    its parts (``encoding_cv.check_folds``)."""
    from .parts import check_classes

    data = ctx.get("dataset")
    m = data.manifest
    check_classes(m, m.label[data.train], 1, "the classifier")
    if not len(data.test):
        raise DataError(f"the dataset at {m.root} has no test images: classification is "
                        "measured on the test split (for retrieval only, set "
                        "classifier.methods = [])")
    missing = [m.classes[c] for c in np.setdiff1d(np.arange(len(m.classes)),
                                                   m.label[data.test])]
    if missing:
        raise DataError(f"the dataset at {m.root}: {len(missing)} class(es) have no test "
                        f"images: {', '.join(missing[:10])}{', ...' if len(missing) > 10 else ''}"
                        "; add test images or leave the class out with data.classes")
    if encoding_cv.applies(ctx.cfg):  # each CV fold's parts: parts.min_images in every fold
        encoding_cv.check_folds(ctx.of(encoding_cv.STAGE))


STAGE = Stage(
    name="classifier", version=3, inputs=inputs,
    fields=("classifier.methods", "classifier.C", "classifier.extend", "classifier.cv_folds",
            "classifier.cv_parts",
            "classifier.max_iter", "classifier.solver", "encoding.flip_average", "seed"),
    libs=("numpy", "scikit-learn", "torch"),  # torch: solver = "torch"
    compute=compute, load=load,
    applies=lambda cfg: bool(cfg.classifier.methods), check=check)
