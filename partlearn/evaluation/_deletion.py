"""Deletion (Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of
Black-box Models", BMVC 2018), for the interpretability evaluator.

For a test image and a part method: the parts are ranked by what they add to the score
of the image's predicted class (two-stage methods: the part's code values times the
SVM's weights, summed over the code's cells; DP-Net: its bag-of-parts value times its
classifier's weight), and the best own regions of the top ``STEPS`` parts (distinct
boxes, highest first) are filled, one more at each step, with the backbone's mean pixel
(0 after its normalisation, up to 8-bit rounding). Every modified image's features are
extracted again as the run extracts its test images (``partlearn.model``: the same
regions, pyramid and backbone) and scored by the method. The curve: the predicted
class's probability (the softmax of the class scores: DP-Net's own output, for the
one-vs-rest SVMs a monotone proxy of their scores) against the fraction of the image's
area removed so far, from the intact image (0) to the image filled whole (1); its area
is the deletion AUC (lower: the ranked regions carry the decision). The control: the
same boxes at uniformly random places in the image (``localization.random_boxes``,
seeded per image), removed in the same steps.

Unlike RISE, which removes pixels by a saliency map until none is left, the steps here
are whole part regions, at most ``STEPS`` of them, and the curve is drawn straight from
the last step to the image filled whole.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, NamedTuple

import numpy as np

from .._progress import progress
from ._base import EvalContext, keep_value, recall
from ._stats import paired_units
from .localization import random_boxes

logger = logging.getLogger(__name__)

STEPS = 5  # part regions removed, one more per step
METHODS = ("parts", "parts[unsup]", "parts[hier]")  # one code block, a linear SVM over it


class Scorer(NamedTuple):
    """A method as deletion sees it: ``scores(feats)`` ``(n, C)`` class scores of
    ``ImageFeatures``; ``ranked(f)``: the predicted class (a column of ``scores``) of one
    image and its part regions ``(k, 4)``, the part that adds most to that score first."""

    scores: Callable
    ranked: Callable


def box_mask(boxes, size) -> np.ndarray:
    """``(height, width)``: the pixels inside any of ``boxes`` ``(k, 4)`` (x0, y0, x1, y1)
    in an image of ``size`` (width, height): columns ``floor(x0)`` to ``ceil(x1) - 1``."""
    w, h = size
    mask = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in np.asarray(boxes, np.float64).reshape(-1, 4):
        mask[max(int(np.floor(y0)), 0):min(int(np.ceil(y1)), h),
             max(int(np.floor(x0)), 0):min(int(np.ceil(x1)), w)] = True
    return mask


def deleted(image, boxes, fill) -> tuple[list, np.ndarray]:
    """The images with the first 1, 2, ... of ``boxes`` filled with the colour ``fill``,
    and the fraction of the image's area each has lost."""
    from PIL import Image

    pixels = np.array(image.convert("RGB"))
    mask = np.zeros(pixels.shape[:2], bool)
    out, area = [], []
    for b in np.asarray(boxes).reshape(-1, 4):
        mask |= box_mask(b[None], image.size)
        pixels[mask] = fill
        out.append(Image.fromarray(pixels.copy()))
        area.append(mask.mean())
    return out, np.array(area, np.float64)


def auc(x, y) -> float:
    """The area under the curve ``y(x)`` (trapezoids)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def softmax(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, np.float64)
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def distinct(boxes: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` distinct rows of ``boxes`` (in order); the last one repeated when
    there are fewer, so that every curve has ``k`` steps."""
    seen = []
    for b in np.asarray(boxes, np.float32):
        if not any(np.array_equal(b, s) for s in seen):
            seen.append(b)
        if len(seen) == k:
            break
    return np.stack(seen + [seen[-1]] * (k - len(seen)))


def image_curves(image, base, scorers: dict, features_of, fill, rng,
                 steps: int = STEPS) -> dict:
    """The deletion curves of one image for every method of ``scorers``: ``base`` its
    features (``ImageFeatures``), ``features_of(pils)`` those of modified images (one
    call for every method and step). ``{method: {"area", "probability", "score"} and
    the same with ``_random``}``, each a list of ``steps + 2`` values (intact image, each
    step, the image filled whole)."""
    from PIL import Image

    plan, pils = {}, [Image.new("RGB", image.size, tuple(int(v) for v in fill))]
    size = np.array([image.size], np.float32)
    for name, scorer in scorers.items():
        col, boxes = scorer.ranked(base)
        boxes = distinct(boxes, steps)
        control = random_boxes(boxes, np.repeat(size, len(boxes), axis=0), rng)
        at = len(pils)
        a_parts, a_random = [], []
        for b, areas in ((boxes, a_parts), (control, a_random)):
            imgs, area = deleted(image, b, fill)
            pils += imgs
            areas += area.tolist()
        plan[name] = (col, at, a_parts, a_random)
    feats = features_of(pils)
    out = {}
    for name, (col, at, a_parts, a_random) in plan.items():
        s = scorers[name].scores([base, *feats[at:at + 2 * steps], feats[0]])
        p = softmax(s)[:, col]
        s = np.asarray(s, np.float64)[:, col]
        for suffix, rows, area in (("", slice(1, steps + 1), a_parts),
                                   ("_random", slice(steps + 1, 2 * steps + 1), a_random)):
            keep = np.r_[0, np.arange(rows.start, rows.stop), len(s) - 1]
            out.setdefault(name, {}).update({
                f"area{suffix}": [0.0, *area, 1.0],
                f"probability{suffix}": p[keep].tolist(), f"score{suffix}": s[keep].tolist()})
    return out


def summary(curves: list[dict], seed: int = 0) -> dict:
    """One method's deletion result from its per-image curves (``image_curves``): the
    mean AUC of the part regions and of the random boxes, their paired difference
    (parts minus random, 95% bootstrap interval over the images), the mean curves."""
    aucs = {k: [auc(c[f"area{k}"], c[f"probability{k}"]) for c in curves]
            for k in ("", "_random")}
    mean = {key: np.mean([c[key] for c in curves], axis=0).tolist()
            for key in curves[0]}
    return {"images": len(curves), "steps": len(curves[0]["area"]) - 2,
            "auc": float(np.mean(aucs[""])), "auc_random": float(np.mean(aucs["_random"])),
            "difference": paired_units(aucs[""], aucs["_random"], seed=seed),
            "curve": {k: mean[k] for k in ("area", "probability", "score")},
            "curve_random": {k: mean[f"{k}_random"] for k in ("area", "probability", "score")},
            "per_image": {"auc": aucs[""], "auc_random": aucs["_random"]}}


# ---- the run's methods as scorers


def svm_scorer(model, method: str) -> Scorer:
    """A two-stage method of a ``PartlearnModel`` (one code block, its linear SVM)."""
    from ..classify import method_blocks

    block, = method_blocks(method)
    svm = model.methods[method]
    row_of = {int(c): r for r, c in enumerate(np.asarray(svm.classes))}
    sets = [parts for parts, _ in model.blocks[block]]
    n_parts = sum(len(p.weights) for p in sets)

    def scores(feats):
        return model.class_scores(model.scores_of(feats, method), method)

    def ranked(f):
        col = int(scores([f])[0].argmax())
        add = (model.codes_of([f], block)[0] * svm.coef[row_of[col]]).reshape(-1, n_parts)
        own = ~np.asarray(f.flips, bool)
        x, boxes = np.asarray(f.regions, np.float32)[own], np.asarray(f.boxes)[own]
        best = np.concatenate([boxes[p.responses(x).argmax(axis=0)] for p in sets])
        return col, best[np.argsort(-add.sum(axis=0), kind="stable")]

    return Scorer(scores, ranked)


def dpnet_scorer(dp: dict) -> Scorer:
    """A DP-Net model (``partlearn.dpnet``'s form): its logits on the image's regions."""
    from ..dpnet import predict_scores
    from ..explain import PartModel

    parts = PartModel.of_dpnet(dp)

    def scores(feats):
        return predict_scores(dp, [np.asarray(f.regions) for f in feats])

    def ranked(f):
        col = int(scores([f])[0].argmax())
        add = np.asarray(dp["V"])[col] * parts.responses(f.regions).max(axis=0)
        own = ~np.asarray(f.flips, bool)
        best = np.asarray(f.boxes)[own][parts.responses(
            np.asarray(f.regions)[own]).argmax(axis=0)]
        return col, best[np.argsort(-add, kind="stable")]

    return Scorer(scores, ranked)


def methods(ctx: EvalContext) -> list[str]:
    """The run's methods deletion scores: its two-stage part methods, each DP-Net variant
    (its first seed)."""
    from ..stages.dpnet import method_name

    return ([m for m in METHODS if m in ctx.cfg.classifier.methods]
            + [method_name(v) for v in ctx.dpnet_runs()])


def applies(ctx: EvalContext) -> str | None:
    if not ctx.cfg.classifier.deletion_images:
        return "classifier.deletion_images = 0"
    if ctx.cfg.features.pca_dim:
        return "features.pca_dim > 0 (new images' features are not computed with it yet)"
    if not ctx.cfg.classifier.methods:
        return "the run has no classifier.methods"
    if not methods(ctx):
        return f"the run has no part method ({', '.join(METHODS)}, DP-Net)"
    return None


def sample(ctx: EvalContext) -> np.ndarray:
    """The test images deletion runs on: ``classifier.deletion_images`` of them, drawn
    with the run's seed, in the test split's order."""
    test = ctx.test
    n = min(ctx.cfg.classifier.deletion_images, len(test))
    pick = np.random.default_rng(ctx.cfg.seed).choice(len(test), n, replace=False)
    return test[np.sort(pick)]


def deletion(ctx: EvalContext) -> dict:
    """``{method: summary}`` for every method of ``methods(ctx)``, from the memo when this
    run's images, features, classifiers and DP-Net models were scored before."""
    # not the package: its run-directory loader imports the runner, which runs evaluators
    from ..model._export import gather
    from ..model._model import PartlearnModel
    from ..stages.dpnet import method_name

    names, images = methods(ctx), sample(ctx)
    pipe = ctx.pipe
    what = {"version": 1, "methods": names, "images": images.tolist(), "steps": STEPS,
            "seed": ctx.cfg.seed, "classifier": pipe.key("classifier"),
            "dpnet": pipe.key("dpnet") if ctx.has("dpnet") else None}
    memo = ctx.memo("deletion", what)
    curves = recall(memo)
    if curves is None:
        start = time.perf_counter()
        model = PartlearnModel(*gather(pipe), "the run", n_jobs=ctx.cfg.n_jobs)
        fill = np.round(255 * np.asarray(model.backbone.mean)).astype(np.uint8)
        scorers = {m: svm_scorer(model, m) for m in names if m in METHODS}
        scorers |= {method_name(v): dpnet_scorer(ctx.load("dpnet").model(v))
                    for v in ctx.dpnet_runs()}
        feats = ctx.load(pipe.features_stage)
        data = ctx.data
        curves = {m: [] for m in names}
        for i in progress(images, desc="deletion", unit="img"):
            image = data.image(int(i))
            found = image_curves(image, image_features(feats, int(i), image.size), scorers,
                                 model.features_of, fill,
                                 np.random.default_rng([ctx.cfg.seed, int(i)]))
            for m in names:
                curves[m].append(found[m])
        keep_value(curves, memo, ctx.memo_needs)
        logger.info("deletion: %d images x %d methods, %d images extracted, in %.1fs",
                    len(images), len(names), len(images) * (1 + 2 * STEPS * len(names)),
                    time.perf_counter() - start)
    else:
        logger.info("deletion: %d images x %d methods, from the memo %s", len(images),
                    len(names), memo.name)
    return {m: summary(c, ctx.cfg.seed) | {"method": m} for m, c in curves.items()}


def image_features(feats, i: int, size):
    """Image ``i``'s cached features (``RegionFeatures``; ``size``: the image's width and
    height) as ``ImageFeatures``: what ``PartlearnModel.features_of`` computes for it."""
    from ..stages.multiscale import ImageFeatures

    rows = slice(feats.offsets[i], feats.offsets[i + 1])
    box = np.asarray(feats.boxes[rows])
    flip = None if feats.global_flip is None else feats.global_flip[i]
    return ImageFeatures(feats.image(i), box, np.asarray(feats.flips[rows]), tuple(size),
                         feats.global_[i], flip)


ABOUT = ("the predicted class's probability (softmax of the class scores) as the image's "
         f"top part regions are filled with the backbone's mean pixel, {STEPS} steps (one "
         "more region each: the parts that add most to the class's score, code value x "
         "classifier weight), against the fraction of the image's area removed, from the "
         "intact image to the image filled whole; AUC: the area under that curve (lower: "
         "the regions carry the decision); random: the same boxes at random places, "
         "removed in the same steps; difference: parts minus random, 95% bootstrap "
         "interval over the images (Petsiuk et al., RISE, BMVC 2018, 'deletion': theirs "
         "removes pixels by a saliency map until none is left; ours removes whole part "
         "regions and draws the curve straight from the last step to the filled image)")
