"""Dense multi-scale square regions, in original-image pixels.

Window sides are fractions of the image's short side; windows of one scale are
laid on a regular grid whose step is at most ``stride`` times the side and
which touches all four borders. The full image comes first, then the scales
in the order given, each row-major. With ``flips`` the whole set is repeated
with ``flip=True``: same boxes, content taken from the mirrored image.
"""

from __future__ import annotations

import math

import numpy as np

from .._validation import ConfigError
from ..config import RegionsConfig

_R = RegionsConfig  # the defaults live there, once


def _positions(length: float, side: float, step: float) -> np.ndarray:
    if length <= side:
        return np.zeros(1)
    n = math.ceil((length - side) / step - 1e-9) + 1
    return np.linspace(0.0, length - side, n)


def dense_regions(width, height, scales=_R.scales, stride=_R.stride, full_image=_R.full_image,
                  flips=_R.flips, min_size=_R.min_size):
    """Boxes ``(R, 4)`` float32 ``x0, y0, x1, y1`` and flip flags ``(R,)`` bool for one image.

    Windows whose side is below ``min_size`` pixels are left out; an image too
    small for any window still has its full-image region (if ``full_image``).
    """
    if width < 1 or height < 1:
        raise ConfigError(f"image size {width}x{height} px: width and height must be >= 1")
    if not 0 < stride <= 1:
        raise ConfigError(f"regions.stride={stride} must be in (0, 1]")
    short = min(width, height)
    parts = [np.array([[0.0, 0.0, width, height]])] if full_image else []
    for scale in scales:
        if not 0 < scale <= 1:
            raise ConfigError(f"regions.scales holds {scale}; scales must be in (0, 1]")
        side = scale * short
        if side < min_size:
            continue
        xs = _positions(width, side, stride * side)
        ys = _positions(height, side, stride * side)
        y0, x0 = np.meshgrid(ys, xs, indexing="ij")
        x0, y0 = x0.ravel(), y0.ravel()
        parts.append(np.stack([x0, y0, x0 + side, y0 + side], axis=1))
    if not parts:
        raise ConfigError(
            f"no region fits a {width}x{height} px image: every window is below "
            f"regions.min_size={min_size} px and regions.full_image is false"
        )
    boxes = np.concatenate(parts).astype(np.float32)
    flip = np.zeros(len(boxes), dtype=bool)
    if flips:
        boxes = np.concatenate([boxes, boxes])
        flip = np.concatenate([flip, ~flip])
    return boxes, flip


def regions_for_images(widths, heights, **params):
    """Regions of many images: ``(boxes (T, 4), flips (T,), offsets (N + 1,))``.

    Image ``i`` owns rows ``offsets[i]:offsets[i + 1]``. Images of equal size
    share one computation.
    """
    memo: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    boxes, flips = [], []
    for w, h in zip(np.asarray(widths).tolist(), np.asarray(heights).tolist()):
        if (w, h) not in memo:
            memo[(w, h)] = dense_regions(w, h, **params)
        b, f = memo[(w, h)]
        boxes.append(b)
        flips.append(f)
    counts = np.array([len(b) for b in boxes], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, bool), offsets
    return np.concatenate(boxes), np.concatenate(flips), offsets
