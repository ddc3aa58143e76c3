"""The part learner's inner steps against independent recomputations, and the
explanation figure's top parts on a hand-made image.

Each test states a property of one step (the leave-one-out parts, the in-loop
spatial suppression, the Sinkhorn matching, the top parts drawn), checked
against a formula written out here, never against numbers the code produced.
"""

import numpy as np
import pytest
from PIL import Image

from partlearn import explain
from partlearn.parts import _learner as parts
from partlearn.parts._learner import _leave_one_out
from partlearn.parts._assignment import _softassign, _suppression
from partlearn.config import PartsConfig
from partlearn.parts import fit_background, learn_class_parts

D, R, N_POS, N_NEG = 16, 10, 12, 40
# overlapping boxes (IoU 0.82) for the prototypes A and B, a distant one for C
BOX_A, BOX_B, BOX_C = [0, 0, 40, 40], [2, 2, 42, 42], [100, 100, 140, 140]


def unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def three_prototypes(seed=0):
    """Positives: ``R`` regions of unit Gaussian noise, three of them carrying the
    prototypes A, B, C in the boxes above (the other regions. boxes lie apart from
    those): A = 10 b0 and B = 7 b1 (norms in noise std) and a weaker C = 5 (0.6 b1 +
    0.8 b2), the next best region for a B part, for the rows b of an orthonormal
    basis (returned, its spare rows b3... for the tests). Negatives: noise only."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((D, D)))[0].T
    protos = np.stack([10 * basis[0], 7 * basis[1], 5 * (0.6 * basis[1] + 0.8 * basis[2])])

    def image(planted):
        x = rng.standard_normal((R, D))
        xy = rng.uniform(45, 90, (R, 2))  # 10-pixel boxes clear of those
        boxes = np.c_[xy, xy + 10]
        if planted:
            x[:3] += protos
            boxes[:3] = [BOX_A, BOX_B, BOX_C]
        return x.astype(np.float32), boxes.astype(np.float32)

    pos = [image(True) for _ in range(N_POS)]
    neg = [image(False)[0] for _ in range(N_NEG)]
    X = [x for x, _ in pos]
    background = fit_background(np.concatenate(X + neg), 0.3)
    return {"X": X, "boxes": [b for _, b in pos], "neg": neg, "background": background,
            "basis": basis, "protos": protos}


def whiten(bg, x):
    return (np.asarray(x, np.float64) - bg["mean"]) @ bg["whitener"]


def proto_cos(directions, bg, protos):
    """(P, K): cosine of each learned direction with each prototype, whitened (a
    prototype's direction there is ``W @ p``: the mean shift it adds, whitened)."""
    return unit(directions) @ unit(protos @ bg["whitener"]).T


# ------------------------------------------------------------------ leave one out


def loo_reference(z, offsets, a, hard, u, correction):
    """The parts of one update, recomputed from scratch without each image's rows:
    weighted mean of the other images' regions minus ``hard``, unit rows; a part with
    (next to) no mass left keeps ``u``; then the orthogonality correction."""
    out = []
    for i in range(len(offsets) - 1):
        keep = np.ones(len(z), bool)
        keep[offsets[i]:offsets[i + 1]] = False
        mass = a[keep].sum(axis=0)
        on = mass >= 1e-6
        v = np.array(u, np.float64)
        v[on] = unit(a[keep][:, on].T @ z[keep] / mass[on, None]
                     - (0 if hard is None else hard[on]))
        out.append(v if correction is None else unit(v - correction))
    return np.stack(out)


@pytest.mark.parametrize("constraints", ["none", "hard_and_orthogonality"])
def test_leave_one_out_removes_exactly_each_image(constraints):
    rng = np.random.default_rng(0)
    counts, p, d = [3, 5, 2, 4, 6], 4, 8
    offsets = np.r_[0, np.cumsum(counts)]
    z = (rng.standard_normal((offsets[-1], d)) * 3).astype(np.float32)
    a = rng.uniform(0, 1, (offsets[-1], p)).astype(np.float32)
    a[:, 3] = 0
    a[offsets[2]:offsets[3], 3] = 0.7  # part 3 lives on image 2 only: without it, no mass
    u = unit(rng.standard_normal((p, d))).astype(np.float32)
    hard = correction = None
    if constraints != "none":
        hard = (0.3 * rng.standard_normal((p, d))).astype(np.float32)
        correction = (0.2 * rng.standard_normal((p, d))).astype(np.float32)
    total, mass = a.T @ z, a.sum(axis=0)

    got = _leave_one_out(z, offsets, a, total, mass, hard, u, correction)
    want = loo_reference(z.astype(np.float64), offsets, a.astype(np.float64), hard, u,
                         correction)
    assert got.shape == (len(counts), p, d)
    np.testing.assert_allclose(got, want, atol=2e-5)
    # part 3 without image 2 matched nothing: it keeps its direction (then corrected)
    kept = u[3] if correction is None else unit(u[3] - correction[3])
    np.testing.assert_allclose(got[2, 3], kept, atol=1e-6)


def test_learned_loo_directions_leave_out_their_own_image(monkeypatch):
    """End to end: one positive image's copy of A carries an extra, unique component
    ``e``. The parts' last update (``_leave_one_out``'s inputs, recorded) gives the
    returned directions and, without each image, its ``loo_directions``; only the
    odd image's leave-one-out A part loses ``e``."""
    data = three_prototypes(seed=1)
    odd, X = 5, [x.copy() for x in data["X"]]
    e = data["basis"][3]
    X[odd][0] += 8 * e  # A's region of image 5
    seen = {}

    def record(z, offsets, *last):
        seen.update(offsets=offsets, last=last)
        return _leave_one_out(z, offsets, *last)

    monkeypatch.setattr(parts, "_leave_one_out", record)
    bg = data["background"]
    res = learn_class_parts(X, data["neg"], bg, PartsConfig(n_parts=3), random_state=0)
    a, _, _, hard, u, correction = seen["last"]
    z = whiten(bg, np.concatenate(X))
    np.testing.assert_array_equal(seen["offsets"], np.r_[0, np.cumsum([len(x) for x in X])])
    # the recorded update is the last one: it gives the returned directions
    np.testing.assert_allclose(res["directions"], unit(a.T @ z / a.sum(axis=0)[:, None] - hard),
                               atol=1e-4)
    loo = res["loo_directions"].astype(np.float64)
    np.testing.assert_allclose(loo, loo_reference(z, seen["offsets"], a, hard, u, correction),
                               atol=2e-3)  # float16
    pa = int(np.argmax(proto_cos(res["directions"], bg, data["protos"])[:, 0]))
    e_w = unit(e @ bg["whitener"])
    along = loo[:, pa] @ e_w  # (n_pos,)
    assert np.delete(along, odd).min() > along[odd] + 0.05, along  # e: 0.1 in the others
    assert res["directions"][pa] @ e_w > along[odd] + 0.05


# ------------------------------------------------------------------ suppression


def test_suppression_marks_the_overlaps_of_other_parts_choices():
    # 2 images, 3 parts, 4 regions; a region overlaps itself
    overlap = np.zeros((2, 4, 4), bool)
    overlap[:, np.arange(4), np.arange(4)] = True
    overlap[0, 0, 1] = overlap[0, 1, 0] = overlap[0, 2, 3] = overlap[0, 3, 2] = True
    overlap[1, 0, 1] = overlap[1, 1, 0] = True
    # image 0: parts 0 and 1 chose regions 0 and 2, part 2 the slack;
    # image 1: parts 0 and 1 both chose region 1 (no sparsity), part 2 region 3
    match = np.array([[0, 2, -1], [1, 1, 3]])
    want = np.array([
        [[0, 0, 1, 1],   # part 0: around part 1's region 2
         [1, 1, 0, 0],   # part 1: around part 0's region 0
         [1, 1, 1, 1]],  # part 2 (slack): around both
        [[1, 1, 0, 1],   # part 0: around part 1's region 1 and part 2's region 3
         [1, 1, 0, 1],   # part 1: likewise (part 0 chose its region too)
         [1, 1, 0, 0]],  # part 2: around region 1
    ], bool)
    np.testing.assert_array_equal(_suppression(match, overlap), want)
    np.testing.assert_array_equal(_suppression(np.full((2, 3), -1), overlap),
                                  np.zeros((2, 3, 4), bool))  # nothing chosen: nothing


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nms_during_learning_keeps_parts_off_overlapping_boxes(seed):
    """A and B sit in overlapping boxes of every positive, C (weaker, B's runner-up)
    apart. Two parts without NMS learn the two strongest, A and B; with NMS during
    learning, the B part loses the overlap to A in every image, is suppressed there
    and learns C instead."""
    data = three_prototypes(seed)
    kw = dict(boxes=data["boxes"], random_state=seed)
    learned = {}
    for iou in (0.0, 0.5):
        res = learn_class_parts(data["X"], data["neg"], data["background"],
                                PartsConfig(n_parts=2, nms_iou=iou), **kw)
        learned[iou] = proto_cos(res["directions"], data["background"],
                                 data["protos"]).max(axis=0) > 0.9  # (A, B, C) found
    assert learned[0.0].tolist() == [True, True, False], learned
    assert learned[0.5].tolist() == [True, False, True], learned


# ------------------------------------------------------------------ Sinkhorn


BETA, SLACK = 2.0, 1.0


@pytest.fixture
def scores():
    """(3 images, 4 parts, 7 regions): images 1 and 2 padded after 5 and 3 regions,
    a fifth of the real pairs suppressed, region 0 wanted by every part (its column
    binds)."""
    rng = np.random.default_rng(0)
    s = rng.uniform(-1, 3, (3, 4, 7)).astype(np.float32)
    s[:, :, 0] = 3.0 + rng.uniform(0, 0.5, (3, 4))
    s[rng.random(s.shape) < 0.2] = -np.inf
    s[1, :, 5:] = s[2, :, 3:] = -np.inf
    return s


def test_softassign_meets_both_constraints(scores):
    w = _softassign(scores, BETA, SLACK, n_iter=300, sparsity=True)
    assert w.shape == scores.shape and np.all(w[np.isinf(scores)] == 0)
    rows, cols = w.sum(axis=2), w.sum(axis=1)  # (n, P) parts, (n, R) regions, less slack
    assert rows.max() <= 1 + 1e-5 and cols.max() <= 1 + 1e-5, (rows.max(), cols.max())
    # the Sinkhorn fixed point: w = K x_p y_r, K = exp(beta (s - slack)), where x_p and
    # y_r are the slack entries of part p's row and region r's column: 1 - their sums
    k = np.exp(BETA * (scores.astype(np.float64) - SLACK))
    np.testing.assert_allclose(w, k * (1 - rows)[:, :, None] * (1 - cols)[:, None, :],
                               rtol=1e-3, atol=1e-6)
    assert cols[:, 0].min() > 0.5  # the binding column is not trivially met


def test_softassign_without_sparsity_is_a_softmax_with_slack(scores):
    w = _softassign(scores, BETA, SLACK, n_iter=300, sparsity=False)
    k = np.exp(BETA * (scores.astype(np.float64) - SLACK))
    np.testing.assert_allclose(w, k / (1 + k.sum(axis=2, keepdims=True)), rtol=1e-5, atol=1e-7)
    assert w.sum(axis=1).max() > 2  # no region constraint: region 0 serves every part


# ------------------------------------------------------------------ explanation


def test_draw_explanation_returns_the_top_parts_best_boxes(tmp_path, monkeypatch):
    # a 20x20 image; regions: top-left, top-right, bottom half, centre, bottom-right corner
    boxes = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [0, 10, 20, 20], [5, 5, 15, 15],
                      [15, 15, 20, 20]], np.float32)
    # parts 0..4 of classes dog, cat, cat, dog, cat; 2 cells: weights 2, 1, -1, 3, -2
    part_class = np.array([1, 0, 0, 1, 0])
    coef = np.array([[1, 0.5, -1, 2, -1], [1, 0.5, 0, 1, -1]])
    responses = np.array([[1, 4, 9, -1, -4],
                          [3, 1, 9, -2, -5],
                          [2, 5, 9, 0.5, -6],
                          [0, 0, 9, -3, -7],
                          [-1, -1, 9, -3, -8]], np.float32)
    # weight * max(0, best response): part 0: 2 * 3 = 6 (region 1), part 1: 1 * 5 = 5
    # (region 2), part 3: 3 * 0.5 = 1.5 (region 2); parts 2 (-1 * 9) and 4 (its best is
    # negative: -2 * 0, unclipped it would be -2 * -4 = 8) come last
    seen = {}
    draw = explain._draw

    def record(image, heat, drawn, title, file):
        seen["heat"] = heat
        draw(image, heat, drawn, title, file)

    monkeypatch.setattr(explain, "_draw", record)
    file = tmp_path / "x.png"
    drawn = explain.draw_explanation(Image.new("RGB", (20, 20)), boxes, responses, coef,
                                     part_class, ["cat", "dog"], "t", file, top=3)
    assert drawn == [{"part": "dog/part0", "box": [10, 0, 20, 10], "score": 3.0},
                     {"part": "cat/part0", "box": [0, 10, 20, 20], "score": 5.0},
                     {"part": "dog/part1", "box": [0, 10, 20, 20], "score": 0.5}]
    assert file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the heatmap weighs by the positive weights only (part 2's -1 is left out), at
    # cells covered by one region: top-left 2*1 + 1*4, top-right 2*3 + 1*1, bottom-left
    # 2*2 + 1*5 + 3*0.5
    heat = seen["heat"]
    assert heat.shape == (64, 64)
    assert (heat[0, 0], heat[0, -1], heat[-1, 0]) == (6, 7, 10.5)
