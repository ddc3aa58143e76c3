"""Small numpy helpers shared by the stages (torch-free)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._validation import DataError


def indices_by_label(labels, n_labels: int) -> list[np.ndarray]:
    """``[np.flatnonzero(labels == k) for k in range(n_labels)]`` (ascending indices),
    by one stable sort: O(N log N) rather than a pass over every label per label."""
    labels = np.asarray(labels, np.int64).ravel()
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=n_labels)  # labels past n_labels: cut below
    return np.split(order, np.cumsum(counts)[:-1])[:n_labels]


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


class RegionStack(NamedTuple):
    """The regions of several images in one array: image ``i`` owns rows
    ``x[offsets[i]:offsets[i + 1]]``. Built once by ``stack_regions`` and shared
    (a negative pool serves every class)."""

    x: np.ndarray
    offsets: np.ndarray


def check_regions_shape(a, dim: int | None, who: str, i: int) -> tuple[int, int]:
    """``(R, D)`` of image ``i``'s region array ``a``; ``DataError`` (naming ``who`` and
    the image) unless it is 2-D with R >= 1 and, when ``dim`` is given, D == ``dim``."""
    shape = np.shape(a)
    if len(shape) != 2 or shape[0] < 1 or (dim is not None and shape[1] != dim):
        want = f"(R, {dim})" if dim is not None else "(R, D)"
        raise DataError(f"{who} image {i}: regions should be a {want} array with R >= 1, "
                        f"got shape {shape}")
    return shape


def stack_regions(arrays, dim: int | None = None, who: str = "regions",
                  dtype=np.float32) -> RegionStack:
    """Rows of a list of ``(R_i, D)`` arrays (float16 memmaps too) in one ``dtype``
    ``(sum R_i, D)`` array, and the offsets ``(n + 1,)`` of each image's rows.
    ``DataError`` (naming ``who``, the image and the region) on a bad shape or
    NaN/inf (with float16: or a value beyond its range)."""
    shapes = []
    for i, a in enumerate(arrays):
        shapes.append(check_regions_shape(a, dim, who, i)[0])
        dim = np.shape(a)[1]
    offsets = np.zeros(len(shapes) + 1, np.int64)
    np.cumsum(shapes, out=offsets[1:])
    out = np.empty((int(offsets[-1]), dim or 0), dtype)
    for i, a in enumerate(arrays):
        out[offsets[i]:offsets[i + 1]] = a  # converts one image at a time
    if not np.isfinite(out).all():
        bad = ~np.isfinite(out).all(axis=1)
        row = int(np.flatnonzero(bad)[0])
        i = int(np.searchsorted(offsets, row, side="right") - 1)
        beyond = " (or a value beyond float16)" if out.dtype == np.float16 else ""
        raise DataError(f"{who} image {i}: region {row - offsets[i]} holds NaN or inf{beyond} "
                        f"({int(bad.sum())} such regions in {len(shapes)} images)")
    return RegionStack(out, offsets)


class LazyImages:
    """``fn(i)`` for every ``i`` of ``index``, made only as it is iterated or indexed:
    a sequence of per-image arrays (for ``sample_regions``) of which one at a time is
    in memory, where a list would hold them all."""

    def __init__(self, fn, index):
        self.fn, self.index = fn, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> np.ndarray:
        return self.fn(self.index[k])

    def __iter__(self):
        return (self.fn(i) for i in self.index)


def sample_regions(images, n_max: int, rng) -> np.ndarray:
    """About ``n_max`` regions of a sequence of ``(R_i, D)`` arrays (float16 memmaps,
    ``LazyImages`` too),
    float32 ``(n, D)``: the same number from every image, ``n_max // len(images)``
    (at least 1; all of an image's regions when it has fewer), drawn without
    replacement by the numpy ``Generator`` ``rng``, in the image's row order.

    The one region sampler: the PCA stage's and the part learner's background
    samples come from it, so the same seed draws the same regions everywhere.
    """
    per_image = max(1, n_max // max(1, len(images)))
    sample = []
    for x in images:
        rows = np.sort(rng.choice(len(x), size=min(len(x), per_image), replace=False))
        sample.append(np.asarray(x[rows], np.float32))
    return np.concatenate(sample)
