"""Interpretability scored as the part-prototype literature scores it, from CUB keypoints.

For every part model of a run (two-stage ``parts``, ``parts[unsup]``, the hierarchy's
group and class parts, each DP-Net variant's first seed) and, beside each, a control
of random boxes (each best box moved to a uniformly random place in its image, its size
kept: ``localization.random_boxes``), on the test images. A part is scored on the
test images of its *unit*: its class; for ``parts[unsup]`` its group (a test image's
group is the nearest group centroid of the training images' unit global descriptors);
for the hierarchy's group parts their group of classes. Only visible keypoints count.

Two boxes per part and image: ``best``, the part's highest-scoring region (ours), and
``peak``, Huang et al.'s box: a fixed 72x72 px box at 224 px, i.e. 72/224 of the image's
width and height, centred on the activation peak, clipped to the image. Our peak is the
centre of the best region (every pixel of the best region holds the part's maximum in
its heatmap, ``explain.part_heatmap``, so the peak is that plateau's centre); the
reference upsamples a 7x7 similarity map of a 224x224 resized image.

- ``consistency`` (Huang, Yang, Xu & Yang, ICCV 2023, "Evaluation and improvement of
  interpretability for self-explainable part-prototype networks", their EvalProtoPNet
  ``consistency``): a part is consistent when one same keypoint lies inside its box in
  at least 80% of its unit's test images; the score is the share of consistent parts.
- ``stability`` (same paper): per part, the share of its unit's images whose keypoint-hit
  vector (which keypoints its box holds) is unchanged when Gaussian noise (σ 0.2,
  clipped to ±0.25, in the backbone's normalised input units) is added to the image;
  the score is the mean over parts. ``stability`` below takes the two boxes' arrays.
- ``purity`` (Nauta et al., PIP-Net, CVPR 2023, its CUB evaluator ``eval_cub_csv``):
  per part, its ``PURITY_TOP_K`` best-scoring test images (any class), the box in each;
  keypoints merged left/right ("left eye", "right eye" -> "eye"); purity: the share of
  those boxes holding the merged keypoint most of them hold. The score: the mean, and
  the share of parts above 0.5. PIP-Net cuts a fixed patch around the peak; ``best``
  and ``peak`` here.
- ``duplicates``: per unit, pairs of its parts whose weight vectors have a cosine of at
  least ``DUPLICATE_COSINE``, or whose best boxes have a mean IoU over the unit's images
  of at least ``DUPLICATE_IOU``; ``duplicate_share``: such pairs over all pairs.
- ``coverage``: the share of a unit's test images' own regions that overlap (IoU >= 0.5)
  the best box of at least one of its parts; ``keypoint_coverage``: the share of the
  visible keypoints that lie in at least one of them.

- ``deletion`` (Petsiuk et al., RISE, BMVC 2018; ``_deletion``): for each part method with
  a classifier (``parts``, ``parts[unsup]``, ``parts[hier]``, each DP-Net variant), on a
  seeded sample of ``classifier.deletion_images`` test images, the predicted class's
  probability as the top part regions are filled with the mean pixel step by step,
  its area under the curve against random boxes of the same sizes; memoised. It needs
  no keypoints: on a dataset without them it is the evaluator's only score.

Per-unit values (``per_unit``) let runs be compared unit by unit (``paired_units``:
the constraint table of ``benchmarks/interpretability_constraints.py``).
"""

from __future__ import annotations

import re
import time

import numpy as np

from .._arrays import l2_normalize
from ..explain import PartModel
from . import _deletion
from ._base import EvalContext, Evaluator
from ._stats import paired_units
from .localization import contains, random_boxes

CONSISTENT = 0.8  # Huang et al.: a keypoint in >= 80% of the class's images
PEAK_FRACTION = 72 / 224  # Huang et al.: half_size 36 px at 224 px
PURITY_TOP_K = 10  # PIP-Net's top-k images per prototype
PURE = 0.5  # PIP-Net counts prototypes with purity > 0.5
DUPLICATE_COSINE = 0.95
DUPLICATE_IOU = 0.8
COVER_IOU = 0.5


def hits(boxes: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """``(n, P, K)``: box ``(i, p)`` of ``boxes`` ``(n, P, 4)`` holds visible keypoint ``k``
    of image ``i`` (``keypoints`` ``(n, K, 3)``, or ``(n, P, K, 3)`` when each box has
    its own image), by ``localization.contains``."""
    kp = np.asarray(keypoints, np.float32)
    return contains(boxes, kp[:, None] if kp.ndim == 3 else kp)


def peak_boxes(boxes: np.ndarray, sizes: np.ndarray, fraction: float = PEAK_FRACTION
               ) -> np.ndarray:
    """Huang et al.'s fixed box: ``fraction`` of the image's width and height, centred on
    each box's centre, clipped to the image (``sizes`` ``(n, 2)``; ``boxes`` ``(n, P, 4)``)."""
    b = np.asarray(boxes, np.float32)
    s = np.asarray(sizes, np.float32)[:, None, :]
    centre = (b[..., :2] + b[..., 2:]) / 2
    half = fraction * s / 2
    return np.concatenate([np.clip(centre - half, 0, None), np.minimum(centre + half, s)],
                          axis=-1)


def unit_consistency(unit_hits: np.ndarray) -> np.ndarray:
    """``(P,)``: per part, the largest share of the images whose box holds one same
    keypoint (``unit_hits`` ``(n, P, K)``: the unit's images, its parts)."""
    if not len(unit_hits):
        return np.full(unit_hits.shape[1], np.nan)
    return unit_hits.mean(axis=0).max(axis=1) if unit_hits.shape[2] else \
        np.zeros(unit_hits.shape[1])


def unit_stability(clean_hits: np.ndarray, noisy_hits: np.ndarray) -> np.ndarray:
    """``(P,)``: per part, the share of the images whose keypoint-hit vector is the same
    with and without noise (both ``(n, P, K)``)."""
    if not len(clean_hits):
        return np.full(clean_hits.shape[1], np.nan)
    return (clean_hits == noisy_hits).all(axis=2).mean(axis=0)


def merged_keypoints(names) -> tuple[np.ndarray, list[str]]:
    """``(K,)`` index of each keypoint's left/right-merged name, and those names."""
    merged = [re.sub(r"^(left|right)[ _]", "", str(n)) for n in names]
    order = list(dict.fromkeys(merged))
    return np.array([order.index(m) for m in merged], np.int64), order


def purity(scores: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray,
           groups: np.ndarray, k: int = PURITY_TOP_K) -> np.ndarray:
    """``(P,)``: per part, over its ``k`` best-scoring images (``scores`` ``(n, P)``), the
    share whose box (``boxes`` ``(n, P, 4)``) holds the merged keypoint (``groups``
    ``(K,)``: each keypoint's merged index) most of them hold."""
    n, p = scores.shape
    k = min(k, n)
    if k == 0:
        return np.full(p, np.nan)
    top = np.argsort(-scores, axis=0, kind="stable")[:k]  # (k, P)
    h = hits(boxes[top, np.arange(p)[None, :]], np.asarray(keypoints)[top])  # (k, P, K)
    g = np.stack([h[..., groups == j].any(axis=-1) for j in range(int(groups.max()) + 1)],
                 axis=-1) if len(groups) else np.zeros((k, p, 0), bool)
    return g.mean(axis=0).max(axis=1) if g.shape[2] else np.zeros(p)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(..., A, B)`` IoU of boxes ``a`` ``(..., A, 4)`` and ``b`` ``(..., B, 4)``."""
    a, b = a[..., :, None, :], b[..., None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih

    def area(x):
        return np.clip(x[..., 2] - x[..., 0], 0, None) * np.clip(x[..., 3] - x[..., 1], 0, None)

    return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


def duplicate_pairs(weights: np.ndarray, unit_boxes: np.ndarray,
                    cosine: float = DUPLICATE_COSINE, iou: float = DUPLICATE_IOU) -> dict:
    """Pairs of one unit's parts that are near-identical: ``weights`` ``(P, D)``, their
    best boxes ``unit_boxes`` ``(n, P, 4)`` in the unit's images. ``by_weights``: pairs
    with a cosine >= ``cosine``; ``by_boxes``: mean IoU over the images >= ``iou``;
    ``either``; ``pairs``: all pairs."""
    p = len(weights)
    upper = np.triu(np.ones((p, p), bool), 1)
    w = l2_normalize(np.asarray(weights, np.float32), axis=1)
    same_w = (w @ w.T >= cosine) & upper
    same_b = ((box_iou(unit_boxes, unit_boxes).mean(axis=0) >= iou) & upper
              if len(unit_boxes) else np.zeros_like(upper))
    return {"by_weights": int(same_w.sum()), "by_boxes": int(same_b.sum()),
            "either": int((same_w | same_b).sum()), "pairs": int(upper.sum())}


def coverage(region_boxes: list[np.ndarray], unit_boxes: np.ndarray,
             min_iou: float = COVER_IOU) -> float:
    """The share of the regions of the unit's images (``region_boxes``: one ``(R_i, 4)``
    per image) with IoU >= ``min_iou`` with a best box of one of its parts
    (``unit_boxes`` ``(n, P, 4)``)."""
    covered = [(box_iou(r, b) >= min_iou).any(axis=1) for r, b in zip(region_boxes, unit_boxes)]
    return float(np.concatenate(covered).mean()) if covered else float("nan")


def score_parts(boxes: np.ndarray, scores: np.ndarray, weights: np.ndarray,
                part_unit: np.ndarray, image_unit: np.ndarray, keypoints: np.ndarray,
                keypoint_names, sizes: np.ndarray, region_boxes=None,
                noisy_boxes: np.ndarray | None = None, seed: int = 0) -> dict:
    """Every score of one part model on the test images, and of its random-box control.

    ``boxes`` ``(n, P, 4)``, ``scores`` ``(n, P)``: each part's best region and its score
    in each test image; ``weights`` ``(P, D)``; ``part_unit`` ``(P,)`` and ``image_unit``
    ``(n,)``: a part is scored on its unit's images; ``keypoints`` ``(n, K, 3)``; ``sizes``
    ``(n, 2)``; ``region_boxes``: each image's own regions (for ``coverage``, else
    skipped); ``noisy_boxes``: the best boxes in the noisy images (for ``stability``).
    Returns the scores (means over parts or units), ``random`` the same of the control,
    and ``per_unit`` (lists by unit) for paired comparisons."""
    rng = np.random.default_rng(seed)
    n, p = scores.shape
    part_unit, image_unit = np.asarray(part_unit), np.asarray(image_unit)
    control = random_boxes(boxes.reshape(n * p, 4), np.repeat(sizes, p, axis=0),
                           rng).reshape(n, p, 4)
    groups, _ = merged_keypoints(keypoint_names)
    keypoints = np.asarray(keypoints, np.float32)
    out = {}
    for name, b in (("best", boxes), ("random", control)):
        peak = peak_boxes(b, sizes)
        noisy = noisy_boxes if name == "best" else None  # the control has no noisy copy
        cons = {"best": np.full(p, np.nan), "peak": np.full(p, np.nan)}
        stab = np.full(p, np.nan)
        rows = {k: [] for k in ("unit", "consistency", "consistency_peak", "purity",
                                "duplicates", "coverage", "keypoint_coverage", "stability")}
        pur, pur_peak = purity(scores, b, keypoints, groups), purity(scores, peak, keypoints,
                                                                      groups)
        dup_total = {"by_weights": 0, "by_boxes": 0, "either": 0, "pairs": 0}
        for u in np.unique(part_unit):
            parts, images = np.flatnonzero(part_unit == u), np.flatnonzero(image_unit == u)
            cell = np.ix_(images, parts)
            ub, kp = b[cell], keypoints[images]
            h = hits(ub, kp)  # (n_u, P_u, K)
            cons["best"][parts] = unit_consistency(h)
            cons["peak"][parts] = unit_consistency(hits(peak[cell], kp))
            if noisy is not None:
                stab[parts] = unit_stability(h, hits(noisy[cell], kp))
            dup = duplicate_pairs(weights[parts], ub)
            dup_total = {k: dup_total[k] + dup[k] for k in dup}
            visible = kp[..., 2] > 0
            rows["unit"].append(int(u))
            for key, c in (("consistency", cons["best"]), ("consistency_peak", cons["peak"])):
                rows[key].append(float((c[parts] >= CONSISTENT).mean()) if len(images)
                                 else None)
            rows["purity"].append(float(pur[parts].mean()))
            rows["duplicates"].append(dup["either"])
            rows["coverage"].append(coverage([region_boxes[i] for i in images], ub)
                                    if region_boxes is not None and len(images) else None)
            rows["keypoint_coverage"].append(float(h.any(axis=1)[visible].mean())
                                             if visible.any() else None)
            rows["stability"].append(float(stab[parts].mean())
                                     if noisy is not None and len(images) else None)
        scored = ~np.isnan(cons["best"])

        def mean(key):
            v = [x for x in rows[key] if x is not None]
            return float(np.mean(v)) if v else None

        out[name] = {
            "consistency": float((cons["best"][scored] >= CONSISTENT).mean()),
            "consistency_peak": float((cons["peak"][scored] >= CONSISTENT).mean()),
            "mean_keypoint_frequency": float(cons["best"][scored].mean()),
            "purity": float(np.nanmean(pur)), "purity_peak": float(np.nanmean(pur_peak)),
            "pure_parts": int((pur > PURE).sum()), "pure_parts_peak": int((pur_peak > PURE).sum()),
            "duplicates": dup_total,
            "duplicate_share": dup_total["either"] / max(dup_total["pairs"], 1),
            "coverage": mean("coverage"), "keypoint_coverage": mean("keypoint_coverage"),
            "stability": float(np.nanmean(stab)) if noisy is not None else None,
            "per_unit": rows}
    best = out.pop("best")
    return best | {"n_parts": p, "random": out["random"]}


# ---- the evaluator


def test_groups(ctx: EvalContext) -> np.ndarray:
    """Each test image's unsupervised group: the nearest centroid (cosine) of the groups'
    training images' unit global descriptors, as the ``groups`` stage clusters them."""
    data = ctx.data
    feats = ctx.load(ctx.pipe.features_stage)
    group = np.asarray(ctx.load("groups"))
    train = l2_normalize(np.asarray(feats.global_[data.train], np.float32), axis=1)
    centroids = l2_normalize(np.stack([train[group == g].mean(axis=0)
                                       for g in range(group.max() + 1)]), axis=1)
    test = l2_normalize(np.asarray(feats.global_[ctx.test], np.float32), axis=1)
    return np.argmax(test @ centroids.T, axis=1)


def models_and_units(ctx: EvalContext) -> dict[str, tuple[PartModel, np.ndarray]]:
    """``{name: (part model, each test image's unit)}`` of every part model of the run."""
    label = ctx.data.manifest.label[ctx.test]
    out = {name: (p, label) for name, p in ctx.part_models().items()}
    if ctx.has("parts_unsup"):
        out["parts[unsup]"] = (PartModel.of_learner(ctx.load("parts_unsup")), test_groups(ctx))
    if ctx.has("parts_group"):
        class_group = ctx.load("hierarchy").class_group
        out["parts[hier] group"] = (PartModel.of_learner(ctx.load("parts_group")),
                                    np.asarray(class_group)[label])
        out["parts[hier] class"] = (PartModel.of_learner(ctx.load("parts_class")), label)
    return out


def keypoint_reason(ctx: EvalContext) -> str | None:
    """Why the keypoint scores do not apply (None: they do)."""
    if ctx.data.manifest.keypoints is None:
        return "the dataset has no keypoints"
    if not ctx.part_models() and not ctx.has("parts_unsup") and not ctx.has("parts_group"):
        return "the run has no part model"
    return None


def applies(ctx: EvalContext) -> str | None:
    reason = keypoint_reason(ctx)
    if reason is None:
        return None
    other = _deletion.applies(ctx)
    return None if other is None else f"{reason}; deletion: {other}"


def keypoint_scores(ctx: EvalContext) -> tuple[dict, dict]:
    """Every keypoint score of every part model (``score_parts``), and the timings."""
    start = time.perf_counter()
    data, test = ctx.data, ctx.test
    m = data.manifest
    sizes = np.stack([data.width[test], data.height[test]], axis=1)
    models = models_and_units(ctx)
    best = dict(ctx.best_regions())
    extra = {n: p for n, (p, _) in models.items() if n not in best}
    best |= ctx.best_regions_of(extra) if extra else {}
    feats = ctx.load(ctx.pipe.features_stage)
    regions = [feats.own_boxes(i) for i in test]
    timings = {"interpretability_best_regions_s": round(time.perf_counter() - start, 2)}
    noisy, noise = {}, ctx.cfg.classifier.stability_noise
    if noise:
        t0 = time.perf_counter()
        perturbed = ctx.perturbed_features(noise)
        timings["interpretability_perturbed_features_s"] = round(time.perf_counter() - t0, 2)
        noisy = ctx.best_regions_of({n: p for n, (p, _) in models.items()}, perturbed)
    out = {name: score_parts(best[name][0], best[name][1], np.asarray(p.weights),
                             p.part_class, unit, m.keypoints[test], m.keypoint_names, sizes,
                             regions, noisy[name][0] if noisy else None, seed=ctx.cfg.seed)
           for name, (p, unit) in models.items()}
    runs = {n: r for n, r in out.items() if n.startswith("dpnet")}
    if "dpnet" in runs and len(runs) > 1:  # each DP-Net constraint set against none
        out["constraints"] = constraint_table(runs, "dpnet")
    return out, timings


def run(ctx: EvalContext) -> dict:
    start = time.perf_counter()
    out, timings = {}, {}
    reason = keypoint_reason(ctx)
    if reason is None:
        out, timings = keypoint_scores(ctx)
        noise = ctx.cfg.classifier.stability_noise
        about = ABOUT | {"stability": ABOUT["stability"].format(noise) if noise else
                         "not computed (classifier.stability_noise = 0)"}
    else:
        about = {"keypoint scores": f"not computed ({reason})"}
    deletion_reason = _deletion.applies(ctx)
    if deletion_reason is None:
        t0 = time.perf_counter()
        for method, found in _deletion.deletion(ctx).items():
            out.setdefault(method, {})["deletion"] = found
        timings["interpretability_deletion_s"] = round(time.perf_counter() - t0, 2)
    about["deletion"] = (_deletion.ABOUT if deletion_reason is None
                         else f"not computed ({deletion_reason})")
    out["about"] = about
    timings["interpretability_s"] = round(time.perf_counter() - start, 2)
    return {"interpretability": out, "timings": timings}


ABOUT = {
    "consistency": "share of parts for which one same keypoint lies in the part's best region "
                   "in >= 80% of its class's test images (Huang et al., ICCV 2023, "
                   "'Evaluation and improvement of interpretability for self-explainable "
                   "part-prototype networks'; their box: a fixed 72x72 px box at 224 px "
                   "around the activation peak)",
    "consistency_peak": "the same with Huang et al.'s box: 72/224 of the image's width and "
                        "height, centred on the best region's centre (the peak of the part's "
                        "heatmap), clipped to the image",
    "stability": "mean over parts of the share of their class's test images whose keypoint-hit "
                 "vector (best region) is unchanged under Gaussian noise (sigma {}, clipped "
                 "at 1.25 sigma, normalised input units; Huang et al.: 0.2, 0.25)",
    "purity": "mean over parts of the share of its 10 best-scoring test images whose best "
              "region holds the merged (left/right) keypoint most of them hold (PIP-Net, "
              "Nauta et al., CVPR 2023, its CUB evaluator; theirs: a fixed patch around the "
              "peak); pure parts: how many exceed 0.5",
    "duplicates": f"pairs of a class's parts with weight cosine >= {DUPLICATE_COSINE} or mean "
                  f"best-box IoU over the class's test images >= {DUPLICATE_IOU}",
    "coverage": f"share of a class's test images' regions with IoU >= {COVER_IOU} with a "
                "best region of one of its parts; keypoint coverage: share of the visible "
                "keypoints inside one",
    "random": "control: each best region moved to a uniformly random place in its image, "
              "its size kept",
    "unit": "a part is scored on its class's test images; parts[unsup]: its group's (a test "
            "image's group: the nearest group centroid of the global descriptors); the "
            "hierarchy's group parts: their group of classes'",
}

TABLE_SCORES = ("consistency", "consistency_peak", "purity", "duplicates", "coverage",
                "keypoint_coverage", "stability")


def constraint_table(results: dict, baseline: str, seed: int = 0) -> dict:
    """``{setting: {score: paired_units(setting, baseline)}}`` for every setting of
    ``results`` (``score_parts`` outputs on the same units) other than ``baseline``."""
    base = results[baseline]["per_unit"]
    table = {}
    for name, r in results.items():
        if name == baseline or r["per_unit"]["unit"] != base["unit"]:
            continue
        table[name] = {s: paired_units(r["per_unit"][s], base[s], seed=seed)
                       for s in TABLE_SCORES}
    return {"baseline": baseline, "unit": "class", "rows": table}


EVALUATOR = Evaluator(name="interpretability", needs=("classifier",), run=run, applies=applies)
