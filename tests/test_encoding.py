import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from partlearn._validation import DataError
from partlearn.encoding import ImageRegions, PartEncoder, cells, encode, part_responses


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
    pytest.importorskip("torch")
    from partlearn.encoding import _encode_block, _Product

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


def test_encoder_is_a_transformer():
    rng = np.random.default_rng(4)
    images = [image(rng) for _ in range(3)]
    w = rng.standard_normal((4, 6)).astype(np.float32)
    enc = PartEncoder(w, np.zeros(4), part_class=np.array([0, 0, 1, 1]),
                      class_names=["cat", "dog"], pyramid=(1, 2))
    with pytest.raises(NotFittedError):
        enc.transform(images)
    codes = enc.fit(images).transform(images)
    names = enc.get_feature_names_out()
    assert codes.shape == (3, 20) and len(names) == 20
    assert names[0] == "cat/part0/1x1:0,0" and names[3] == "dog/part1/1x1:0,0"
    assert names[-1] == "dog/part1/2x2:1,1"
    assert clone(enc).get_params()["pyramid"] == (1, 2)


def test_bad_input_is_named():
    rng = np.random.default_rng(5)
    w = np.zeros((2, 6), np.float32)
    good = image(rng)
    with pytest.raises(DataError, match="image 1: features should be \\(R, 6\\)"):
        encode([good, ImageRegions(np.zeros((3, 5)), np.zeros((3, 4)), (10, 10))], w,
               np.zeros(2))
    with pytest.raises(DataError, match="image 0: boxes should be \\(30, 4\\)"):
        encode([ImageRegions(good.features, good.boxes[:3], good.size)], w, np.zeros(2))
