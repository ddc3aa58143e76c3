import numpy as np
import pytest

from partlearn.config import RegionsConfig
from partlearn.features import dense_regions, regions_for_images
from partlearn._validation import ConfigError

DEFAULTS = dict(scales=RegionsConfig.scales, stride=RegionsConfig.stride,
                full_image=RegionsConfig.full_image, min_size=RegionsConfig.min_size)


@pytest.mark.parametrize("size", [(448, 448), (500, 333), (333, 500), (200, 200), (500, 281)])
def test_default_count_and_geometry(size):
    w, h = size
    boxes, flips = dense_regions(w, h, **DEFAULTS)
    assert 100 <= len(boxes) <= 300
    assert boxes.dtype == np.float32 and not flips.any()
    np.testing.assert_array_equal(boxes[0], [0, 0, w, h])  # full image first
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= w + 1e-3).all() and (boxes[:, 3] <= h + 1e-3).all()
    sides = boxes[1:, 2] - boxes[1:, 0]
    np.testing.assert_allclose(sides, boxes[1:, 3] - boxes[1:, 1], rtol=1e-6)  # square
    np.testing.assert_allclose(np.unique(sides.round(3)),
                               sorted(round(s * min(w, h), 3) for s in DEFAULTS["scales"]),
                               rtol=1e-5)
    # every scale's grid touches all four borders
    for s in DEFAULTS["scales"]:
        b = boxes[1:][np.isclose(sides, s * min(w, h))]
        assert b[:, 0].min() == 0 and b[:, 1].min() == 0
        assert np.isclose(b[:, 2].max(), w) and np.isclose(b[:, 3].max(), h)
        step = np.diff(np.unique(b[:, 0]))
        assert (step <= DEFAULTS["stride"] * s * min(w, h) + 1e-3).all()


def test_deterministic_and_flips():
    a, fa = dense_regions(500, 333, **DEFAULTS)
    b, fb = dense_regions(500, 333, **DEFAULTS)
    np.testing.assert_array_equal(a, b)
    c, fc = dense_regions(500, 333, **DEFAULTS | {"full_image": True}, flips=True)
    assert len(c) == 2 * len(a)
    np.testing.assert_array_equal(c[: len(a)], a)
    np.testing.assert_array_equal(c[len(a):], a)
    assert not fc[: len(a)].any() and fc[len(a):].all()


def test_small_images_keep_the_full_image():
    boxes, _ = dense_regions(12, 9, **DEFAULTS)
    np.testing.assert_array_equal(boxes, [[0, 0, 12, 9]])
    with pytest.raises(ConfigError, match="no region fits a 12x9 px image"):
        dense_regions(12, 9, **DEFAULTS | {"full_image": False})
    boxes, _ = dense_regions(40, 40, **DEFAULTS)  # scale 0.25 gives 10 px < min_size: left out
    assert (boxes[1:, 2] - boxes[1:, 0]).min() >= DEFAULTS["min_size"]


def test_many_images_offsets():
    widths, heights = np.array([448, 500, 448]), np.array([448, 333, 448])
    boxes, flips, offsets = regions_for_images(widths, heights, **DEFAULTS)
    assert offsets[0] == 0 and offsets[-1] == len(boxes) == len(flips)
    for i, (w, h) in enumerate(zip(widths, heights)):
        np.testing.assert_array_equal(boxes[offsets[i]:offsets[i + 1]], dense_regions(w, h, **DEFAULTS)[0])
