import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import get_tags

from partlearn._arrays import signed_sqrt_l2
from partlearn._validation import DataError
from partlearn.encoding import ImageRegions, PartEncoder, cells, encode, part_responses
from partlearn.parts import PartLearner


def image(rng, n=30, dim=6, size=(100, 80), flips=None):
    xy = rng.uniform(0, 1, (n, 2)) * np.array(size) * 0.8
    wh = rng.uniform(5, 20, (n, 2))
    boxes = np.c_[xy, xy + wh].astype(np.float32)
    return ImageRegions(rng.standard_normal((n, dim)).astype(np.float16), boxes, size, flips)


def brute(item, w, b, pyramid, top_k):
    """(cells, P) by a plain loop over cells and parts."""
    s = np.asarray(item.features, np.float32) @ w.T + b
    width, height = item.size
    cx = (item.boxes[:, 0] + item.boxes[:, 2]) / 2 / width
    cy = (item.boxes[:, 1] + item.boxes[:, 3]) / 2 / height
    out = []
    for g in pyramid:
        for r in range(g):
            for c in range(g):
                inside = (np.clip((cx * g).astype(int), 0, g - 1) == c) & \
                         (np.clip((cy * g).astype(int), 0, g - 1) == r)
                if not inside.any():
                    out.append(np.zeros(len(w)))
                    continue
                top = np.sort(s[inside], axis=0)[::-1][:top_k]
                out.append(top.mean(axis=0))
    return np.stack(out)


@pytest.mark.parametrize("top_k", [1, 3])
def test_codes_equal_a_plain_loop(top_k):
    rng = np.random.default_rng(0)
    images = [image(rng, n=int(rng.integers(3, 40))) for _ in range(7)]
    w = rng.standard_normal((5, 6)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    raw = encode(images, w, b, pyramid=(1, 2, 3), top_k=top_k, normalize=False, batch_images=3)
    assert raw.shape == (7, 14 * 5)
    for k, item in enumerate(images):
        np.testing.assert_allclose(raw[k].reshape(14, 5), brute(item, w, b, (1, 2, 3), top_k),
                                   rtol=1e-5, atol=1e-5)
    codes = encode(images, w, b, pyramid=(1, 2, 3), top_k=top_k)
    np.testing.assert_allclose(np.linalg.norm(codes, axis=1), 1, rtol=1e-5)
    signed = np.sign(raw) * np.sqrt(np.abs(raw))
    np.testing.assert_allclose(codes, signed / np.linalg.norm(signed, axis=1, keepdims=True),
                               rtol=1e-5, atol=1e-6)


def test_planted_pattern_lights_its_cell():
    """A part that matches one vector fires in the cell where that vector's region sits."""
    rng = np.random.default_rng(1)
    pattern = rng.standard_normal(8).astype(np.float32)
    pattern /= np.linalg.norm(pattern)
    x = 0.1 * rng.standard_normal((50, 8)).astype(np.float32)
    boxes = np.tile(np.array([[10, 10, 20, 20]], np.float32), (50, 1))  # all top-left
    x[7] = pattern
    boxes[7] = [70, 70, 90, 90]  # bottom-right cell of 2x2 in a 100x100 image
    raw = encode([ImageRegions(x, boxes, (100, 100))], pattern[None], np.zeros(1),
                 pyramid=(1, 2), normalize=False)[0]
    # cells: whole, then (0,0), (0,1), (1,0), (1,1); (0,1) and (1,0) hold no region
    assert raw[0] == raw[4] == pytest.approx(1.0, abs=1e-5)
    assert raw[1] < 0.5 and raw[2] == raw[3] == 0


def test_flip_average_encodes_the_mirror_as_its_own_image():
    rng = np.random.default_rng(2)
    a, m = image(rng, n=20), image(rng, n=20)
    both = ImageRegions(np.concatenate([a.features, m.features]),
                        np.concatenate([a.boxes, m.boxes]), a.size,
                        np.r_[np.zeros(20, bool), np.ones(20, bool)])
    w = rng.standard_normal((4, 6)).astype(np.float32)
    b = np.zeros(4, np.float32)
    kw = dict(pyramid=(1, 2), normalize=False)
    separate = encode([a, ImageRegions(m.features, m.boxes, a.size)], w, b, **kw)
    np.testing.assert_allclose(encode([both], w, b, **kw)[0], separate.mean(axis=0), rtol=1e-5)
    pooled = encode([both], w, b, flip_average=False, **kw)[0]  # one image of 40 regions
    np.testing.assert_allclose(pooled[:4], np.maximum(separate[0, :4], separate[1, :4]),
                               rtol=1e-5)


def test_empty_cells_get_the_background_response():
    x = np.eye(3, dtype=np.float32)
    boxes = np.array([[0, 0, 10, 10]] * 3, np.float32)  # every centre in the top-left cell
    raw = part_responses(x, np.zeros(3, np.int64), cells(boxes, 100, 100, (1, 2)), 1, 5)
    np.testing.assert_array_equal(raw[0, :2], np.ones((2, 3)))
    np.testing.assert_array_equal(raw[0, 2:], np.zeros((3, 3)))


def test_torch_path_equals_numpy():
    from partlearn.encoding._encoder import _encode_block, _Product

    rng = np.random.default_rng(3)
    images = [image(rng, n=int(rng.integers(3, 30))) for _ in range(5)]
    w = rng.standard_normal((4, 6)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    expected = encode(images, w, b, normalize=False).reshape(5, 5, 4)
    for top_k in (1, 2):
        torch_cpu = _Product(w, b, "cpu", backend="torch")  # the GPU code, on CPU tensors
        got = _encode_block(images, torch_cpu, (1, 2), 5, top_k, True)
        want = expected if top_k == 1 else \
            encode(images, w, b, top_k=2, normalize=False).reshape(5, 5, 4)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def labelled_images(seed=4, n_classes=3, n_images=5, dim=6):
    """Images of ``n_classes`` classes, each class's with a planted vector in some
    regions (so its parts fire on them), half of the images with a mirror."""
    rng = np.random.default_rng(seed)
    planted = 3 * rng.standard_normal((n_classes, dim))
    images, y = [], []
    for c in range(n_classes):
        for j in range(n_images):
            n = int(rng.integers(10, 25))
            item = image(rng, n=n, dim=dim, flips=rng.random(n) < 0.5 if j % 2 else None)
            x = item.features.astype(np.float32)
            x[:3] += planted[c]
            images.append(item._replace(features=x.astype(np.float16)))
            y.append(f"c{c}")
    return images, np.array(y)


def small_learner(**kw):
    return PartLearner(n_parts=2, n_negative_images=6, hard_negatives=20, nms_iou=0.0,
                       random_state=0, **kw)


def test_encoder_is_a_transformer():
    images, y = labelled_images()
    enc = PartEncoder(small_learner(), pyramid=(1, 2))
    with pytest.raises(NotFittedError):
        enc.transform(images)
    assert enc.fit(images, y) is enc and not hasattr(enc.learner, "parts_")  # a clone is fit
    codes = enc.transform(images)
    names = enc.get_feature_names_out()
    assert codes.shape == (15, 5 * 6) and codes.dtype == np.float32 and len(names) == 30
    assert names[0] == "c0/part0/1x1:0,0" and names[3] == "c1/part1/1x1:0,0"
    assert names[-1] == "c2/part1/2x2:1,1"
    assert list(enc.classes_) == ["c0", "c1", "c2"] and enc.n_features_in_ == 6
    assert clone(enc).get_params()["pyramid"] == (1, 2)
    assert enc.get_params()["learner__n_parts"] == 2
    # a fitted learner, as it is
    prefit = PartEncoder(enc.learner_, prefit=True, pyramid=(1, 2)).fit(images)
    assert prefit.learner_ is enc.learner_
    np.testing.assert_array_equal(prefit.transform(images), codes)
    no_x = PartEncoder(enc.learner_, prefit=True, pyramid=(1, 2)).fit()  # nothing to learn
    np.testing.assert_array_equal(no_x.transform(images), codes)
    assert not get_tags(no_x).target_tags.required and get_tags(enc).target_tags.required
    with pytest.raises(DataError, match="PartEncoder.fit needs X"):
        PartEncoder(small_learner()).fit()
    with pytest.raises(NotFittedError):
        PartEncoder(small_learner(), prefit=True).fit(images)
    with pytest.raises(ValueError, match="requires y to be passed"):
        PartEncoder(small_learner()).fit(images)


def test_training_codes_are_leave_one_out():
    """``fit_transform``: each training image encoded by its class's parts learnt
    without it and the other classes' full parts; ``transform``: the full parts."""
    images, y = labelled_images()
    kw = dict(pyramid=(1, 2), top_k=2, flip_average=True)
    enc = PartEncoder(small_learner(), **kw)
    train_codes = enc.fit_transform(images, y)
    test_codes = enc.transform(images)
    lrn = enc.learner_
    full = encode(images, lrn.parts_, lrn.part_bias_, **kw)
    np.testing.assert_array_equal(test_codes, full)
    mean, whitener = lrn.background_["mean"], lrn.background_["whitener"]
    for k, c in enumerate(lrn.classes_):
        cols = lrn.part_class_ == k
        for j, i in enumerate(np.flatnonzero(y == c)):
            assert lrn.positive_images_[k][j] == i
            w, b = lrn.parts_.copy(), lrn.part_bias_.copy()
            loo = lrn.class_results_[k]["loo_directions"][j].astype(np.float32) @ whitener
            w[cols], b[cols] = loo, -(loo @ mean)  # the class's parts learnt without image i
            expected = encode([images[i]], w, b, normalize=False, **kw)
            np.testing.assert_allclose(train_codes[i], signed_sqrt_l2(expected, axis=1)[0],
                                       rtol=1e-5, atol=1e-7)
    assert np.abs(train_codes - test_codes).max() > 1e-3  # not vacuous
    # a fitted learner's training set, in its order: the same codes
    prefit = PartEncoder(lrn, prefit=True, **kw)
    np.testing.assert_array_equal(prefit.fit_transform(images, y), train_codes)
    with pytest.raises(DataError, match="should be the learner's training set"):
        prefit.fit_transform(images[::-1], y[::-1])
    with pytest.raises(DataError, match="should be the learner's training set"):
        prefit.fit_transform(images[:-1], y[:-1])
    # codes(train=...): the training images among others
    both = images + images[:4]
    mixed = enc.codes(both[::-1], train=np.arange(len(both))[::-1][:15])
    np.testing.assert_array_equal(mixed[::-1][:15], train_codes)
    np.testing.assert_array_equal(mixed[:4], test_codes[:4][::-1])
    with pytest.raises(DataError, match="indices into X of the learner's 15 training images"):
        enc.codes(images, train=np.arange(14))
    # without leave-one-out, training codes are test codes
    plain = PartEncoder(small_learner(), leave_one_out=False, **kw)
    np.testing.assert_array_equal(plain.fit_transform(images, y), test_codes)


def test_encoder_array_forms():
    """2-D X: one region per image, 3-D X: R regions per image, boxes the whole image."""
    rng = np.random.default_rng(6)
    y = np.repeat([0, 1, 2], 6)
    X3 = rng.standard_normal((18, 4, 5)).astype(np.float32)
    whole = np.tile(np.array([[0, 0, 1, 1]], np.float32), (4, 1))
    enc3 = PartEncoder(small_learner(min_images=1)).fit(X3, y)
    as_images = [ImageRegions(x, whole, (1, 1)) for x in X3]
    enc_images = PartEncoder(small_learner(min_images=1)).fit(as_images, y)
    np.testing.assert_array_equal(enc3.learner_.parts_, enc_images.learner_.parts_)
    np.testing.assert_array_equal(enc3.transform(X3), enc_images.transform(as_images))
    np.testing.assert_array_equal(enc3.fit_transform(X3, y), enc_images.fit_transform(as_images, y))
    X2 = X3[:, 0]
    enc2 = PartEncoder(small_learner(min_images=1)).fit(X2, y)
    codes = enc2.transform(X2)
    expected = encode([ImageRegions(x[None], whole[:1], (1, 1)) for x in X2],
                      enc2.learner_.parts_, enc2.learner_.part_bias_)
    np.testing.assert_array_equal(codes, expected)
    with pytest.raises(ValueError, match="X has 4 features, but PartEncoder is expecting 5"):
        enc2.transform(X2[:, :4])
    with pytest.raises(ValueError, match="X has 4 features, but PartEncoder is expecting 5"):
        PartEncoder(enc2.learner_, prefit=True).fit(X2[:, :4])
    with pytest.raises(DataError, match="got a list of region arrays without boxes"):
        enc3.transform(list(X3))


def test_bad_input_is_named():
    rng = np.random.default_rng(5)
    w = np.zeros((2, 6), np.float32)
    good = image(rng)
    with pytest.raises(DataError, match="image 1: features should be \\(R, 6\\)"):
        encode([good, ImageRegions(np.zeros((3, 5)), np.zeros((3, 4)), (10, 10))], w,
               np.zeros(2))
    with pytest.raises(DataError, match="image 0: boxes should be \\(30, 4\\)"):
        encode([ImageRegions(good.features, good.boxes[:3], good.size)], w, np.zeros(2))
