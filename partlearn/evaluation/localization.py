"""Are the parts real parts? A localisation score from annotated keypoints.

For a part and the test images of its class: the part's *best box* in each
image is its highest-scoring region. ``keypoint_consistency`` is how often that
box contains one and the same keypoint (the keypoint it contains most often):
1 when a part always lands on, say, the beak; low for a part that fires on
background or anywhere. ``inside_object`` is the fraction of best boxes lying
mostly (at least half their area) inside the object's bounding box. The
control is the same boxes moved to uniformly random positions in their images
(``random_boxes``): same sizes, no content. Only visible keypoints count.

The ``localization`` evaluator applies them to every part model's best boxes in the
test images, from the dataset's annotated keypoints (CUB).
"""

from __future__ import annotations

import numpy as np

from ._base import EvalContext, Evaluator





def contains(boxes: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """``(n, K)``: box ``i`` ``(x0, y0, x1, y1)`` holds visible keypoint ``k`` of image ``i``
    (``keypoints`` ``(n, K, 3)``: x, y, visible). Leading dimensions broadcast: boxes
    ``(n, P, 4)`` and keypoints ``(n, 1, K, 3)`` give ``(n, P, K)``."""
    b = np.asarray(boxes, np.float32)[..., None, :]
    kp = np.asarray(keypoints, np.float32)
    x, y, vis = kp[..., 0], kp[..., 1], kp[..., 2] > 0
    return vis & (x >= b[..., 0]) & (x <= b[..., 2]) & (y >= b[..., 1]) & (y <= b[..., 3])


def keypoint_consistency(boxes, keypoints) -> tuple[float, int]:
    """``(fraction, keypoint)``: over the images, the largest fraction of best boxes
    that contain one same keypoint, and that keypoint's index (-1 without images)."""
    inside = contains(boxes, keypoints)
    if not len(inside):
        return float("nan"), -1
    freq = inside.mean(axis=0)
    k = int(freq.argmax())
    return float(freq[k]), k


def inside_object(boxes, objects, min_fraction: float = 0.5) -> float:
    """Fraction of ``boxes`` with at least ``min_fraction`` of their area inside the
    matching ``objects`` boxes (both ``(n, 4)``, x0, y0, x1, y1)."""
    b = np.asarray(boxes, np.float32)
    o = np.asarray(objects, np.float32)
    if not len(b):
        return float("nan")
    iw = np.clip(np.minimum(b[:, 2], o[:, 2]) - np.maximum(b[:, 0], o[:, 0]), 0, None)
    ih = np.clip(np.minimum(b[:, 3], o[:, 3]) - np.maximum(b[:, 1], o[:, 1]), 0, None)
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    return float(np.mean(iw * ih >= min_fraction * np.maximum(area, 1e-12)))


def random_boxes(boxes, sizes, rng) -> np.ndarray:
    """The same boxes at uniformly random positions inside their images (``sizes``
    ``(n, 2)`` width, height); a box larger than its image stays at the origin."""
    b = np.asarray(boxes, np.float32)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    sizes = np.asarray(sizes, np.float32)
    x0 = rng.uniform(0, 1, len(b)) * np.clip(sizes[:, 0] - w, 0, None)
    y0 = rng.uniform(0, 1, len(b)) * np.clip(sizes[:, 1] - h, 0, None)
    return np.stack([x0, y0, x0 + w, y0 + h], axis=1).astype(np.float32)


def part_localization(best: np.ndarray, part_class: np.ndarray, image_class: np.ndarray,
                      keypoints: np.ndarray, objects: np.ndarray, sizes: np.ndarray,
                      keypoint_names=(), seed: int = 0) -> dict:
    """The score of every part and its mean, with the random-box control.

    ``best`` ``(n_images, P, 4)``: each part's best box in each test image;
    ``part_class`` ``(P,)``, ``image_class`` ``(n_images,)``: a part is scored on
    its own class's images. Returns ``keypoint_consistency`` and ``inside_object``
    (means over parts), their ``random_*`` controls, and ``per_part`` lists
    (consistency, its keypoint's name, inside fraction).
    """
    rng = np.random.default_rng(seed)
    rows = {"consistency": [], "keypoint": [], "inside": [], "random_consistency": [],
            "random_inside": []}
    for p, c in enumerate(np.asarray(part_class)):
        images = np.flatnonzero(np.asarray(image_class) == c)
        boxes = best[images, p]
        frac, k = keypoint_consistency(boxes, keypoints[images])
        control = random_boxes(boxes, sizes[images], rng)
        rows["consistency"].append(frac)
        rows["keypoint"].append(keypoint_names[k] if 0 <= k < len(keypoint_names) else k)
        rows["inside"].append(inside_object(boxes, objects[images]))
        rows["random_consistency"].append(keypoint_consistency(control, keypoints[images])[0])
        rows["random_inside"].append(inside_object(control, objects[images]))
    mean = {k: float(np.nanmean(v)) for k, v in rows.items() if k != "keypoint"}
    return {"keypoint_consistency": mean["consistency"], "inside_object": mean["inside"],
            "random_keypoint_consistency": mean["random_consistency"],
            "random_inside_object": mean["random_inside"], "n_parts": len(rows["keypoint"]),
            "per_part": {"keypoint_consistency": rows["consistency"],
                         "keypoint": [str(k) for k in rows["keypoint"]],
                         "inside_object": rows["inside"]}}


def applies(ctx: EvalContext) -> str | None:
    m = ctx.data.manifest
    if m.keypoints is None or m.bbox is None:
        return "the dataset has no keypoints and object boxes"
    if not ctx.part_models():
        return "the run has no part model of its classes (no 'parts' method, no DP-Net)"
    return None


def run(ctx: EvalContext) -> dict:
    data, test = ctx.data, ctx.test
    m = data.manifest
    sizes = np.stack([data.width[test], data.height[test]], axis=1)
    best = ctx.best_regions()
    return {"localization": {
        name: part_localization(best[name][0], p.part_class, m.label[test], m.keypoints[test],
                                m.bbox[test], sizes, m.keypoint_names, seed=ctx.cfg.seed)
        for name, p in ctx.part_models().items()}}


EVALUATOR = Evaluator(name="localization", needs=("classifier",), run=run, applies=applies)
