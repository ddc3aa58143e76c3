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
from ..classify import (CODE_STAGES, CVSettings, FusedSVM, LinearSVM, TwoLevelSVM,
                        fit_late_fusion, fit_svm, fit_two_level, fused, method_blocks,
                        method_features, two_level)
from . import encoding, encoding_cv, encoding_hier, encoding_unsup, hierarchy
from ._base import Stage


def file_name(method: str) -> str:
    """``parts+global`` → ``parts_global``, ``parts[unsup]+global`` → ``parts_unsup_global``,
    ``parts|global`` → ``parts_late_global``."""
    return re.sub(r"[^a-z0-9]+", "_", method.replace("|", "_late_")).strip("_")


def model_class(method: str) -> type:
    """The fitted model of ``method``: ``TwoLevelSVM``, ``FusedSVM`` or ``LinearSVM``."""
    return TwoLevelSVM if two_level(method) else FusedSVM if fused(method) else LinearSVM


@dataclass(frozen=True)
class Classifiers:
    """Per method ``models[method]``: the model's arrays (``coef``, ``intercept``,
    ``classes``; a two-level model's ``group_coef``, ``group_intercept``,
    ``class_group`` too), ``test_scores``, ``test_pred`` and ``info`` (C, CV accuracy,
    ...); ``test_images`` (kept indices). ``model(method)``: the fitted model back
    (``LinearSVM``, ``FusedSVM`` or ``TwoLevelSVM``)."""

    models: dict
    test_images: np.ndarray

    def model(self, method: str):
        saved = self.models[method]
        return model_class(method).from_saved(method, saved, saved["info"])


def method_inputs(cfg, get):
    """``method → (n_images, D)`` input of every image, from the run's stage outputs
    (``get(stage)``: a stage context's ``get`` or ``Pipeline.load``): what the stage fits
    and predicts on."""
    glob = get("features").global_features(cfg.encoding.flip_average)
    present = inputs(cfg)
    codes = [np.asarray(get(stage).codes) if stage in present else None
             for stage in CODE_STAGES.values()]

    def feature(method: str) -> np.ndarray:
        return method_features(method, glob, *codes)
    return feature


def inputs(cfg) -> tuple[str, ...]:
    return ("dataset", "features") + tuple(
        s.name for s in (encoding.STAGE, encoding_unsup.STAGE, encoding_hier.STAGE,
                         encoding_cv.STAGE, hierarchy.STAGE) if s.applies(cfg))


def compute(ctx, w) -> None:
    k = ctx.cfg.classifier
    data = ctx.get("dataset")
    m, train, test = data.manifest, data.train, data.test
    feature = method_inputs(ctx.cfg, ctx.get)
    glob = ctx.get("features").global_features(ctx.cfg.encoding.flip_average)
    y = m.label[train]
    cv = CVSettings.from_config(k, ctx.cfg.seed, ctx.backend.n_jobs)
    fitted: dict = {}

    fold_codes = ctx.get("encoding_cv") if "encoding_cv" in inputs(ctx.cfg) else None

    def fold_feature(method):
        """Per CV fold, the training rows by parts learnt without the fold (encoding_cv),
        for a method of global and supervised part blocks; else None."""
        if (fold_codes is None or two_level(method) or "parts" not in method_blocks(method)
                or not set(method_blocks(method)) <= {"parts", "global"}):
            return None
        return [method_features(method, glob[train], np.asarray(c)) for c in fold_codes]

    def fit(method):  # a late fusion's two SVMs are fitted once, also as methods
        if method not in fitted:
            if fused(method):
                a, b = fused(method)
                fitted[method] = fit_late_fusion(feature(a)[train], feature(b)[train], y,
                                                 fit(a), fit(b), cv, name=method,
                                                 fold_xa=fold_feature(a),
                                                 fold_xb=fold_feature(b))
            elif two_level(method):
                fitted[method] = fit_two_level(feature(method)[train], y,
                                               ctx.get("hierarchy").class_group, cv,
                                               name=method)
            else:
                fitted[method] = fit_svm(feature(method)[train], y, cv, name=method,
                                         fold_x=fold_feature(method))
        return fitted[method]

    for method in k.methods:
        t0 = time.perf_counter()
        with ctx.backend.joblib():  # the CV grid's folds on the run's backend
            model = fit(method)
        x = feature(method)
        seconds = time.perf_counter() - t0
        name = file_name(method)
        for a, array in model.arrays().items():
            w.save_array(f"{name}_{a}", array)
        scores = model.decision_function(x[test])
        w.save_array(f"{name}_test_scores", scores)
        w.save_array(f"{name}_test_pred",
                     np.asarray(model.classes)[scores.argmax(axis=1)].astype(np.int64))
        w.meta[method] = model.info() | {
            "dim": int(x.shape[1]),
            # the CV's folds were held out of part learning too
            "cv_parts": any(fold_feature(m) is not None for m in (fused(method) or (method,))),
            "train_seconds": round(seconds, 3)}
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
                          for a in model_class(method).ARRAYS + ("test_scores", "test_pred")}
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
    seeded=True, compute=compute, load=load,
    applies=lambda cfg: bool(cfg.classifier.methods), check=check)
