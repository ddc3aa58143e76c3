"""``regions``: the dense multi-scale boxes of every kept image (``partlearn.regions``)."""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

from ..regions import regions_for_images
from ._base import Stage

logger = logging.getLogger(__name__)


class Regions(NamedTuple):
    """Every image's boxes ``(x0, y0, x1, y1)`` and mirror flags: image ``i`` owns rows
    ``offsets[i]:offsets[i + 1]``."""

    boxes: np.ndarray
    flips: np.ndarray
    offsets: np.ndarray

    def of(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))


def compute(ctx, w) -> None:
    r = ctx.cfg.regions
    data = ctx.get("dataset")
    boxes, flips, offsets = regions_for_images(
        data.width, data.height, scales=r.scales, stride=r.stride, full_image=r.full_image,
        flips=r.flips, min_size=r.min_size)
    w.save_array("boxes", boxes)
    w.save_array("flips", flips)
    w.save_array("offsets", offsets)
    w.save_array("kept", data.kept)
    counts = np.diff(offsets)
    w.meta["n_images"] = len(counts)
    w.meta["regions_per_image"] = {"min": int(counts.min(initial=0)),
                                   "max": int(counts.max(initial=0)),
                                   "mean": float(counts.mean()) if len(counts) else 0.0}
    logger.info("regions: %d images, %d regions (%.0f per image)", len(counts), len(boxes),
                w.meta["regions_per_image"]["mean"])


def load(ctx, entry) -> Regions:
    return Regions(entry.array("boxes"), entry.array("flips"),
                   entry.array("offsets", mmap=False))


STAGE = Stage(name="regions", version=1, inputs=("dataset",), fields=("regions.*",),
              libs=("numpy",),
              compute=compute, load=load)
