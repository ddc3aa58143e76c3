"""The matching of regions to parts inside ``learn_class_parts``, all images at once.

``_softassign``: the graduated-assignment soft matching (Sinkhorn in the log domain,
with a slack region and a slack part); ``_harden``: the greedy hard matching, with
sparsity and spatial NMS; ``_suppression``/``_iou_overlap``: the NMS masks;
``_expected_score``: the objective the iterations report.
"""

from __future__ import annotations

import numpy as np


def _log_normalise(a: np.ndarray, axis: int) -> None:
    """``a -= logsumexp(a, axis)`` in place (every slice holds a finite entry)."""
    m = a.max(axis=axis, keepdims=True)
    t = np.subtract(a, m)
    np.exp(t, out=t)
    s = t.sum(axis=axis, keepdims=True)
    np.log(s, out=s)
    s += m
    a -= s


def _softassign(spad: np.ndarray, beta: float, slack: float, n_iter: int,
                sparsity: bool) -> np.ndarray:
    """Soft matching of every image's regions to the parts, all images at once.

    ``spad`` ``(n, P, R)``: scores, ``-inf`` for padding and suppressed pairs.
    The log matching matrix ``(n, P + 1, R + 1)`` gets a slack region (the part
    matches nothing) and a slack part (the region stays unassigned), both
    scoring ``slack``, so ``log M = beta * (s - slack)`` and 0 on the slacks.
    Each part's row (its regions and its slack: one region or none) and, with
    ``sparsity``, each region's column (its parts and its slack: at most one
    part) are normalised alternately, parts last. Returns the region-part
    weights ``(n, P, R)``. (Parts along the middle axis: both reductions run
    on long or contiguous axes.)
    """
    n, p, r = spad.shape
    log_m = np.zeros((n, p + 1, r + 1), np.float32)
    np.multiply(spad - np.float32(slack), np.float32(beta), out=log_m[:, :p, :r])
    parts = log_m[:, :p, :]
    if not sparsity:  # no region constraint: one pass over the parts is exact
        _log_normalise(parts, axis=2)
    else:
        regions = log_m[:, :, :r]  # a padded region holds only its slack entry: it stays put
        for _ in range(n_iter):
            _log_normalise(regions, axis=1)
            _log_normalise(parts, axis=2)
    weights = log_m[:, :p, :r]
    np.exp(weights, out=weights)
    return weights


def _harden(spad: np.ndarray, slack: float, sparsity: bool,
            overlap: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Each part's region in each image, greedily by score over all images at once.

    ``spad`` ``(n, P, R)``. The best remaining (part, region) pair of every
    image is taken while it scores above ``slack``; the part is then done in
    that image, and its region is removed for the other parts (``sparsity``),
    as are the regions that ``overlap`` it (NMS). Returns ``(match (n, P)
    int64, -1 for the slack; score (n, P) float32, NaN for the slack)``.
    """
    n, p, r = spad.shape
    avail = spad.copy()
    match = np.full((n, p), -1, np.int64)
    score = np.full((n, p), np.nan, np.float32)
    images = np.arange(n)
    for _ in range(p):
        flat = avail.reshape(n, p * r)
        best = flat.argmax(axis=1)
        value = flat[images, best]
        ok = value > slack
        if not ok.any():
            break
        i = images[ok]
        part, reg = np.divmod(best[ok], r)
        match[i, part] = reg
        score[i, part] = value[ok]
        avail[i, part, :] = -np.inf
        if sparsity:
            avail[i, :, reg] = -np.inf
        if overlap is not None:
            avail[i] = np.where(overlap[i, reg][:, None, :], -np.inf, avail[i])
    return match, score


def _suppression(match: np.ndarray, overlap: np.ndarray) -> np.ndarray:
    """``(n, P, R)``: region ``r`` overlaps the region chosen by another part than ``p``."""
    n = len(match)
    chosen = overlap[np.arange(n)[:, None], np.maximum(match, 0)]  # (n, P, R)
    chosen &= (match >= 0)[:, :, None]
    count = chosen.sum(axis=1, dtype=np.int32)  # (n, R)
    return (count[:, None, :] - chosen) > 0


def _iou_overlap(boxes: list[np.ndarray], r_max: int, threshold: float) -> np.ndarray:
    """``(n, R, R)`` bool: IoU above ``threshold`` within each image (padding: never)."""
    n = len(boxes)
    pad = np.zeros((n, r_max, 4), np.float32)
    for i, b in enumerate(boxes):
        pad[i, :len(b)] = b
    x0, y0, x1, y1 = (pad[..., k] for k in range(4))
    area = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    iw = np.clip(np.minimum(x1[:, :, None], x1[:, None, :])
                 - np.maximum(x0[:, :, None], x0[:, None, :]), 0, None)
    ih = np.clip(np.minimum(y1[:, :, None], y1[:, None, :])
                 - np.maximum(y0[:, :, None], y0[:, None, :]), 0, None)
    inter = iw * ih
    union = area[:, :, None] + area[:, None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter > threshold * union * (union > 0)  # > 0 of the IoU when union is 0


def _expected_score(weights, spad, slack) -> float:
    """Mean over images and parts of a part's expected matched score (slack: ``slack``)."""
    region = np.where(weights > 0, weights * np.where(np.isfinite(spad), spad, 0.0), 0.0)
    unmatched = np.clip(1.0 - weights.sum(axis=2), 0.0, None)  # the slack region's share
    n, p, _ = spad.shape
    return float((region.sum() + slack * unmatched.sum()) / (n * p))
