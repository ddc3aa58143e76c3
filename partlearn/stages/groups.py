"""``groups``: the training images partitioned without labels (Sicre, Avrithis, Kijak &
Jurie, CVPR 2017): k-means (faiss, seeded, the best of ``groups.restarts`` runs) of
their L2-normalised global descriptors into ``groups.n_groups`` groups (0: the rule
of thumb ``round(sqrt(n / 2))``); a group smaller than ``groups.min_images`` is merged
into the group of the nearest other centroid, smallest first, and the log says so.
No label is read: the value is a group index per training image, 0..G-1.
"""

from __future__ import annotations

import logging

import numpy as np

from .. import _faiss
from .._arrays import l2_normalize
from .._validation import DataError
from ..classify import uses
from ._base import Stage

logger = logging.getLogger(__name__)


def group_images(x: np.ndarray, n_groups: int, niter: int, restarts: int, min_images: int,
                 seed: int) -> np.ndarray:
    """``(n,)`` group of each row of ``x`` (unit rows), groups numbered 0..G-1 in order of
    their first image."""
    n = len(x)
    g = n_groups or max(2, int(round(np.sqrt(n / 2))))
    if not 2 <= g <= n:
        raise DataError(f"groups.n_groups={g}: {n} training images can make 2..{n} groups")
    centroids, _ = _faiss.kmeans(x, g, niter, restarts, seed)
    group = np.argmax(x @ centroids.T, axis=1)  # nearest centroid (unit rows, cosine)
    alive = np.bincount(group, minlength=g) > 0
    while True:  # merge the smallest too-small group into its nearest neighbour group
        sizes = np.bincount(group, minlength=g)
        small = [k for k in np.argsort(sizes, kind="stable")
                 if alive[k] and sizes[k] < min_images]
        if not small or alive.sum() <= 2:
            break
        k = small[0]
        sim = centroids @ centroids[k]
        sim[~alive | (np.arange(g) == k)] = -np.inf
        into = int(np.argmax(sim))
        logger.info("groups: group of %d image(s) merged into one of %d (groups.min_images=%d)",
                    sizes[k], sizes[into], min_images)
        group[group == k] = into
        alive[k] = False
    _, first = np.unique(group, return_index=True)
    order = np.argsort(first, kind="stable")  # renumber by first image
    renumber = np.empty(group.max() + 1, np.int64)
    renumber[np.unique(group)[order]] = np.arange(len(order))
    return renumber[group]


def compute(ctx, w) -> None:
    g = ctx.cfg.groups
    data, feats = ctx.get("dataset"), ctx.get("features")
    x = l2_normalize(np.asarray(feats.global_[data.train], np.float32), axis=1)
    group = group_images(x, g.n_groups, g.kmeans_iter, g.restarts, g.min_images, ctx.cfg.seed)
    w.save_array("group", group)
    sizes = np.bincount(group)
    w.meta.update(n_groups=len(sizes), sizes=sizes.tolist())
    logger.info("groups: %d training images in %d groups of %d..%d images", len(group),
                len(sizes), sizes.min(), sizes.max())


def load(ctx, entry) -> np.ndarray:
    return entry.array("group", mmap=False)


def uses_groups(cfg) -> bool:
    from .hierarchy import uses_hierarchy

    return uses(cfg, "parts[unsup]") or (uses_hierarchy(cfg)
                                         and cfg.hierarchy.source == "groups")


STAGE = Stage(name="groups", version=1, inputs=("dataset", "features"),
              fields=("groups.*", "seed"), libs=("numpy", "faiss-cpu", "faiss-gpu"),
              seeded=True, compute=compute, load=load, applies=uses_groups)
