import numpy as np
import pytest
from PIL import Image

from partlearn.evaluation._deletion import (
    STEPS, Scorer, auc, box_mask, deleted, distinct, image_curves, summary)

PART = (60, 60, 80, 80)  # the planted part's box in a 100 x 100 image
RED = np.array([255, 0, 0], np.uint8)
GREY = (128, 128, 128)


def test_auc_of_a_hand_computed_curve():
    # trapezoids: 0.2 * (1 + .5) / 2 + 0.3 * (.5 + .5) / 2 + 0.5 * (.5 + 0) / 2
    assert auc([0, 0.2, 0.5, 1], [1, 0.5, 0.5, 0]) == pytest.approx(0.425)
    assert auc([0, 1], [1, 1]) == pytest.approx(1.0)


def test_boxes_are_filled_cumulatively_and_their_union_is_the_area():
    image = Image.fromarray(np.zeros((10, 20, 3), np.uint8))  # 20 wide, 10 high
    boxes = np.array([[0, 0, 10, 5], [5, 0, 10, 10], [0, 0, 2.5, 1.2]], np.float32)
    out, area = deleted(image, boxes, np.array(GREY, np.uint8))
    # 50 px, then the union with a 5 x 10 box (25 px new), then a box inside the first
    np.testing.assert_allclose(area, [50 / 200, 75 / 200, 75 / 200])
    first = np.asarray(out[0])
    assert (first[:5, :10] == GREY).all() and (first[5:, :] == 0).all()
    assert (np.asarray(out[1])[:, 5:10] == GREY).all()
    assert (np.asarray(image) == 0).all()  # the original is left alone
    # a fractional box covers every pixel it touches
    assert box_mask([[0.5, 0.5, 1.2, 1.0]], (4, 4)).sum() == 2


def test_distinct_boxes_keep_their_order_and_pad_with_the_last():
    b = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 2, 2]], np.float32)
    np.testing.assert_array_equal(distinct(b, 2), b[[0, 2]])
    np.testing.assert_array_equal(distinct(b, 3), b[[0, 2, 2]])


def planted_image(rng) -> Image.Image:
    pixels = rng.integers(0, 100, (100, 100, 3), dtype=np.uint8)
    x0, y0, x1, y1 = PART
    pixels[y0:y1, x0:x1] = RED
    return Image.fromarray(pixels)


def fake_scorer(n_distractors: int = STEPS) -> Scorer:
    """Class 0's score: 6 x the share of the planted part's pixels still red; class 1: 0.
    Its ranking: the part's box first, then boxes elsewhere (they change nothing)."""
    x0, y0, x1, y1 = PART

    def scores(feats):
        red = [(np.asarray(f)[y0:y1, x0:x1] == RED).all(axis=-1).mean() for f in feats]
        return np.stack([6 * np.array(red), np.zeros(len(feats))], axis=1)

    def ranked(f):
        others = [[5 + 8 * k, 5, 12 + 8 * k, 12] for k in range(n_distractors)]
        return 0, np.array([PART] + others, np.float32)

    return Scorer(scores, ranked)


def test_removing_the_part_kills_the_score_and_random_boxes_do_not():
    """A planted case: the class's evidence is one box; deleting the ranked part regions
    removes it at the first step, the same boxes at random places rarely do."""
    rng = np.random.default_rng(0)
    calls = []

    def features_of(pils):  # the fake 'features' are the pixels
        calls.append(len(pils))
        return [np.asarray(p) for p in pils]

    curves = []
    for k in range(30):
        image = planted_image(rng)
        curves.append(image_curves(image, np.asarray(image), {"m": fake_scorer()},
                                   features_of, np.array(GREY, np.uint8),
                                   np.random.default_rng([0, k]))["m"])
    assert calls == [1 + 2 * STEPS] * 30  # all steps of an image in one call
    c = curves[0]
    assert len(c["area"]) == len(c["probability"]) == STEPS + 2
    p_full = np.exp(6) / (np.exp(6) + 1)
    # the intact image and the image filled whole: the same ends for both curves
    assert c["probability"][0] == c["probability_random"][0] == pytest.approx(p_full)
    assert c["probability"][-1] == c["probability_random"][-1] == pytest.approx(0.5)
    assert c["area"][0] == 0 and c["area"][-1] == 1
    assert c["probability"][1] == pytest.approx(0.5)  # the part's box went first
    assert c["area"][1] == pytest.approx(0.04)  # its 20 x 20 px
    assert c["score"][0] == pytest.approx(6.0)
    found = summary(curves, seed=0)
    assert found["images"] == 30 and found["steps"] == STEPS
    assert found["auc"] < found["auc_random"] - 0.1
    d = found["difference"]
    assert d["n"] == 30 and d["ci95"][1] < 0
    assert d["diff"] == pytest.approx(found["auc"] - found["auc_random"])
    assert found["curve"]["probability"][1] == pytest.approx(0.5)
    assert found["curve_random"]["probability"][1] > 0.6


def test_an_uninformative_ranking_is_no_better_than_random():
    """The control: when the ranked boxes miss the part, parts and random do not differ
    by much (the part box is never ranked)."""
    base = fake_scorer()
    blind = Scorer(base.scores, lambda f: (0, np.array(
        [[5 + 8 * k, 5, 12 + 8 * k, 12] for k in range(STEPS)], np.float32)))
    rng = np.random.default_rng(1)
    curves = []
    for k in range(30):
        image = planted_image(rng)
        curves.append(image_curves(image, np.asarray(image), {"m": blind},
                                   lambda pils: [np.asarray(p) for p in pils],
                                   np.array(GREY, np.uint8), np.random.default_rng([1, k]))["m"])
    found = summary(curves)
    assert found["auc"] > found["auc_random"] - 0.05


@pytest.fixture(scope="module")
def finished(tiny):
    """A finished tiny run (two-stage parts and the SVMs; no keypoints) in its own cache."""
    from partlearn.config import load_config
    from partlearn.runner import Pipeline

    cfg = load_config(None, [
        f"data.root={tiny / 'data'}", "data.format=folders", "data.min_train_per_class=1",
        "backbone.name=resnet18", f"backbone.weights={tiny / 'r18.pth'}",
        "features.short_side=64", "features.workers=0", "regions.scales=[0.5, 0.8]",
        "parts.n_parts=3", "parts.min_images=2", "classifier.n_bootstrap=100",
        "classifier.methods=[\"global\", \"parts\"]", "classifier.deletion_images=4"])
    cache = tiny / "cache-deletion"
    summary = Pipeline(cfg, cache_dir=cache).run(out=tiny / "deletion")
    return cfg, cache, summary


def test_deletion_runs_without_keypoints_and_starts_at_the_runs_own_scores(finished):
    """On a dataset without keypoints the evaluator gives deletion alone; the curve's first
    point is the run's own test score of the image (the cached features), its last the
    image filled whole."""
    from partlearn.evaluation._deletion import sample, softmax
    from partlearn.evaluation import EvalContext
    from partlearn.runner import Pipeline

    cfg, cache, summary = finished
    assert summary["evaluations"]["interpretability"] == {"status": "done"}
    found = summary["interpretability"]
    assert set(found) == {"parts", "about"}
    assert "not computed (the dataset has no keypoints)" in found["about"]["keypoint scores"]
    assert "RISE" in found["about"]["deletion"]
    d = found["parts"]["deletion"]
    assert d["images"] == 4 and d["steps"] == STEPS  # all 4 test images (10 asked)
    assert "interpretability_deletion_s" in summary["timings"]
    pipe = Pipeline(cfg, cache_dir=cache)
    ctx = EvalContext(pipe, cache)
    clf = pipe.load("classifier")
    rows = np.searchsorted(clf.test_images, sample(ctx))
    p0 = softmax(clf.models["parts"]["test_scores"][rows]).max(axis=1)
    assert d["curve"]["probability"][0] == pytest.approx(p0.mean(), abs=1e-5)
    assert d["curve"]["area"][0] == 0 and d["curve"]["area"][-1] == 1
    assert d["curve"]["probability"][-1] == pytest.approx(d["curve_random"]["probability"][-1])
    assert 0 < d["curve"]["area"][1] <= d["curve"]["area"][-2] < 1
    assert np.allclose(d["curve"]["area"][1:-1], d["curve_random"]["area"][1:-1], atol=0.5)
    assert len(d["per_image"]["auc"]) == 4


def test_deletion_is_memoised_a_second_run_extracts_nothing(finished, tmp_path, monkeypatch):
    from partlearn.config import with_values
    from partlearn.evaluation import evaluate
    from partlearn.model import PartlearnModel
    from partlearn.runner import Pipeline

    cfg, cache, summary = finished
    calls = []
    real = PartlearnModel.features_of

    def counting(self, pils):
        calls.append(len(pils))
        return real(self, pils)

    monkeypatch.setattr(PartlearnModel, "features_of", counting)
    # the first run computed and kept it: another run of the same run reads the memo
    again = evaluate(Pipeline(cfg, cache_dir=cache), tmp_path / "again")
    assert calls == []
    assert again["interpretability"]["parts"] == summary["interpretability"]["parts"]
    # another sample is computed: one features_of call per image, every step in it
    fewer = with_values(cfg, {"classifier.deletion_images": 2})
    found = evaluate(Pipeline(fewer, cache_dir=cache), tmp_path / "fewer")
    assert calls == [1 + 2 * STEPS] * 2
    assert found["interpretability"]["parts"]["deletion"]["images"] == 2
    evaluate(Pipeline(fewer, cache_dir=cache), tmp_path / "fewer2")
    assert len(calls) == 2


def test_svm_parts_are_ranked_by_code_times_weight_summed_over_cells():
    """Part 0 adds 0.5 x 1 + 0.3 x 10 = 3.5 to the predicted class, part 1 0.4 x 5 = 2
    (cell-major code, 2 cells x 2 parts): part 0's best own region first; a mirrored
    region (flips) is never a part's box."""
    from types import SimpleNamespace

    from partlearn.evaluation._deletion import svm_scorer
    from partlearn.explain import PartModel
    from partlearn.stages.multiscale import ImageFeatures

    x = np.array([[1, 0], [0, 1], [5, 5]], np.float16)  # row 2: the mirrored image's
    boxes = np.array([[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]], np.float32)
    f = ImageFeatures(x, boxes, np.array([False, False, True]), (10, 10), None, None)
    svm = SimpleNamespace(coef=np.array([[1, 5, 10, 0], [0, 0, 0, 0]], np.float32),
                          classes=np.array([0, 1]))
    model = SimpleNamespace(
        methods={"parts": svm},
        blocks={"parts": [(PartModel(np.eye(2, dtype=np.float32), 0.0, np.array([0, 1])),
                           ["a", "b"])]},
        scores_of=lambda feats, m: np.tile([[2.0, 1.0]], (len(feats), 1)),
        class_scores=lambda s, m: s,
        codes_of=lambda feats, block: np.array([[0.5, 0.4, 0.3, 0.0]], np.float32))
    col, ranked = svm_scorer(model, "parts").ranked(f)
    assert col == 0
    np.testing.assert_array_equal(ranked, boxes[[0, 1]])
    svm.coef[0] = [1, 5, 0, 0]  # now part 1 adds more (2 > 0.5)
    np.testing.assert_array_equal(svm_scorer(model, "parts").ranked(f)[1], boxes[[1, 0]])


def test_dpnet_parts_are_ranked_by_their_weight_times_their_best_cosine():
    from partlearn.evaluation._deletion import dpnet_scorer
    from partlearn.stages.multiscale import ImageFeatures

    x = np.array([[1, 0], [0, 1], [1, 1]], np.float16)
    boxes = np.array([[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]], np.float32)
    f = ImageFeatures(x, boxes, np.zeros(3, bool), (10, 10), None, None)
    dp = {"U": np.eye(2, dtype=np.float32), "V": np.array([[1, 3], [0, 0]], np.float32),
          "bias": np.zeros(2, np.float32), "part_class": np.array([0, 0]),
          "classes": np.arange(2)}
    scorer = dpnet_scorer(dp)
    col, ranked = scorer.ranked(f)
    assert col == 0  # logits 1 x 1 + 3 x 1 and 0
    np.testing.assert_allclose(scorer.scores([f])[0], [4, 0], atol=1e-3)
    np.testing.assert_array_equal(ranked, boxes[[1, 0]])  # 3 x 1 before 1 x 1
