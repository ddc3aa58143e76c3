import numpy as np

from partlearn.explain import part_heatmap


def test_planted_pattern_lights_up_where_it_was_planted():
    # 100 x 50 image; part 0 fires (5.0) only on the region at the right end
    boxes = np.array([[0, 0, 100, 50], [0, 0, 30, 30], [70, 10, 100, 40]], np.float32)
    responses = np.array([[-1.0, 0.5], [-2.0, 0.5], [5.0, 0.5]], np.float32)
    heat = part_heatmap(boxes, responses, np.array([1.0, 0.0]), (100, 50), grid=20)
    assert heat.shape == (10, 20)  # the image's aspect ratio
    ys, xs = np.nonzero(heat)
    assert xs.min() >= 14 and ys.min() >= 2 and ys.max() <= 7  # cells inside x 70-100, y 10-40
    assert heat.max() == 5.0
    # a weighted sum over parts: part 1 (0.5 everywhere) with weight 2 adds 1.0 everywhere
    both = part_heatmap(boxes, responses, np.array([1.0, 2.0]), (100, 50), grid=20)
    np.testing.assert_allclose(both - heat, 1.0)
