"""Region features from an image pyramid: each region's descriptor from the scale that
shows it at the size the backbone was trained on, or the mean over the scales.

One forward pass at short side 448 (stride 32) sees a window of a quarter of the short
side as 3.5 x 3.5 cells, and cropping that window to 224 px gives a rather different
descriptor (mean cosine 0.57; BENCHMARKS "What `roi` features give up"). A larger
image shows small windows at a closer scale and large windows at a worse one, so the
pyramid picks, per region, the short side whose resized window is nearest
``target`` px. Arrays in, arrays out; the ``multiscale`` stage does the caching.
"""

from __future__ import annotations

import numpy as np


def window_px(boxes: np.ndarray, image_short: float, short_side: float) -> np.ndarray:
    """``(R,)`` the side of each box (geometric mean of width and height) in pixels of the
    image resized so its short side (``image_short`` px) becomes ``short_side``."""
    boxes = np.asarray(boxes, np.float64)
    side = np.sqrt(np.maximum(boxes[:, 2] - boxes[:, 0], 0)
                   * np.maximum(boxes[:, 3] - boxes[:, 1], 0))
    return side * (short_side / image_short)


def nearest_scale(boxes: np.ndarray, image_short: float, short_sides, target: float
                  ) -> np.ndarray:
    """``(R,)`` int: per box, the index into ``short_sides`` whose resized window is
    nearest ``target`` px in ratio (|log(px / target)|); ties go to the earlier scale."""
    sides = np.asarray(short_sides, np.float64)
    px = window_px(boxes, image_short, 1.0)[:, None] * sides[None, :]
    return np.argmin(np.abs(np.log(np.maximum(px, 1e-6) / target)), axis=1)


def combine(rows: list[np.ndarray], choice: np.ndarray | None) -> np.ndarray:
    """One image's region descriptors from its rows at every scale (``rows[k]``: ``(R, D)``,
    the same regions in the same order): row ``r`` of scale ``choice[r]``, or with
    ``choice`` None the mean over the scales, L2-normalised again. float32."""
    if choice is not None:
        out = np.array(rows[0], np.float32)
        for k in range(1, len(rows)):
            mask = choice == k
            out[mask] = rows[k][mask]
        return out
    mean = np.mean([np.asarray(r, np.float32) for r in rows], axis=0)
    norm = np.linalg.norm(mean, axis=1, keepdims=True)
    return mean / np.maximum(norm, 1e-12)
