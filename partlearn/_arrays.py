"""Small numpy helpers shared by the stages (torch-free)."""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Each slice along ``axis`` scaled to unit L2 norm (all-zero slices stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0).astype(np.float32)


def signed_sqrt_l2(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``sign(x) * sqrt(|x|)``, then each slice along ``axis`` scaled to unit L2 norm.

    All-zero slices stay zero. Returns float32.
    """
    x = np.asarray(x, dtype=np.float32)
    return l2_normalize(np.sign(x) * np.sqrt(np.abs(x)), axis=axis)
