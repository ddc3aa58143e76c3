"""``parts``: every class's discriminative parts, by ``partlearn.parts.PartLearner``.

The learner is fitted on the training images' cached region features, exactly as
a user would call it; the stage only stores what it reports: the background
model first, then each class as its own shard as soon as it is learnt, so an
interrupted run keeps the background and the classes it finished. Its value is
the fitted ``PartLearner``, rebuilt from the stored arrays.
"""

from __future__ import annotations

import logging

import numpy as np

from ..cache import human_size
from ..classify import uses
from .._arrays import indices_by_label
from .._validation import DataError
from ..parts import PartLearner
from ._base import Stage

logger = logging.getLogger(__name__)

#: the arrays of ``learn_class_parts``'s result a shard keeps (the others are scalars)
_ARRAYS = ("weights", "bias", "directions", "loo_directions", "discriminativeness",
           "matches", "match_scores", "kept", "objective", "n_updates", "beta_final",
           "mean_abs_cos", "kmeans_objective", "n_positives", "n_negatives")


def learner(cfg) -> PartLearner:
    """The unfitted learner a config asks for."""
    return PartLearner.from_config(cfg.parts, random_state=cfg.seed, n_jobs=cfg.n_jobs)


def _stored(entry_or_writer, shard: int) -> dict:
    return {name: np.asarray(entry_or_writer.shard_array(shard, name)) for name in _ARRAYS}


def learn(ctx, w, labels: np.ndarray, names: list[str], regions=None, **fit) -> None:
    """Fit the learner on the training images with these ``labels`` (classes, or the
    unsupervised groups), each class a shard, resuming the ones already stored;
    ``regions``: ``(X, boxes)``, the training images' regions to learn from (default:
    all of them); ``fit``: ``PartLearner.fit``'s ``negatives`` and ``class_n_parts``
    (hierarchical parts)."""
    data, feats = ctx.get("dataset"), ctx.get("features")
    train = data.train
    background = None
    if w.has("background_mean.npy"):
        background = {"mean": w.array("background_mean"),
                      "whitener": w.array("background_whitener")}
    done = {c: _stored(w, c) for c in range(len(names)) if w.shard_done(c)}
    if done:
        logger.info("%s: %d of %d classes already learnt, resuming", ctx.stage.name, len(done),
                    len(names))

    def on_background(bg):
        for name, array in bg.items():
            w.save_array(f"background_{name}", array)

    def on_class(k, parts, seconds):
        w.save_shard(k, {name: parts[name] for name in _ARRAYS})
        logger.info("%s: %s: %d parts, mean AP %.3f, mean |cos| %.3f, %d updates, %.1f s",
                    ctx.stage.name, names[k], len(parts["weights"]),
                    parts["discriminativeness"].mean(), float(parts["mean_abs_cos"]),
                    int(parts["n_updates"]), seconds)

    counts = np.bincount(labels, minlength=len(names))
    if counts.min() < 1:  # the learner sees the classes of its labels only: say it here
        c = int(counts.argmin())
        raise DataError(f"class {names[c]!r} has 0 training images; part learning needs "
                        f"at least parts.min_images={ctx.cfg.parts.min_images}")
    X, boxes = regions or (feats.images(train), feats.image_boxes(train))
    logger.info("%s: %d training images, %s of region features", ctx.stage.name, len(X),
                human_size(sum(x.nbytes for x in X)))
    learner(ctx.cfg).fit(X, labels, boxes=boxes, class_names=names,
                         background=background, class_results=done,
                         on_background=on_background, on_class=on_class, backend=ctx.backend,
                         **fit)
    w.meta.update(n_shards=len(names), classes=list(names))


def compute(ctx, w) -> None:
    data = ctx.get("dataset")
    learn(ctx, w, data.manifest.label[data.train], list(data.manifest.classes))


def rebuild(ctx, entry, labels: np.ndarray) -> PartLearner:
    """The fitted learner of an entry, whose training images had ``labels``."""
    classes = np.arange(entry.n_shards)
    return PartLearner.from_results(
        learner(ctx.cfg).get_params(), classes=classes,
        background={"mean": entry.array("background_mean", mmap=False),
                    "whitener": entry.array("background_whitener", mmap=False)},
        class_results=[_stored(entry, c) for c in classes],
        positive_images=indices_by_label(labels, len(classes)),
        n_features=int(entry.array("background_mean").shape[0]))


def load(ctx, entry) -> PartLearner:
    data = ctx.get("dataset")
    return rebuild(ctx, entry, data.manifest.label[data.train])


def check_classes(m, labels, min_images: int, what: str) -> None:
    """Every class has training images (at least ``min_images``), and there are two."""
    counts = np.bincount(labels, minlength=len(m.classes))
    for low, need in ((counts < 1, "no training images"),
                      (counts < min_images, f"fewer training images than "
                                            f"parts.min_images={min_images}")):
        if low.any():
            names = [f"{m.classes[c]} ({counts[c]})" for c in np.flatnonzero(low)]
            raise DataError(f"the dataset at {m.root}: {len(names)} class(es) have {need}: "
                            f"{', '.join(names[:10])}{', ...' if len(names) > 10 else ''}; "
                            f"{what} needs them (leave such classes out with data.classes)")
    if len(m.classes) < 2:
        raise DataError(f"the dataset at {m.root} has {len(m.classes)} class: {what} needs at "
                        "least 2 (each class's parts are told from the others' images)")


def check(ctx) -> None:
    data = ctx.get("dataset")
    check_classes(data.manifest, data.manifest.label[data.train], ctx.cfg.parts.min_images,
                  "supervised part learning")


def uses_parts(cfg) -> bool:
    return uses(cfg, "parts") or cfg.dpnet.init_from_parts


# n_jobs: threads over classes, each class seeded on its own: not in the key
STAGE = Stage(
    name="parts", version=4, inputs=("dataset", "features"),
    fields=("parts.*", "seed"),
    libs=("numpy", "scipy", "scikit-learn", "faiss-cpu", "faiss-gpu"),
    seeded=True, compute=compute, load=load, applies=uses_parts, check=check)
