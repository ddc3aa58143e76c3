"""Part-response encoding: how strongly each learned part fires in each image.

Stage two of the method's input (Sicre & Jurie, CVIU 2015): an image is
described by the response of every part of every class, over a spatial
pyramid. A part scores a region ``x`` as ``x @ w + b``; a cell's response is
the max (``top_k=1``) or the mean of the ``top_k`` best scores among the
image's regions whose centre falls in that cell (0 for a cell without one). Levels of the pyramid are grid
sides (``(1, 2)``: the whole image, then 2x2 cells). With ``flip_average``,
the regions flagged as coming from the mirrored image are encoded as an image
of their own (cells in its own frame) and the two codes are averaged. Then
signed square root and L2 over the whole vector.

Layout of a code: ``cells x parts``, cell-major; ``feature_names`` says which
class, part and cell each column is. The products run by blocks of images
(regions x parts, one matrix product per block): numpy on the CPU, torch on a
GPU. This module imports torch only for the GPU.

``PartEncoder``: the encoding as a scikit-learn transformer over a
``PartLearner`` (fitted by it, or given fitted: ``prefit``); its
``fit_transform`` returns the leave-one-out training codes (each training
image by its class's parts learnt without it).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._arrays import signed_sqrt_l2
from ._validation import DataError
from .config import EncodingConfig

_E = EncodingConfig


class ImageRegions(NamedTuple):
    """One image for the encoder: region features ``(R, D)``, boxes ``(R, 4)``
    ``x0, y0, x1, y1`` in pixels, ``size`` ``(width, height)``, and ``flips``
    ``(R,)`` bool (regions of the mirrored image) or None."""

    features: np.ndarray
    boxes: np.ndarray
    size: tuple
    flips: np.ndarray | None = None


def cells(boxes: np.ndarray, width, height, pyramid) -> np.ndarray:
    """``(R, levels)`` int: the cell of each region's centre at every pyramid level,
    numbered row-major within a level and offset so that all levels' cells are
    distinct (level sides ``(1, 2)``: cell 0, then cells 1-4)."""
    boxes = np.asarray(boxes, np.float32)
    cx = (boxes[:, 0] + boxes[:, 2]) / (2 * np.asarray(width, np.float32))
    cy = (boxes[:, 1] + boxes[:, 3]) / (2 * np.asarray(height, np.float32))
    out = np.empty((len(boxes), len(pyramid)), np.int64)
    offset = 0
    for level, g in enumerate(pyramid):
        col = np.clip((cx * g).astype(np.int64), 0, g - 1)
        row = np.clip((cy * g).astype(np.int64), 0, g - 1)
        out[:, level] = offset + row * g + col
        offset += g * g
    return out


def n_cells(pyramid) -> int:
    return int(sum(g * g for g in pyramid))


def part_responses(scores: np.ndarray, image: np.ndarray, cell: np.ndarray, n_images: int,
                   n_cell: int, top_k: int = 1) -> np.ndarray:
    """``(n_images, n_cell, P)``: per (image, cell), the max (``top_k=1``) or the
    mean of the ``top_k`` best of the ``scores`` ``(rows, P)`` of the rows there.

    ``image`` ``(rows,)`` and ``cell`` ``(rows, levels)`` say where each row
    belongs (every row counts once per level). A cell where no region's centre
    falls gets 0: part scores are background z-scores, so 0 is what the
    background gives on average.
    """
    rows, p = scores.shape
    out = np.zeros((n_images * n_cell, p), np.float32)
    for level in range(cell.shape[1]):
        group = image * n_cell + cell[:, level]
        order = np.argsort(group, kind="stable")
        g = group[order]
        starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        s = scores[order]
        if top_k == 1:
            values = np.maximum.reduceat(s, starts, axis=0)
        else:
            values = _top_k_mean(s, starts, top_k)
        out[g[starts]] = values
    return out.reshape(n_images, n_cell, p)


def _top_k_mean(s: np.ndarray, starts: np.ndarray, k: int) -> np.ndarray:
    """Mean of the ``k`` largest rows of each group (all of them when fewer)."""
    sizes = np.diff(np.r_[starts, len(s)])
    n, width = len(starts), int(sizes.max())
    pad = np.full((n, width, s.shape[1]), -np.inf, np.float32)
    within = np.arange(len(s)) - np.repeat(starts, sizes)
    pad[np.repeat(np.arange(n), sizes), within] = s
    kk = min(k, width)
    top = -np.partition(-pad, kk - 1, axis=1)[:, :kk]  # (n, kk, P), -inf where short
    top[np.isinf(top)] = 0.0
    return top.sum(axis=1) / np.minimum(sizes, kk)[:, None]


def encode(images, weights, bias, *, pyramid=_E.pyramid, top_k: int = _E.top_k,
           flip_average: bool = _E.flip_average, normalize: bool = True,
           batch_images: int = _E.batch_images, device: str = "cpu") -> np.ndarray:
    """Codes ``(n, n_cells * P)`` of a sequence of ``ImageRegions`` (see the module).

    ``weights`` ``(P, D)``, ``bias`` ``(P,)``. Images come by blocks of
    ``batch_images``; their float16 features are converted per block, so a
    memory-mapped feature cache streams. ``device``: "cpu" or a torch CUDA
    device for the products and the max.
    """
    weights = np.ascontiguousarray(weights, np.float32)
    bias = np.asarray(bias, np.float32)
    if weights.ndim != 2 or bias.shape != (len(weights),):
        raise DataError(f"encode: weights {weights.shape} and bias {bias.shape} should be "
                        "(P, D) and (P,)")
    n_cell = n_cells(pyramid)
    product = _Product(weights, bias, device)
    codes = []
    block: list = []
    for k, item in enumerate(images):
        block.append(_check_image(k, item, weights.shape[1]))
        if len(block) == batch_images:
            codes.append(_encode_block(block, product, pyramid, n_cell, top_k, flip_average))
            block = []
    if block:
        codes.append(_encode_block(block, product, pyramid, n_cell, top_k, flip_average))
    if not codes:
        return np.zeros((0, n_cell * len(weights)), np.float32)
    out = np.concatenate(codes).reshape(-1, n_cell * len(weights))
    return signed_sqrt_l2(out, axis=1) if normalize else out


def _check_image(k: int, item, dim: int) -> ImageRegions:
    item = ImageRegions(*item)
    shape = np.shape(item.features)
    if len(shape) != 2 or shape[0] < 1 or shape[1] != dim:
        raise DataError(f"encode: image {k}: features should be (R, {dim}) with R >= 1, got "
                        f"{shape}")
    if np.shape(item.boxes) != (shape[0], 4):
        raise DataError(f"encode: image {k}: boxes should be ({shape[0]}, 4), got "
                        f"{np.shape(item.boxes)}")
    if item.flips is not None and np.shape(item.flips) != (shape[0],):
        raise DataError(f"encode: image {k}: flips should be ({shape[0]},), got "
                        f"{np.shape(item.flips)}")
    return item


def _encode_block(block, product, pyramid, n_cell, top_k, flip_average) -> np.ndarray:
    """``(n, n_cell, P)`` raw responses of one block of images."""
    x, image, cell, views = [], [], [], 0
    view_of = []  # per image: its views (the image, and its mirror when averaged)
    for item in block:
        flips = (np.zeros(len(item.boxes), bool) if item.flips is None
                 else np.asarray(item.flips, bool))
        c = cells(item.boxes, item.size[0], item.size[1], pyramid)
        parts = [~flips, flips] if flip_average and flips.any() and (~flips).any() \
            else [np.ones(len(flips), bool)]
        mine = []
        for rows in parts:
            x.append(np.asarray(item.features)[rows])
            image.append(np.full(int(rows.sum()), views))
            cell.append(c[rows])
            mine.append(views)
            views += 1
        view_of.append(mine)
    x = np.concatenate(x).astype(np.float32, copy=False)
    image, cell = np.concatenate(image), np.concatenate(cell)
    responses = product(x, image, cell, views, n_cell, top_k)  # (views, n_cell, P)
    return np.stack([responses[v].mean(axis=0) for v in view_of])


class _Product:
    """Scores of rows against the parts and their per-(image, cell) pooling."""

    def __init__(self, weights, bias, device: str, backend: str | None = None):
        self.weights, self.bias, self.device = weights, bias, device
        self.backend = backend or ("numpy" if device == "cpu" else "torch")
        if self.backend == "torch":
            import torch

            self.torch = torch
            self.w = torch.from_numpy(weights).to(device)
            self.b = torch.from_numpy(bias).to(device)

    def __call__(self, x, image, cell, n_images, n_cell, top_k):
        if self.backend == "numpy":
            return part_responses(x @ self.weights.T + self.bias, image, cell, n_images,
                                  n_cell, top_k)
        torch = self.torch
        s = torch.from_numpy(x).to(self.device, non_blocking=True) @ self.w.T + self.b
        if top_k > 1:  # the top-k mean's padding is done by numpy
            return part_responses(s.cpu().numpy(), image, cell, n_images, n_cell, top_k)
        p = s.shape[1]
        out = torch.full((n_images * n_cell, p), float("nan"), device=self.device)
        for level in range(cell.shape[1]):
            group = torch.from_numpy(image * n_cell + cell[:, level]).to(self.device)
            out.scatter_reduce_(0, group[:, None].expand(-1, p), s, reduce="amax",
                                include_self=False)
        out = torch.nan_to_num(out, nan=0.0)  # cells without a region, as part_responses
        return out.reshape(n_images, n_cell, p).cpu().numpy()


def part_names(part_class, class_names=None) -> list[str]:
    """``<class>/part<j>`` of every part: ``j`` counts the parts of its class in order; a
    part's class is ``class_names[part_class[p]]``, or ``part_class[p]`` itself."""
    part_class = np.asarray(part_class)
    index = np.zeros(len(part_class), np.int64)
    for c in np.unique(part_class):
        index[part_class == c] = np.arange(int((part_class == c).sum()))
    return [f"{c if class_names is None else class_names[c]}/part{j}"
            for c, j in zip(part_class.tolist(), index.tolist())]


def feature_names(part_class, pyramid, class_names=None) -> np.ndarray:
    """Names of the code's columns: ``<class>/part<j>/<g>x<g>:<row>,<col>`` (cell-major,
    see ``part_names``)."""
    parts = part_names(part_class, class_names)
    names = [f"{p}/{g}x{g}:{r},{col}" for g in pyramid for r in range(g) for col in range(g)
             for p in parts]
    return np.asarray(names, dtype=object)


def __getattr__(name):
    """The transformer lives in ``_encoder`` (it imports this module)."""
    if name == "PartEncoder":
        from ._encoder import PartEncoder

        return PartEncoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
