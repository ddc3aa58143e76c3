"""Part learning on planted parts: properties, not golden numbers."""

import dataclasses
import re
import subprocess
import sys

import numpy as np
import pytest
from sklearn.base import TransformerMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import get_tags
from threadpoolctl import threadpool_info

from partlearn import _faiss
from partlearn._arrays import sample_regions
from partlearn._validation import ConfigError, DataError
from partlearn.config import Config, PartsConfig, load_config
from partlearn.data import make_planted_regions
from partlearn.parts import PartLearner, fit_background, learn_class_parts, negative_pool
from partlearn._arrays import stack_regions

N_CLASSES, N_IMAGES, N_REGIONS, DIM, K_PLANTED = 4, 30, 40, 64, 3
N_PARTS = PartsConfig.n_parts  # the tests run the defaults


def planted_data(seed=0, noise=0.5, n_clutter=40):
    return make_planted_regions(N_CLASSES, N_IMAGES, N_REGIONS, DIM, k=K_PLANTED, noise=noise,
                                n_clutter=n_clutter, seed=seed)


def cos(a, b):
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return a @ b.T


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def matched_means(X, images, matches):
    """(P, D): mean original-space region each part matched (zeros when never)."""
    out = np.zeros((len(matches), X[0].shape[1]))
    for p, m in enumerate(matches):
        rows = [X[images[j]][m[j]] for j in np.flatnonzero(m >= 0)]
        if rows:
            out[p] = np.mean(rows, axis=0)
    return out


@pytest.fixture(scope="module")
def data():
    return planted_data()


@pytest.fixture(scope="module")
def fitted(data):
    """Defaults, without boxes (so without NMS: the boxes here are random, unrelated to
    the content; NMS is tested on its own)."""
    return PartLearner(random_state=0).fit(data["X"], data["y"])


@pytest.fixture(scope="module")
def one_class(data):
    """Positives, negatives, boxes and background of class c0."""
    y = data["y"]
    pos = np.flatnonzero(y == "c0")
    neg = np.flatnonzero(y != "c0")
    X = data["X"]
    return {"pos": [X[i] for i in pos], "neg": [X[i] for i in neg],
            "boxes": [data["boxes"][i] for i in pos],
            "background": fit_background(np.concatenate(X), PartsConfig.shrinkage)}


# ------------------------------------------------------------------ faiss gateway


def test_kmeans_objective_and_seed():
    x = np.random.default_rng(0).standard_normal((500, 16))
    c4, obj4 = _faiss.kmeans(x, 4, niter=10, nredo=1, seed=3)
    _, obj16 = _faiss.kmeans(x, 16, niter=10, nredo=1, seed=3)
    assert c4.shape == (4, 16) and c4.dtype == np.float32
    assert obj16 < obj4  # more centroids, lower error
    again, _ = _faiss.kmeans(x, 4, niter=10, nredo=1, seed=3)
    np.testing.assert_array_equal(c4, again)
    _, best_of_3 = _faiss.kmeans(x, 4, niter=10, nredo=3, seed=3)
    assert best_of_3 <= obj4 * (1 + 1e-6)
    with pytest.raises(ConfigError, match="n_samples=500 should be >= k=501"):
        _faiss.kmeans(x, 501, niter=10, nredo=1, seed=0)


def test_topk_inner_is_exact():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((300, 8)).astype(np.float16)  # converted at the boundary
    q = rng.standard_normal((5, 8))
    scores, idx = _faiss.topk_inner(q, base, 7)
    full = q.astype(np.float32) @ base.astype(np.float32).T
    np.testing.assert_array_equal(idx, np.argsort(-full, axis=1)[:, :7])
    np.testing.assert_allclose(scores, np.take_along_axis(full, idx, 1), rtol=1e-5)
    assert _faiss.topk_inner(q, base[:3], 7)[1].shape == (5, 3)  # k capped at len(base)
    valid = rng.random(300) < 0.5
    scores, idx = _faiss.topk_inner(q, base, 7, valid=valid)  # only the valid rows
    masked = np.where(valid, full, -np.inf)
    np.testing.assert_array_equal(idx, np.argsort(-masked, axis=1)[:, :7])
    assert _faiss.topk_inner(q, base, 500, valid=valid)[1].shape == (5, valid.sum())


# ------------------------------------------------------------------ background


def test_background_whitens():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4000, 10)) @ rng.standard_normal((10, 10)) + 5
    bg = fit_background(x.astype(np.float16), shrinkage=0.0)
    z = (x - bg["mean"]) @ bg["whitener"]
    np.testing.assert_allclose(np.cov(z.T), np.eye(10), atol=0.02)
    w = rng.standard_normal(10)
    assert abs(np.std(z @ (w / np.linalg.norm(w))) - 1) < 0.02  # scores are z-scores
    shrunk = fit_background(x, shrinkage=0.5)
    assert np.linalg.norm(shrunk["whitener"]) < np.linalg.norm(bg["whitener"])
    with pytest.raises(DataError, match="singular"):
        fit_background(x[:5], shrinkage=0.0)


# ------------------------------------------------------------------ planted parts


def test_recovers_every_planted_prototype(data, fitted):
    X = data["X"]
    for ci, c in enumerate(fitted.classes_):
        res = fitted.class_results_[ci]
        means = matched_means(X, fitted.positive_images_[ci], res["matches"])
        to_planted = cos(means, data["planted"][ci])  # (P, K)
        assert (to_planted.max(axis=0) >= 0.9).all(), (c, to_planted.max(axis=0))
        # the same seen through the parts' directions, mapped back to the original space
        bg = fitted.background_
        back = np.linalg.solve(bg["whitener"], res["directions"].T).T  # Σλ^(1/2) ŵ
        assert (cos(back, data["planted"][ci] - bg["mean"]).max(axis=0) >= 0.9).all()
        # and the parts pick the prototype's own copy in (nearly) every image; two parts
        # may share a prototype (then they share its images: sparsity)
        for k in range(K_PLANTED):
            where = np.array([data["where"][i][k] for i in fitted.positive_images_[ci]])
            assert np.mean((res["matches"] == where).any(axis=0)) >= 0.9


def test_kmeans_alone_returns_clutter_and_ap_ranks_planted_first(data, fitted):
    X, y = data["X"], data["y"]
    bg = fitted.background_
    for ci, c in enumerate(fitted.classes_):
        res = fitted.class_results_[ci]
        # a part is planted when its direction, mapped back, is a planted prototype
        back = np.linalg.solve(bg["whitener"], res["directions"].T).T
        planted = cos(back, data["planted"][ci] - bg["mean"]).max(axis=1) >= 0.9
        ap = res["discriminativeness"]
        assert planted.sum() >= K_PLANTED and (~planted).any()
        assert ap[planted].min() > ap[~planted].max(), (c, ap, planted)
        # plain k-means on the positives (same space, same P) finds clutter centroids
        z = (np.concatenate([X[i] for i in np.flatnonzero(y == c)]) - bg["mean"]) @ bg["whitener"]
        centroids, _ = _faiss.kmeans(z, N_PARTS, niter=20, nredo=3, seed=0)
        back = np.linalg.solve(bg["whitener"], centroids.T).T + bg["mean"]
        assert (cos(back, data["clutter"]).max(axis=1) >= 0.9).sum() >= 1


def test_weights_and_bias_give_background_z_scores(data, fitted, one_class):
    res = fitted.class_results_[0]
    x = np.concatenate(one_class["pos"][:3])
    bg = fitted.background_
    z = (x - bg["mean"]) @ bg["whitener"]
    np.testing.assert_allclose(x @ res["weights"].T + res["bias"], z @ res["directions"].T,
                               rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(res["directions"], axis=1), 1, rtol=1e-5)
    # transform: each part's max response over an image's regions
    r = fitted.transform(one_class["pos"][:3])
    assert r.shape == (3, len(fitted.parts_))
    first = one_class["pos"][0] @ fitted.parts_.T + fitted.part_bias_
    np.testing.assert_allclose(r[0], first.max(axis=0), rtol=1e-5)
    assert res["objective"].shape == (int(res["n_updates"]),)


# ------------------------------------------------------------------ constraints


def test_orthogonality_lowers_mean_abs_cos(one_class):
    c = one_class
    mac = {g: float(learn_class_parts(c["pos"], c["neg"], c["background"],
                                      PartsConfig(n_parts=N_PARTS, orthogonality=g),
                                      boxes=c["boxes"])["mean_abs_cos"])
           for g in (0.0, 0.5)}
    assert mac[0.5] < 0.5 * mac[0.0], mac


def test_nms_keeps_chosen_regions_apart(data, one_class):
    threshold = 0.3

    def worst_iou(matches, boxes):
        worst = 0.0
        for j, b in enumerate(boxes):
            chosen = [r for r in matches[:, j] if r >= 0]
            for a in range(len(chosen)):
                for d in range(a + 1, len(chosen)):
                    worst = max(worst, iou(b[chosen[a]], b[chosen[d]]))
        return worst

    est = PartLearner(nms_iou=threshold, random_state=0).fit(data["X"], data["y"],
                                                             data["boxes"])
    for images, matches in zip(est.positive_images_, est.matches_):
        assert worst_iou(matches, [data["boxes"][i] for i in images]) <= threshold
    c = one_class
    off = learn_class_parts(c["pos"], c["neg"], c["background"], PartsConfig(nms_iou=0.0),
                            boxes=c["boxes"])
    assert worst_iou(off["matches"], c["boxes"]) > threshold  # the check is not vacuous


def test_sparsity_one_part_per_region(one_class):
    c = one_class

    def shared_regions(res):
        return sum(len(set(m[m >= 0])) < (m >= 0).sum() for m in res["matches"].T)

    kw = {"n_parts": N_PARTS, "nms_iou": 0.0}
    on = learn_class_parts(c["pos"], c["neg"], c["background"], PartsConfig(sparsity=True, **kw))
    off = learn_class_parts(c["pos"], c["neg"], c["background"],
                            PartsConfig(sparsity=False, **kw))
    assert shared_regions(on) == 0
    assert shared_regions(off) > 0  # without it, parts collapse onto the same regions


def test_keep_prunes_to_the_most_discriminative(one_class):
    c = one_class
    full = learn_class_parts(c["pos"], c["neg"], c["background"], PartsConfig(n_parts=N_PARTS))
    kept = learn_class_parts(c["pos"], c["neg"], c["background"],
                             PartsConfig(n_parts=N_PARTS, keep=2))
    assert kept["weights"].shape == (2, DIM) and kept["matches"].shape == (2, N_IMAGES)
    np.testing.assert_array_equal(np.sort(kept["discriminativeness"]),
                                  np.sort(full["discriminativeness"])[-2:])
    np.testing.assert_array_equal(kept["weights"], full["weights"][kept["kept"]])


# ------------------------------------------------------------------ estimator contract


def test_negative_pool_serves_every_class():
    y = np.repeat([0, 1, 2, 3], [50, 10, 10, 10])  # the largest class still gets its share
    rng = np.random.default_rng(0)
    pool, per_class = negative_pool(y, 20, rng)
    assert np.all(np.diff(pool) > 0)
    for c, neg in enumerate(per_class):
        assert len(neg) == 20 and np.all(y[pool[neg]] != c) and np.all(np.diff(neg) > 0)
    pool, per_class = negative_pool(y, 1000, rng)  # more than there are: all of them
    assert len(pool) == len(y) and [len(n) for n in per_class] == [30, 70, 70, 70]


def test_shared_negative_stack_equals_own_negatives(data, one_class):
    """A class learnt against its images of a shared stack learns what it learns
    against those images alone (with and without the hard-negative cache)."""
    X, y = data["X"], data["y"]
    c = one_class
    neg = np.flatnonzero(y != "c0")
    stack = stack_regions(X)  # every image, the class's own included
    for cache in (0, 2):
        own = learn_class_parts(c["pos"], c["neg"], c["background"],
                                PartsConfig(negative_cache=cache), random_state=0)
        shared = learn_class_parts(c["pos"], stack, c["background"],
                                   PartsConfig(negative_cache=cache), negative_images=neg,
                                   random_state=0)
        np.testing.assert_allclose(shared["weights"], own["weights"], atol=1e-4)
        np.testing.assert_allclose(shared["discriminativeness"], own["discriminativeness"],
                                   atol=1e-6)
        assert int(shared["n_negatives"]) == len(neg)
    with pytest.raises(DataError, match="negative_images should index the 120 negative"):
        learn_class_parts(c["pos"], stack, c["background"], negative_images=[0, 120])


def test_same_random_state_same_parts(data, fitted):
    again = PartLearner(random_state=0).fit(data["X"], data["y"])
    np.testing.assert_array_equal(again.parts_, fitted.parts_)
    np.testing.assert_array_equal(again.part_bias_, fitted.part_bias_)
    for a, b in zip(again.matches_, fitted.matches_):
        np.testing.assert_array_equal(a, b)


def test_two_workers(data, fitted):
    threads = [lib["num_threads"] for lib in threadpool_info()]
    par = PartLearner(random_state=0, n_jobs=2).fit(data["X"], data["y"])
    assert [lib["num_threads"] for lib in threadpool_info()] == threads  # BLAS limit undone
    np.testing.assert_array_equal(par.part_class_, fitted.part_class_)
    assert par.parts_.shape == fitted.parts_.shape
    # one BLAS thread per worker: products may round differently, the parts agree
    assert np.diag(cos(par.parts_, fitted.parts_)).min() > 0.99


def test_sklearn_contract(data, fitted):
    est = PartLearner(n_parts=4, slack=1.5, random_state=7)
    assert isinstance(est, TransformerMixin)
    assert est.get_params()["slack"] == 1.5 and est.get_params()["n_jobs"] is None
    assert set(PartsConfig.__dataclass_fields__) < set(est.get_params())
    est.set_params(n_parts=5, keep=2)
    twin = clone(est)
    assert twin.get_params() == est.get_params() and not hasattr(twin, "parts_")
    with pytest.raises(NotFittedError):
        twin.transform(data["X"][:2])
    assert list(fitted.classes_) == list(data["names"])
    assert fitted.n_features_in_ == DIM
    assert fitted.parts_.shape == (N_CLASSES * N_PARTS, DIM) and fitted.parts_.dtype == np.float32
    assert fitted.part_bias_.shape == fitted.part_class_.shape == fitted.discriminativeness_.shape
    assert fitted.part_class_.dtype == np.int64
    np.testing.assert_array_equal(fitted.part_class_, np.repeat(np.arange(N_CLASSES), N_PARTS))
    assert [m.shape for m in fitted.matches_] == [(N_PARTS, N_IMAGES)] * N_CLASSES
    for k, c in enumerate(fitted.classes_):
        np.testing.assert_array_equal(fitted.positive_images_[k], np.flatnonzero(data["y"] == c))
    assert set(fitted.background_) == {"mean", "whitener"}
    tags = get_tags(fitted)
    assert tags.input_tags.two_d_array and tags.input_tags.three_d_array
    assert tags.target_tags.required and tags.transformer_tags.preserves_dtype == ["float32"]
    PartLearner(n_parts=0)  # __init__ validates nothing; fit does
    with pytest.raises(ConfigError, match="parts.n_parts=0 must be >= 1"):
        PartLearner(n_parts=0).fit(data["X"], data["y"])


def test_from_config():
    cfg = PartsConfig(n_parts=5, slack=2.0, n_negative_images=7)
    est = PartLearner.from_config(cfg, random_state=3, n_jobs=2)
    params = est.get_params()
    assert {f: params[f] for f in PartsConfig.__dataclass_fields__} == vars(cfg)
    assert params["random_state"] == 3 and params["n_jobs"] == 2
    assert not hasattr(est, "parts_")


# ------------------------------------------------------------------ the pipeline's procedure

SMALL = dict(n_parts=3, n_negative_images=5, background_regions=50, hard_negatives=20)


def region_sets(n_classes=3, n_images=6, regions=12, dim=8, seed=0):
    """Ragged float16 images (as the feature cache holds them) with boxes."""
    rng = np.random.default_rng(seed)
    y = np.repeat([f"k{c}" for c in range(n_classes)], n_images)
    sizes = rng.integers(regions // 2, regions + 1, size=len(y))
    X = [rng.standard_normal((r, dim)).astype(np.float16) for r in sizes]
    boxes = []
    for r in sizes:
        xy = rng.uniform(0, 60, (r, 2))
        boxes.append(np.c_[xy, xy + rng.uniform(20, 40, (r, 2))].astype(np.float32))
    return X, y, boxes


def assert_same_results(a: dict, b: dict):
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_sample_regions():
    rng = np.random.default_rng(0)
    images = [rng.standard_normal((r, 4)).astype(np.float16) for r in (3, 10, 7)]
    sample = sample_regions(images, 15, np.random.default_rng(1))  # 5 per image, at most
    assert sample.dtype == np.float32 and sample.shape == (3 + 5 + 5, 4)
    start = 0
    for x, n in zip(images, (3, 5, 5)):
        rows = [int(np.flatnonzero((x.astype(np.float32) == r).all(axis=1))[0])
                for r in sample[start:start + n]]
        assert len(set(rows)) == n and rows == sorted(rows)  # distinct, in the image's order
        start += n
    np.testing.assert_array_equal(sample, sample_regions(images, 15, np.random.default_rng(1)))
    np.testing.assert_array_equal(sample_regions(images, 1000, np.random.default_rng(2)),
                                  np.concatenate(images).astype(np.float32))  # all of them
    assert len(sample_regions(images, 1, np.random.default_rng(2))) == 3  # one per image


def test_fit_is_the_pipeline_procedure():
    """``fit`` is the parts stage's procedure, written out here step by step."""
    X, y, boxes = region_sets()
    seed = 3
    est = PartLearner(**SMALL, random_state=seed).fit(X, y, boxes)

    rng = np.random.default_rng(seed)
    per_image = max(1, SMALL["background_regions"] // len(X))
    assert per_image < min(len(x) for x in X)  # the sample is a sample
    sample = []
    for x in X:
        rows = np.sort(rng.choice(len(x), size=min(len(x), per_image), replace=False))
        sample.append(np.asarray(x[rows], np.float32))
    background = fit_background(np.concatenate(sample), PartsConfig.shrinkage)
    for name in background:
        np.testing.assert_array_equal(est.background_[name], background[name])
    classes, codes = np.unique(y, return_inverse=True)
    pool, negatives = negative_pool(codes, SMALL["n_negative_images"],
                                    np.random.default_rng(seed))
    stack = stack_regions([X[i] for i in pool], 8, "negative pool")
    cfg = PartsConfig(**SMALL)
    for k, c in enumerate(classes):
        pos = np.flatnonzero(y == c)
        ref = learn_class_parts([X[i] for i in pos], stack, background, cfg,
                                boxes=[boxes[i] for i in pos], negative_images=negatives[k],
                                random_state=seed + k, name=c)
        assert_same_results(est.class_results_[k], ref)
        np.testing.assert_array_equal(est.positive_images_[k], pos)
    # a RandomState (or None) draws the seed: the same procedure with that seed
    drawn = int(np.random.RandomState(5).randint(2**31 - 1))
    a = PartLearner(**SMALL, random_state=np.random.RandomState(5)).fit(X, y, boxes)
    b = PartLearner(**SMALL, random_state=drawn).fit(X, y, boxes)
    np.testing.assert_array_equal(a.parts_, b.parts_)


def test_resume_from_a_background_and_learnt_classes():
    X, y, boxes = region_sets(seed=1)
    seen = []
    full = PartLearner(**SMALL, random_state=1).fit(
        X, y, boxes, on_background=lambda bg: seen.append(("background", set(bg))),
        on_class=lambda k, result, seconds: seen.append((k, len(result["weights"]), seconds)))
    assert seen[0] == ("background", {"mean", "whitener"})
    assert sorted(k for k, _, _ in seen[1:]) == [0, 1, 2]
    assert all(p == 3 and s >= 0 for _, p, s in seen[1:])

    seen.clear()
    resumed = PartLearner(**SMALL, random_state=1).fit(
        X, y, boxes, background=full.background_, class_results={1: full.class_results_[1]},
        on_background=lambda bg: seen.append("background"),
        on_class=lambda k, result, seconds: seen.append(k))
    assert sorted(seen) == [0, 2]  # no background fitted, class 1 not learnt again
    for a, b in zip(resumed.class_results_, full.class_results_):
        assert_same_results(a, b)
    np.testing.assert_array_equal(resumed.parts_, full.parts_)
    with pytest.raises(DataError, match="class_results should be keyed by class index"):
        PartLearner(**SMALL, random_state=1).fit(X, y, class_results={3: {}})
    with pytest.raises(DataError, match=r"whitener \(8, 7\) should be \(8,\) and \(8, 8\)"):
        PartLearner(**SMALL).fit(X, y, background={"mean": np.zeros(8),
                                                    "whitener": np.zeros((8, 7))})


def test_from_results_transforms_identically(tmp_path):
    """A learner rebuilt from its arrays, stored as .npy and read memory-mapped as the
    cache does (no pickles), is the fitted learner."""
    X, y, boxes = region_sets(seed=2)
    est = PartLearner(**SMALL, random_state=0).fit(X, y, boxes)

    def stored(name, array):
        np.save(tmp_path / f"{name}.npy", np.asarray(array))
        return np.load(tmp_path / f"{name}.npy", mmap_mode="r")

    results = [{n: stored(f"c{k}_{n}", a) for n, a in r.items()}
               for k, r in enumerate(est.class_results_)]
    rebuilt = PartLearner.from_results(
        est.get_params(), stored("classes", est.classes_),
        {n: stored(f"bg_{n}", a) for n, a in est.background_.items()}, results,
        [stored(f"pos{k}", p) for k, p in enumerate(est.positive_images_)],
        est.n_features_in_)
    assert rebuilt.get_params() == est.get_params()
    np.testing.assert_array_equal(rebuilt.transform(X), est.transform(X))
    for name in ("classes_", "parts_", "part_bias_", "part_class_", "discriminativeness_"):
        got, want = getattr(rebuilt, name), getattr(est, name)
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert got.dtype == want.dtype, name
    for a, b in zip(rebuilt.positive_images_ + rebuilt.matches_,
                    est.positive_images_ + est.matches_):
        np.testing.assert_array_equal(a, b)
    assert rebuilt.n_features_in_ == est.n_features_in_
    with pytest.raises(DataError, match="3 classes, 2 class results"):
        PartLearner.from_results({}, est.classes_, est.background_, results[:2],
                                 est.positive_images_, 8)


def test_array_forms_are_the_list_form():
    rng = np.random.default_rng(4)
    y = np.repeat([0, 1, 2], 5)
    X3 = rng.standard_normal((15, 6, 8)).astype(np.float32)
    params = dict(SMALL, min_images=1, random_state=0)
    from_list = PartLearner(**params).fit(list(X3), y)
    from_3d = PartLearner(**params).fit(X3, y)
    np.testing.assert_array_equal(from_3d.parts_, from_list.parts_)
    np.testing.assert_array_equal(from_3d.transform(X3), from_list.transform(list(X3)))
    assert from_3d.n_features_in_ == 8
    X2 = X3[:, 0].astype(np.float64)  # one region per image
    from_2d = PartLearner(**dict(params, n_parts=2)).fit(X2, y)
    one_each = PartLearner(**dict(params, n_parts=2)).fit([x[None] for x in X2], y)
    np.testing.assert_array_equal(from_2d.parts_, one_each.parts_)
    np.testing.assert_array_equal(from_2d.transform(X2), X2.astype(np.float32) @ from_2d.parts_.T
                                  + from_2d.part_bias_)
    # scikit-learn's messages for the array forms, ours for the list form
    with pytest.raises(ValueError, match="X has 7 features, but PartLearner is expecting 8"):
        from_2d.transform(X2[:, :7])
    with pytest.raises(ValueError, match="X has 7 features, but PartLearner is expecting 8"):
        from_3d.transform(X3[:, :, :7])
    with pytest.raises(DataError, match=r"transform: X image 0: .*\(R, 8\).*\(6, 7\)"):
        from_3d.transform(list(X3[:, :, :7]))
    with pytest.raises(ValueError, match="Input X contains NaN"):
        from_3d.transform(np.where(X3 > 2.5, np.nan, X3))
    with pytest.raises(DataError, match="a 2-D X .* is one region per image"):
        PartLearner(**params).fit(X2, y, boxes=[np.zeros((1, 4))] * 15)
    with pytest.raises(ValueError, match="requires y to be passed"):
        PartLearner(**params).fit(list(X3), None)


def test_import_is_torch_free():
    code = "import sys, partlearn.parts; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_learn_class_parts_takes_the_config_section(one_class):
    c = one_class
    with pytest.raises(ConfigError, match="params should be a PartsConfig"):
        learn_class_parts(c["pos"], c["neg"], c["background"], {"n_parts": 2})
    with pytest.raises(ConfigError, match="takes the parts section"):
        PartLearner.from_config(Config())


def test_learner_parameters_are_the_declared_settings():
    """``PartLearner``'s signature is ``PartsConfig``'s fields with their defaults (plus
    ``random_state`` and ``n_jobs``), so a new setting is declared once."""
    import inspect

    params = inspect.signature(PartLearner).parameters
    fields = dataclasses.fields(PartsConfig)
    assert list(params) == [f.name for f in fields] + ["random_state", "n_jobs"]
    assert all(params[f.name].default == f.default for f in fields)
    # fit checks them by the declarations, naming the setting as the config does
    for bad, message in [(dict(tol=-1.0), "parts.tol=-1.0 must be >= 0"),
                         (dict(sparsity="yes"), "parts.sparsity='yes' should be of type bool"),
                         (dict(keep=3, n_parts=2), "parts.keep=3 must be <= parts.n_parts=2")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            PartLearner(**bad).fit(*small())


# ------------------------------------------------------------------ bad input


def small(n_per_class=(3, 3), regions=5, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(["cat", "dog"], n_per_class)
    return [rng.standard_normal((regions, dim)).astype(np.float32) for _ in y], y


def test_too_few_images():
    X, y = small((3, 1))
    with pytest.raises(DataError, match="class 'dog' has 1 training images; part learning "
                                        "needs at least parts.min_images=2"):
        PartLearner(n_parts=2).fit(X, y)
    with pytest.raises(DataError, match="class 'Dog' has 1 training images"):
        PartLearner(n_parts=2).fit(X, y, class_names=["Cat", "Dog"])
    with pytest.raises(DataError, match="class_names should name the 2 classes of y, got 1"):
        PartLearner(n_parts=2).fit(X, y, class_names=["Cat"])


def test_nan_regions_named():
    X, y = small()
    X[4][2, 3] = np.nan
    with pytest.raises(ValueError, match=r"class 'dog', image 4 of X: 1 of its 5 regions"):
        PartLearner(n_parts=2).fit(X, y)
    X[4][2, 3] = np.inf
    with pytest.raises(DataError, match="NaN or inf"):
        learn_class_parts(X[3:], X[:3], fit_background(np.concatenate(X[:3]), 0.1),
                          PartsConfig(n_parts=2), name="dog")


def test_mismatched_lengths():
    X, y = small()
    with pytest.raises(DataError, match="got 6 images in X and y of shape \\(5,\\)"):
        PartLearner(n_parts=2).fit(X, y[:5])
    boxes = [np.zeros((5, 4), np.float32)] * 5
    with pytest.raises(DataError, match="got 5 for 6 images"):
        PartLearner(n_parts=2).fit(X, y, boxes)
    with pytest.raises(DataError, match=r"class 'cat', image 0 of X: boxes should be \(5, 4\)"):
        PartLearner(n_parts=2).fit(X, y, [np.zeros((4, 4))] * 6)
    X[2] = X[2][:, :6]
    with pytest.raises(DataError, match=r"class 'cat', image 2 of X: .*\(R, 8\).*\(5, 6\)"):
        PartLearner(n_parts=2).fit(X, y)


def test_more_parts_than_regions():
    X, y = small(regions=2)
    with pytest.raises(DataError, match="class 'cat': n_parts=7 is more than the 6 regions "
                                        "of its 3 images"):
        PartLearner(n_parts=7).fit(X, y)
    bg = fit_background(np.concatenate(X), 0.1)
    with pytest.raises(DataError, match="class 'cat': n_parts=7 is more than the 6 regions"):
        learn_class_parts(X[:3], X[3:], bg, PartsConfig(n_parts=7), name="cat")


def test_one_class_only():
    X, _ = small()
    with pytest.raises(DataError, match="at least 2 classes .* got 1 class: \\['cat'\\]"):
        PartLearner(n_parts=2).fit(X, np.array(["cat"] * 6))
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        PartLearner(n_parts=2).fit(X, np.linspace(0, 1, 6))


def test_parts_config():
    assert Config().parts == PartsConfig()
    cfg = load_config(None, ["parts.n_parts=8", "parts.sparsity=false"])
    assert cfg.parts.n_parts == 8 and cfg.parts.sparsity is False
    for override, expected in [("parts.beta_growth=1", "parts.beta_growth=1.0 must be > 1"),
                               ("parts.keep=50", "parts.keep=50 must be <= parts.n_parts"),
                               ("parts.nms_iou=1.5", "parts.nms_iou=1.5 must be an IoU"),
                               ("parts.beta_start=0", "0 < beta_start <= beta_end"),
                               ("parts.shrinkage=-1", "parts.shrinkage=-1.0 must be in [0, 1]"),
                               ("parts.n_parts=0", "parts.n_parts=0 must be >= 1")]:
        with pytest.raises(ConfigError) as e:
            load_config(None, [override])
        assert expected in str(e.value)
