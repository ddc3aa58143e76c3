import numpy as np
import pytest

from partlearn.evaluation.localization import (contains, inside_object, keypoint_consistency,
                                    part_localization, random_boxes)


def test_hand_made_boxes_and_keypoints():
    # 4 images, 2 keypoints (beak, tail); the box holds the beak in 3 images
    kp = np.zeros((4, 2, 3), np.float32)
    kp[:, 0] = [[10, 10, 1], [12, 11, 1], [50, 50, 1], [11, 9, 1]]  # beak
    kp[:, 1] = [[80, 80, 1], [85, 80, 1], [90, 90, 1], [15, 15, 0]]  # tail (last: invisible)
    boxes = np.tile(np.array([[0, 0, 20, 20]], np.float32), (4, 1))
    np.testing.assert_array_equal(contains(boxes, kp)[:, 1], [False] * 4)  # invisible: no
    assert keypoint_consistency(boxes, kp) == (pytest.approx(0.75), 0)
    objects = np.array([[0, 0, 100, 100], [10, 10, 100, 100], [30, 30, 60, 60],
                        [0, 0, 10, 10]], np.float32)
    # box areas inside: all, (10x10)/(20x20)=1/4, none, 1/4 -> one of 4 at >= half
    assert inside_object(boxes, objects) == pytest.approx(0.25)
    assert inside_object(boxes, objects, min_fraction=0.25) == pytest.approx(0.75)


def test_random_boxes_keep_sizes_inside_the_image():
    rng = np.random.default_rng(0)
    boxes = np.array([[0, 0, 30, 20]] * 500, np.float32)
    sizes = np.array([[100, 50]] * 500)
    r = random_boxes(boxes, sizes, rng)
    np.testing.assert_allclose(r[:, 2] - r[:, 0], 30, rtol=1e-5)
    np.testing.assert_allclose(r[:, 3] - r[:, 1], 20, rtol=1e-5)
    assert r[:, 0].min() >= 0 and r[:, 2].max() <= 100 and r[:, 3].max() <= 50
    assert r[:, 0].std() > 15  # spread over the image


def test_a_part_on_its_keypoint_beats_the_control():
    rng = np.random.default_rng(1)
    n = 200
    kp = np.zeros((n, 3, 3), np.float32)
    kp[..., :2] = rng.uniform(0, 200, (n, 3, 2))
    kp[..., 2] = 1
    best = np.zeros((n, 2, 4), np.float32)
    best[:, 0] = np.c_[kp[:, 1, :2] - 10, kp[:, 1, :2] + 10]  # part 0: always on keypoint 1
    best[:, 1] = [0, 0, 20, 20]  # part 1: a corner
    out = part_localization(best, np.array([0, 0]), np.zeros(n, int), kp,
                            np.tile([[0, 0, 200, 200]], (n, 1)), np.tile([[200, 200]], (n, 1)),
                            keypoint_names=("beak", "eye", "tail"))
    assert out["per_part"]["keypoint_consistency"][0] == 1.0
    assert out["per_part"]["keypoint"][0] == "eye"
    assert out["per_part"]["keypoint_consistency"][1] < 0.1
    assert out["random_keypoint_consistency"] < 0.2 < out["keypoint_consistency"]
