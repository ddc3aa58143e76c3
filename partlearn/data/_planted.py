"""Synthetic region features with planted parts: the shared test and benchmark data of
part learning, as ``sklearn.datasets.make_blobs`` is scikit-learn's."""

from __future__ import annotations

import numpy as np


def make_planted_regions(n_classes: int, n_images: int, n_regions: int, dim: int, *,
                         k: int = 3, noise: float = 0.5, n_clutter: int = 40,
                         vary_regions: bool = False, seed: int = 0) -> dict:
    """Every image: ``n_regions`` noisy copies of vectors from a clutter set shared by all
    classes, except ``k`` regions (at random positions) that are noisy copies of its class's
    ``k`` planted prototypes; with ``vary_regions`` an image has between ``n_regions // 2``
    and ``n_regions`` regions. Boxes at random in a 100x100 image, many overlapping.

    Returns a dict: ``X`` (float32 ``(r, dim)`` per image, ``n_images`` per class in class
    order), ``y`` (class names ``c0``, ``c1``, ...), ``label`` (their indices), ``boxes``
    (``(r, 4)`` per image), ``planted`` ``(n_classes, k, dim)``, ``clutter``, ``where``
    (the planted regions' positions per image) and ``names``."""
    rng = np.random.default_rng(seed)
    clutter = rng.standard_normal((n_clutter, dim))
    planted = rng.standard_normal((n_classes, k, dim))
    X, label, boxes, where = [], [], [], []
    for c in range(n_classes):
        for _ in range(n_images):
            r = int(rng.integers(n_regions // 2, n_regions + 1)) if vary_regions else n_regions
            x = clutter[rng.integers(n_clutter, size=r)]
            pos = rng.choice(r, k, replace=False)
            x[pos] = planted[c]
            x = x + noise * rng.standard_normal(x.shape)
            xy = rng.uniform(0, 60, (r, 2))
            wh = rng.uniform(20, 40, (r, 2))
            X.append(x.astype(np.float32))
            boxes.append(np.c_[xy, xy + wh].astype(np.float32))
            label.append(c)
            where.append(pos)
    names = np.array([f"c{c}" for c in range(n_classes)])
    label = np.array(label)
    return {"X": X, "y": names[label], "label": label, "boxes": boxes, "planted": planted,
            "clutter": clutter, "where": where, "names": names}
