"""``encoding_cv``: for each fold of the classifier's cross-validation on the training
split, every training image's part code under parts learnt without that fold
(``classifier.cv_parts``).

A part is learnt from its class's training images, so the codes of those images, even
leave-one-out, carry what the part learning saw: a CV over them holds a fold out of the
SVM but not out of the parts, and it is optimistic (CUB c001-020: `parts` CV 93.2%
against 90.7% on test, while `global`'s CV is below its test accuracy). Every choice
made by that CV between methods with different amounts of such leakage (a fusion's
weight, settings) leans to the parts. Here fold ``j``'s parts are learnt (background
included) on the other folds' images only, exactly as the ``parts`` stage learns them,
and every training image is encoded by them: the fold's own images as the test images
are, the others leave-one-out as in ``encoding``. The classifier's CV then fits and
scores fold ``j`` on these codes (``classify.fit_svm(fold_x=...)``); its final models
stay on ``encoding``'s codes. Each fold is a shard: an interrupted run resumes.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..classify import cv_splits, method_blocks
from .._progress import progress
from .._validation import DataError
from ._base import Stage
from .encoding import encoder, image_regions
from .parts import learner

logger = logging.getLogger(__name__)


def splits(ctx) -> list:
    """The classifier's CV folds over the training images (``classify.cv_splits``)."""
    data = ctx.get("dataset")
    return cv_splits(data.manifest.label[data.train], ctx.cfg.classifier.cv_folds,
                     ctx.cfg.seed)


def compute(ctx, w) -> None:
    data, feats = ctx.get("dataset"), ctx.get("features")
    m, train = data.manifest, data.train
    y = m.label[train]
    folds = splits(ctx)
    todo = [j for j in range(len(folds)) if not w.shard_done(j)]
    if len(todo) < len(folds):
        logger.info("encoding_cv: %d of %d folds already done, resuming",
                    len(folds) - len(todo), len(folds))
    t0 = time.perf_counter()
    X, boxes = feats.images(train), feats.image_boxes(train)
    images = image_regions(data, feats, train)  # once: n_train views, not n_train x N
    logger.info("encoding_cv: %d training images' views in %.1f s; %d fold(s) to learn",
                len(train), time.perf_counter() - t0, len(todo))
    for j in progress(todo, desc="encoding_cv", unit="fold"):
        t0 = time.perf_counter()
        tr, te = folds[j]
        fitted = learner(ctx.cfg).fit([X[i] for i in tr], y[tr], boxes=[boxes[i] for i in tr],
                                      class_names=list(m.classes), backend=ctx.backend)
        enc = encoder(ctx, fitted).fit()
        codes = enc.codes(images, train=tr)  # tr: the learner's images, in its order
        w.save_shard(j, {"codes": codes.astype(np.float32)})
        logger.info("encoding_cv: fold %d of %d: parts on %d images, %d held out, %d parts, "
                    "%.1f s", j + 1, len(folds), len(tr), len(te), len(fitted.parts_),
                    time.perf_counter() - t0)
    w.meta.update(n_shards=len(folds), n_train=len(train),
                  folds=[te.tolist() for _, te in folds])


def load(ctx, entry) -> list[np.ndarray]:
    """Per fold, ``(n_train, d_j)`` float32: the training images' codes by that fold's
    parts, in the order of the dataset's training images."""
    return [entry.shard_array(j, "codes") for j in range(entry.n_shards)]


def check_folds(ctx) -> None:
    """Each fold's parts are learnt without that fold's images: every class needs
    ``parts.min_images`` training images in every fold's remaining images, not only in
    the whole training split (the ``parts`` stage's check). The classifier's check calls
    it (the folds are the classifier's), after the dataset stage, before the features."""
    data = ctx.get("dataset")
    m = data.manifest
    y = m.label[data.train]
    need = ctx.cfg.parts.min_images
    for j, (tr, _) in enumerate(splits(ctx)):
        counts = np.bincount(y[tr], minlength=len(m.classes))
        low = np.flatnonzero(counts < need)
        if len(low):
            c = int(low[0])
            total = int((y == c).sum())
            raise DataError(
                f"the dataset at {m.root}: class {m.classes[c]!r} has {total} training images, "
                f"and with classifier.cv_parts each of the {len(splits(ctx))} CV folds learns "
                f"parts without its own images: fold {j + 1} leaves {int(counts[c])}, fewer "
                f"than parts.min_images={need} ({len(low)} class(es) short); add training "
                "images, lower parts.min_images or classifier.cv_folds, set "
                "classifier.cv_parts = false, or leave such classes out with data.classes")


def applies(cfg) -> bool:
    """A classifier method reads supervised part codes (a retrieval descriptor or a
    transfer method that does is no reason to relearn the parts per fold)."""
    return (cfg.classifier.cv_parts and not cfg.transfer.parts_from  # no fold reached those
            and any("parts" in method_blocks(m) for m in cfg.classifier.methods))


# the folds depend on the training labels, classifier.cv_folds and seed only
STAGE = Stage(
    name="encoding_cv", version=1, inputs=("dataset", "features"),
    fields=("parts.*", "seed", "encoding.pyramid", "encoding.top_k", "encoding.flip_average",
            "encoding.leave_one_out", "classifier.cv_folds"),
    libs=("numpy", "scipy", "scikit-learn", "faiss-cpu", "faiss-gpu"),
    seeded=True, compute=compute, load=load, applies=applies)
