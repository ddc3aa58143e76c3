"""``regions``: the dense multi-scale boxes of every kept image (``partlearn.features``)."""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

from .._validation import ConfigError
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


def params(r) -> dict:
    """``dense_regions``' parameters of the regions section ``r`` (the run's, or a
    model's: ``partlearn.model`` lays the same regions over new images)."""
    return dict(scales=r.scales, stride=r.stride, full_image=r.full_image, flips=r.flips,
                min_size=r.min_size)


def compute(ctx, w) -> None:
    from ..features import regions_for_images  # imports torch: only when the stage computes
    data = ctx.get("dataset")
    boxes, flips, offsets = regions_for_images(data.width, data.height,
                                               **params(ctx.cfg.regions))
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


def check(ctx) -> None:
    """``regions.min_size`` above every window of every image leaves only full images: an
    error; above the windows of some images: a warning saying how many lose which."""
    r = ctx.cfg.regions
    data = ctx.get("dataset")
    if not r.scales or not len(data.width):
        return
    short = np.minimum(data.width, data.height)
    largest = max(r.scales) * short  # each image's largest window side
    none = largest < r.min_size
    if none.all():
        raise ConfigError(f"regions.min_size={r.min_size} px exceeds every window: the largest "
                          f"is {largest.max():.0f} px (scale {max(r.scales)} of a "
                          f"{short.max()} px short side), so only whole images would remain; "
                          "lower regions.min_size")
    smallest = min(r.scales) * short < r.min_size
    if smallest.any():
        logger.warning("regions.min_size=%d px leaves out the windows of some scales in %d of "
                       "%d images (%d keep no window but the whole image)", r.min_size,
                       int(smallest.sum()), len(short), int(none.sum()))


def load(ctx, entry) -> Regions:
    return Regions(entry.array("boxes"), entry.array("flips"),
                   entry.array("offsets", mmap=False))


STAGE = Stage(name="regions", version=1, inputs=("dataset",), fields=("regions.*",),
              libs=("numpy",),
              compute=compute, load=load, check=check)
