"""DP-Net's network, its three constraints and its padded region batches.

The formulas are in ``partlearn.dpnet``'s docstring; import these from there. Shared by
the training (``_train``) and the inference (``dpnet``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .._arrays import check_regions_shape, l2_normalize
from .._validation import DataError


# ------------------------------------------------------------------ the model


class DPNet(nn.Module):
    """Part layer ``U`` (P, D), classifier ``V`` (C, P) and ``bias`` (C,).

    ``forward(x, mask)``: ``x`` (B, R, D) region features with unit rows (as
    ``train_dpnet`` and ``predict`` give them: normalising every batch again
    would cost as much as the similarities), ``mask`` (B, R) bool, True for
    real regions.
    Returns ``logits`` (B, C), ``S`` (B, P, R) similarities (masked entries
    hold whatever the zero padding gives; use ``mask``) and ``b`` (B, P), the
    max of ``S`` over each image's real regions. ``dense=False``: the same
    ``logits`` and ``b`` with the same gradients, for about half the backward
    cost, but ``S`` carries no gradient (for a loss that does not use ``S``).
    """

    def __init__(self, n_parts: int, dim: int, n_classes: int):
        super().__init__()
        self.U = nn.Parameter(torch.zeros(n_parts, dim))
        self.V = nn.Parameter(torch.zeros(n_classes, n_parts))
        self.bias = nn.Parameter(torch.zeros(n_classes))

    def parts(self) -> torch.Tensor:
        """``U`` with unit rows."""
        return nn.functional.normalize(self.U, dim=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, dense: bool = True):
        x = x.to(self.U.dtype)
        U = self.parts()
        if dense:
            S = torch.einsum("pd,brd->bpr", U, x)
            b = S.masked_fill(~mask[:, None, :], -torch.inf).amax(dim=2)
        else:  # the max's gradient reaches one region per (image, part): find it without
            # autograd, then recompute only those similarities with it (half the cost)
            with torch.no_grad():
                S = torch.einsum("pd,brd->bpr", U, x)
                best = S.masked_fill(~mask[:, None, :], -torch.inf).argmax(dim=2)  # (B, P)
            picked = x[torch.arange(x.shape[0], device=x.device)[:, None], best]  # (B, P, D)
            b = (picked * U[None]).sum(dim=2)
        logits = b @ self.V.T + self.bias
        return logits, S, b


# ------------------------------------------------------------------ the constraints


def orthogonality(U: torch.Tensor) -> torch.Tensor:
    """``C⊥(U) = -(1/P²) Σ_{i≠j} (u_iᵀu_j)²`` over the L2-normalised rows of ``U``
    (P, D): 0 for orthogonal parts, down to about -1 for identical ones. Maximised."""
    u = nn.functional.normalize(U.float(), dim=1)
    gram = u @ u.T
    P = u.shape[0]
    off = gram.pow(2).sum() - gram.diagonal().pow(2).sum()
    return -off / P ** 2


def assignment(S: torch.Tensor, mask: torch.Tensor | None = None,
               temperature: float = 1.0) -> torch.Tensor:
    """``C_Assign``: the entropy ``-Σ_p s_pr log s_pr`` of each region's softmax over
    the parts (``s_·r = softmax(S_·r / temperature)``; 1 is the paper's), averaged
    over the real regions.

    ``S`` (B, P, R) (or (P, R), one image), ``mask`` (B, R) (or (R,)) bool, True
    for real regions; None: all real. The mean is over all real regions of the
    batch together (an image with more regions weighs more), in nats. Minimised.
    """
    S = S.float()
    if S.dim() == 2:
        S = S[None]
        mask = None if mask is None else mask[None]
    if mask is None:
        mask = torch.ones(S.shape[0], S.shape[2], dtype=torch.bool, device=S.device)
    logp = torch.log_softmax(S / temperature, dim=1)
    ent = -(logp.exp() * logp).sum(dim=1)  # (B, R)
    m = mask.to(ent.dtype)
    return (ent * m).sum() / m.sum().clamp_min(1.0)


def class_specificity(V: torch.Tensor, part_class) -> torch.Tensor:
    """``CS(V) = 1/(P(C-1)) Σ_i Σ_{j ∉ parts of class i} V_ij``: the mean weight that
    class ``i`` (row of ``V``, (C, P)) gives to the parts of the other classes;
    ``part_class`` (P,) is each part's class index. Minimised."""
    part_class = torch.as_tensor(part_class, device=V.device)
    C, P = V.shape
    if part_class.shape != (P,):
        raise DataError(f"part_class has shape {tuple(part_class.shape)}, expected ({P},)")
    off = part_class[None, :] != torch.arange(C, device=V.device)[:, None]
    return (V.float() * off).sum() / (P * (C - 1))


# ------------------------------------------------------------------ the inputs


# the most a host copy of the normalised rows may take (``_Regions(host_copy=True)``)
HOST_COPY_BYTES = 1 << 30


class _Regions:
    """All images' region rows, L2-normalised, read one image at a time from the arrays
    given (float16 memmaps), checked once here. On CUDA a stacked float16 copy lives on
    the GPU when it takes at most half of the free memory, and batches are gathered there
    (on the host, building them costs more than the model's step); on the CPU numpy builds
    them (its float16 conversion is an order of magnitude faster than torch's).

    ``host_copy`` (training, which reads every image once per epoch): on the CPU, the
    normalised float16 rows are stacked in memory once when they take at most
    ``HOST_COPY_BYTES``, so an epoch does not read and normalise every image again
    (CUB c001-020, 600 images: that was two thirds of an epoch); larger sets are read
    image by image, so memory stops growing with the data there. Same values either way.
    """

    def __init__(self, images, dim: int | None, who: str, device=torch.device("cpu"),
                 host_copy: bool = False):
        self.images = list(images)
        counts = []
        for i, a in enumerate(self.images):
            shape = check_regions_shape(a, dim, who, i)
            dim = shape[1]
            finite = np.isfinite(np.asarray(a, np.float16)).all(axis=1)
            if not finite.all():
                raise DataError(f"{who} image {i}: region {int(np.flatnonzero(~finite)[0])} "
                                f"holds NaN or inf (or a value beyond float16)")
            counts.append(shape[0])
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.dim = int(dim or 0)
        self.device = torch.device(device)
        self.resident = self.host = None  # the stacked rows, on the GPU / on the host
        nbytes = int(self.offsets[-1]) * self.dim * 2
        if self.device.type == "cuda":
            if nbytes <= torch.cuda.mem_get_info(self.device)[0] // 2:
                self.resident = torch.cat([torch.from_numpy(self.image(i)).to(self.device)
                                           for i in range(len(self))])
        elif host_copy and nbytes <= HOST_COPY_BYTES:
            self.host = np.empty((int(self.offsets[-1]), self.dim), np.float16)
            for i in range(len(self)):
                self.host[self.offsets[i]:self.offsets[i + 1]] = self.image(i)

    def image(self, i: int) -> np.ndarray:
        """Image ``i``'s rows as float16, L2-normalised in float32 and rounded to float16
        again (row by row: the same values whichever rows are read together)."""
        return l2_normalize(np.asarray(self.images[i], np.float16)).astype(np.float16)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def batch(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``idx`` as padded (B, R, D) float32 regions (zero padding) and a (B, R)
        mask, on the device."""
        idx = np.asarray(idx)
        counts = self.offsets[idx + 1] - self.offsets[idx]
        R = int(counts.max())
        if self.resident is None:
            x = np.zeros((len(idx), R, self.dim), np.float32)
            for k, i in enumerate(idx):
                x[k, :counts[k]] = self.image(i) if self.host is None else \
                    self.host[self.offsets[i]:self.offsets[i + 1]]
        else:
            src, x = self.resident, torch.zeros((len(idx), R, self.dim), device=self.device)
            for k, i in enumerate(idx):
                x[k, :counts[k]] = src[self.offsets[i]:self.offsets[i + 1]]
        mask = torch.from_numpy(np.arange(R)[None, :] < counts[:, None]).to(self.device)
        return torch.as_tensor(x).to(self.device, non_blocking=True), mask
