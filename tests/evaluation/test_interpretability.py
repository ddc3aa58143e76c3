import numpy as np
import pytest

from partlearn.data import make_planted_regions
from partlearn.explain import PartModel
from partlearn.evaluation.interpretability import (
    CONSISTENT, box_iou, constraint_table, coverage, duplicate_pairs, hits, merged_keypoints,
    paired_units, peak_boxes, purity, score_parts, unit_consistency, unit_stability)

NAMES = ("beak", "left eye", "right eye", "tail")


def best_of(model: PartModel, X, boxes):
    """Each part's best region (box, score) in each image, as EvalContext.best_regions."""
    out_b = np.stack([b[model.responses(x).argmax(axis=0)] for x, b in zip(X, boxes)])
    out_s = np.stack([model.responses(x).max(axis=0) for x in X])
    return out_b.astype(np.float32), out_s.astype(np.float32)


@pytest.fixture(scope="module")
def planted():
    """2 classes x 30 images; keypoint j of an image at the centre of its j-th planted
    region (beak, left eye, right eye; the tail invisible); parts: the 3 planted
    prototypes of each class, a copy of the first one, and a random direction."""
    d = make_planted_regions(2, 30, 25, 16, k=3, noise=0.2, seed=3)
    rng = np.random.default_rng(0)
    kp = np.zeros((len(d["X"]), 4, 3), np.float32)
    for i, (b, where) in enumerate(zip(d["boxes"], d["where"])):
        for j, r in enumerate(where):
            kp[i, j] = [(b[r, 0] + b[r, 2]) / 2, (b[r, 1] + b[r, 3]) / 2, 1]
    weights, part_class = [], []
    for c in range(2):
        p = d["planted"][c]
        weights += [p[0], p[1], p[2], p[0].copy(), rng.standard_normal(16)]
        part_class += [c] * 5
    model = PartModel(np.array(weights, np.float32), 0.0, np.array(part_class), True)
    return d, kp, model


def test_a_planted_part_on_one_keypoint_is_consistent_and_the_random_one_is_not(planted):
    d, kp, model = planted
    boxes, scores = best_of(model, d["X"], d["boxes"])
    sizes = np.full((len(kp), 2), 100)
    out = score_parts(boxes, scores, model.weights, model.part_class, d["label"], kp, NAMES,
                      sizes, seed=0)
    cons = out["per_unit"]["consistency"]
    # per class: the 3 planted parts and the copy are consistent, the random one not
    assert cons == [pytest.approx(4 / 5)] * 2
    assert out["consistency"] == pytest.approx(0.8)
    assert out["random"]["consistency"] < 0.2
    # PIP-Net purity: the planted parts' top images all hold their keypoint
    assert out["purity"] > out["random"]["purity"]
    assert out["pure_parts"] >= 8


def test_unit_consistency_counts_one_same_keypoint():
    h = np.zeros((10, 2, 3), bool)
    h[:, 0, 1] = True  # part 0: keypoint 1 in every image
    h[:5, 1, 0] = h[5:, 1, 2] = True  # part 1: keypoint 0 in half, keypoint 2 in the rest
    np.testing.assert_allclose(unit_consistency(h), [1.0, 0.5])
    assert (unit_consistency(h) >= CONSISTENT).tolist() == [True, False]


def test_two_copies_of_a_part_are_a_duplicate(planted):
    d, kp, model = planted
    boxes, _ = best_of(model, d["X"], d["boxes"])
    own = np.flatnonzero(model.part_class == 0)
    images = np.flatnonzero(d["label"] == 0)
    dup = duplicate_pairs(model.weights[own], boxes[np.ix_(images, own)])
    # parts 0 and 3 are the same vector: the one pair, by weights and by boxes
    assert dup == {"by_weights": 1, "by_boxes": 1, "either": 1, "pairs": 10}


def test_a_noise_invariant_part_is_stable_and_a_random_one_is_not(planted):
    d, kp, model = planted
    rng = np.random.default_rng(5)
    noisy_X = [x + 0.3 * rng.standard_normal(x.shape).astype(np.float32) for x in d["X"]]
    clean, scores = best_of(model, d["X"], d["boxes"])
    noisy, _ = best_of(model, noisy_X, d["boxes"])
    out = score_parts(clean, scores, model.weights, model.part_class, d["label"], kp, NAMES,
                      np.full((len(kp), 2), 100), noisy_boxes=noisy)
    images = np.flatnonzero(d["label"] == 0)
    cell = np.ix_(images, range(5))  # class 0's images and parts
    same = hits(clean[cell], kp[images])
    assert unit_stability(same, same).tolist() == [1.0] * 5
    # the planted parts keep their region under the noise; the random part moves
    per_part = unit_stability(same, hits(noisy[cell], kp[images]))
    assert per_part[:4].min() == 1.0 and per_part[4] < 0.9
    assert out["per_unit"]["stability"][0] == pytest.approx(per_part.mean())
    assert out["stability"] is not None and out["random"]["stability"] is None


def test_purity_merges_left_and_right():
    groups, names = merged_keypoints(NAMES)
    assert names == ["beak", "eye", "tail"]
    np.testing.assert_array_equal(groups, [0, 1, 1, 2])
    n = 10
    kp = np.zeros((n, 4, 3), np.float32)
    kp[:, :, 2] = 1
    kp[:, :, :2] = 90  # every keypoint far away ...
    kp[::2, 1, :2] = 5  # ... but the left eye in even images and the right eye in odd ones
    kp[1::2, 2, :2] = 5
    boxes = np.tile(np.array([0, 0, 10, 10], np.float32), (n, 1, 1))
    scores = np.arange(n, dtype=np.float32)[:, None]
    assert purity(scores, boxes, kp, groups).tolist() == [1.0]
    unmerged = np.arange(4)
    assert purity(scores, boxes, kp, unmerged).tolist() == [0.5]
    # only the top k count: the 4 best images, all odd/even alike
    kp[:6, 1:3, :2] = 90
    assert purity(scores, boxes, kp, groups, k=4).tolist() == [1.0]
    assert purity(scores, boxes, kp, groups, k=10).tolist() == [0.4]


def test_peak_boxes_are_a_fixed_share_of_the_image_clipped():
    boxes = np.array([[[40, 40, 60, 60], [0, 0, 10, 10]]], np.float32)
    peak = peak_boxes(boxes, np.array([[224, 112]]))
    np.testing.assert_allclose(peak[0, 0], [50 - 36, 50 - 18, 50 + 36, 50 + 18])
    np.testing.assert_allclose(peak[0, 1], [0, 0, 5 + 36, 5 + 18])


def test_coverage_and_iou():
    a = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 20]], np.float32)
    np.testing.assert_allclose(box_iou(a, a[:1])[:, 0], [1.0, 0.0, 0.5])
    assert coverage([a], a[None, :1]) == pytest.approx(2 / 3)
    assert coverage([a], a[None, :1], min_iou=0.6) == pytest.approx(1 / 3)


def test_paired_units_and_the_constraint_table():
    same = paired_units([0.5, 0.2, 0.9], [0.5, 0.2, 0.9])
    assert same["diff"] == 0 and same["ci95"] == [0, 0]
    up = paired_units([0.6, 0.3, 1.0, 0.5], [0.4, 0.2, 0.8, 0.3])
    assert up["diff"] == pytest.approx(0.175) and up["ci95"][0] > 0
    assert paired_units([None, 1.0], [0.0, 0.5])["n"] == 1
    rows = {"unit": [0, 1], **{k: [0.5, 0.5] for k in (
        "consistency", "consistency_peak", "purity", "duplicates", "coverage",
        "keypoint_coverage", "stability")}}
    more = dict(rows, duplicates=[2, 4])
    table = constraint_table({"a": {"per_unit": rows}, "b": {"per_unit": more}}, "a")
    assert list(table["rows"]) == ["b"]
    assert table["rows"]["b"]["duplicates"]["diff"] == 2.5
    assert table["rows"]["b"]["consistency"]["diff"] == 0
