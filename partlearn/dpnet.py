"""DP-Net: parts and classifier learnt end to end on frozen region features.

Sicre, Zhang, Dejasmin, Daaloul, Ayache, Artières, "DP-Net: Learning
Discriminative Parts for image recognition" (ICIP 2023). The CNN stays frozen,
so DP-Net trains on exactly the cached region features:

- every region row ``x_r`` of an image is L2-normalised;
- a part layer ``U`` (``P = q * C`` parts, ``q`` per class, each row ``u_p``
  L2-normalised in the forward pass) gives the similarities ``S = U X``
  (``P x R``) and the bag of parts ``b_p = max_r S_pr`` over the image's real
  regions (padded regions are masked out);
- a linear classifier ``V`` (``C x P``) plus bias gives the logits; the loss is
  the softmax cross-entropy plus three constraints, each with its own weight
  (0 switches it off, and it is then not computed):

  ``loss = CE - lambda_orth * orthogonality(U) + lambda_assign * assignment(S, mask)
  + lambda_cs * class_specificity(V, part_class)``.

  ``orthogonality`` is ``C⊥(U) = -(1/P²) Σ_{i≠j} (u_iᵀu_j)²`` (maximised, so parts
  differ); ``assignment`` is the entropy of each region's softmax over the
  parts (a column of ``S``), **averaged over the real regions of the batch**
  (the paper sums over regions; the mean keeps ``lambda_assign`` independent of
  the number of regions and of the batch size; it lies in ``[0, log P]`` nats;
  ``assign_temperature`` divides ``S`` first, 1 being the paper's: ``S`` is a
  cosine in ``[-1, 1]``, so at 1 the softmax over ``P`` parts stays near
  uniform and the term barely acts);
  ``class_specificity`` is ``CS(V) = 1/(P(C-1)) Σ_i Σ_{j ∉ parts(i)} V_ij``, the
  mean weight a class gives to the other classes' parts (minimised, so a class
  uses its own ``q`` parts; as in the paper it is signed, so only the weight
  decay on ``V`` bounds it below: a large ``lambda_cs`` drives the off-class
  weights steadily negative).

``train_dpnet`` trains with Adam on mini-batches of images (regions padded to
the longest image of the batch, with a mask), early-stops on the cross-entropy
of a stratified, seeded held-out slice of the training images, then either
trains again from the same start on all training images for the best number
of epochs (``refit``) or restores the best epoch's weights; it reports the
held-out accuracy and loss, by which a caller picks the lambdas.
Initialisation: ``U`` from given part directions (``init_parts``, e.g. the
two-stage parts) or else, seeded, from one random region of a random training
image of the part's class; ``V`` from the class structure (1 between a class
and its own parts, 0 elsewhere), bias 0. On the CPU a seed gives the same model
twice (a seeded ``torch.Generator`` for the initialisation and the shuffling;
deterministic algorithms while training); the global torch RNG and thread count
are left alone.

Functions take and return arrays (the model is a dict of numpy arrays); caching
is the caller's business. Only this module imports torch for DP-Net.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time

import numpy as np
import torch
from torch import nn

from ._arrays import l2_normalize, stack_regions
from ._device import resolve_device
from ._progress import progress as _progress
from ._validation import ConfigError, DataError
from .config import DPNetConfig

logger = logging.getLogger(__name__)


_K = DPNetConfig


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


class _Regions:
    """All images' region rows, L2-normalised, in one float16 (sum R_i, D) array plus
    offsets, checked. On CUDA a copy lives on the GPU when it takes at most half of the
    free memory, and batches are gathered there (on the host, building them costs
    more than the model's step); on the CPU numpy builds them (its float16
    conversion is an order of magnitude faster than torch's)."""

    def __init__(self, images, dim: int | None, who: str, device=torch.device("cpu")):
        self.x, self.offsets = stack_regions(images, dim, who, dtype=np.float16)
        self.dim = self.x.shape[1]
        for s in range(0, len(self.x), 65536):  # once here rather than in every batch
            self.x[s:s + 65536] = l2_normalize(self.x[s:s + 65536])
        self.device = torch.device(device)
        self.resident = None
        if self.device.type == "cuda" and \
                self.x.nbytes <= torch.cuda.mem_get_info(self.device)[0] // 2:
            self.resident = torch.from_numpy(self.x).to(self.device)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def batch(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``idx`` as padded (B, R, D) float32 regions (zero padding) and a (B, R)
        mask, on the device."""
        idx = np.asarray(idx)
        counts = self.offsets[idx + 1] - self.offsets[idx]
        R = int(counts.max())
        if self.resident is None:
            src, x = self.x, np.zeros((len(idx), R, self.dim), np.float32)
        else:
            src, x = self.resident, torch.zeros((len(idx), R, self.dim), device=self.device)
        for k, i in enumerate(idx):
            x[k, :counts[k]] = src[self.offsets[i]:self.offsets[i + 1]]
        mask = torch.from_numpy(np.arange(R)[None, :] < counts[:, None]).to(self.device)
        return torch.as_tensor(x).to(self.device, non_blocking=True), mask


def _holdout(y: np.ndarray, classes, fraction: float, seed: int):
    """Stratified, seeded split of image indices: ``round(fraction * n_c)`` (at least 1)
    held-out images per class, at least 1 left to train on."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c, name in enumerate(classes):
        idx = np.flatnonzero(y == c)
        if fraction <= 0:
            train.append(idx)
            continue
        n_val = max(1, round(fraction * len(idx)))
        if len(idx) - n_val < 1:
            raise DataError(f"class {str(name)!r} has {len(idx)} training image(s); "
                            f"val_fraction={fraction} holds out {n_val}, which leaves none to "
                            "train on: give it at least 2 images or set val_fraction=0")
        idx = rng.permutation(idx)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    train = np.sort(np.concatenate(train))
    val = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    return train, val


def _check_params(**p) -> None:
    for name in ("parts_per_class", "epochs", "batch_size"):
        if not (isinstance(p[name], int | np.integer) and p[name] >= 1):
            raise ConfigError(f"{name}={p[name]!r} should be an integer >= 1")
    if not (isinstance(p["patience"], int | np.integer) and p["patience"] >= 0):
        raise ConfigError(f"patience={p['patience']!r} should be an integer >= 0")
    if not 0 <= p["val_fraction"] < 1:
        raise ConfigError(f"val_fraction={p['val_fraction']!r} should be in [0, 1)")
    for name in ("lr", "assign_temperature"):
        if not p[name] > 0:
            raise ConfigError(f"{name}={p[name]!r} should be > 0")
    for name in ("weight_decay", "lambda_orth", "lambda_assign", "lambda_cs"):
        if not p[name] >= 0:
            raise ConfigError(f"{name}={p[name]!r} should be >= 0")


@contextlib.contextmanager
def _deterministic(on: bool):
    """Deterministic torch algorithms inside the block; the previous setting after."""
    before = torch.are_deterministic_algorithms_enabled()
    warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(on or before, warn_only=warn)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn)


# ------------------------------------------------------------------ training


def _init_model(model: DPNet, regions: _Regions, y: np.ndarray, train: np.ndarray,
                part_class: np.ndarray, init_parts, gen: torch.Generator) -> None:
    P, D = model.U.shape
    if init_parts is not None:
        U = torch.from_numpy(np.asarray(init_parts, np.float32))
    else:  # each part: one random region of a random training image of its class
        U = torch.empty(P, D)
        for p, c in enumerate(part_class):
            pool = train[y[train] == c]
            i = int(pool[torch.randint(len(pool), (1,), generator=gen)])
            lo, hi = regions.offsets[i], regions.offsets[i + 1]
            r = int(lo + torch.randint(int(hi - lo), (1,), generator=gen))
            U[p] = torch.from_numpy(regions.x[r].astype(np.float32))
    with torch.no_grad():
        model.U.copy_(nn.functional.normalize(U, dim=1))
        model.V.copy_(torch.from_numpy(
            (part_class[None, :] == np.arange(model.V.shape[0])[:, None]).astype(np.float32)))
        model.bias.zero_()


def _evaluate(model: DPNet, regions: _Regions, idx, y, batch_size, device, amp):
    """Accuracy and mean cross-entropy on images ``idx``."""
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for s in range(0, len(idx), batch_size):
            chunk = idx[s:s + batch_size]
            x, mask = regions.batch(chunk)
            with _autocast(device, amp):
                logits, _, _ = model(x, mask)
            t = torch.from_numpy(y[chunk]).to(device)
            loss += float(nn.functional.cross_entropy(logits.float(), t, reduction="sum"))
            correct += int((logits.argmax(1) == t).sum())
    return correct / max(len(idx), 1), loss / max(len(idx), 1)


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _epoch(model: DPNet, opt, order, regions: _Regions, y: torch.Tensor, batch_size: int,
           dev, amp: bool, lambdas: tuple[float, float, float], temperature: float,
           part_class: torch.Tensor) -> tuple[float, float]:
    """One pass of Adam over images ``order``; returns the mean loss and cross-entropy."""
    lambda_orth, lambda_assign, lambda_cs = lambdas
    model.train()
    tot = ce_tot = 0.0
    for s in range(0, len(order), batch_size):
        chunk = order[s:s + batch_size]
        x, mask = regions.batch(chunk)
        with _autocast(dev, amp):
            logits, S, _ = model(x, mask, dense=bool(lambda_assign))
        ce = nn.functional.cross_entropy(logits.float(), y[chunk].to(dev))
        loss = ce
        if lambda_orth:
            loss = loss - lambda_orth * orthogonality(model.U)
        if lambda_assign:
            loss = loss + lambda_assign * assignment(S, mask, temperature)
        if lambda_cs:
            loss = loss + lambda_cs * class_specificity(model.V, part_class)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tot += float(loss.detach()) * len(chunk)
        ce_tot += float(ce.detach()) * len(chunk)
    return tot / len(order), ce_tot / len(order)


def settings(cfg: DPNetConfig, variant: str) -> dict:
    """``train_dpnet``'s keyword arguments from ``cfg`` for ``variant`` (e.g.
    ``"cs+orth"``; ``"wo"``: no constraint): a constraint's lambda where the
    variant turns it on, 0 elsewhere."""
    on = set(variant.split("+"))
    return dict(parts_per_class=cfg.parts_per_class,
                lambda_orth=cfg.lambda_orth if "orth" in on else 0.0,
                lambda_assign=cfg.lambda_assign if "assign" in on else 0.0,
                lambda_cs=cfg.lambda_cs if "cs" in on else 0.0,
                assign_temperature=cfg.assign_temperature, lr=cfg.lr,
                weight_decay=cfg.weight_decay, epochs=cfg.epochs, batch_size=cfg.batch_size,
                val_fraction=cfg.val_fraction, patience=cfg.patience, refit=cfg.refit)


def train_dpnet(images, labels, *, parts_per_class: int = _K.parts_per_class,
                lambda_orth: float = 0.0, lambda_assign: float = 0.0,
                lambda_cs: float = 0.0,
                assign_temperature: float = _K.assign_temperature, lr: float = _K.lr,
                weight_decay: float = _K.weight_decay, epochs: int = _K.epochs,
                batch_size: int = _K.batch_size, val_fraction: float = _K.val_fraction,
                patience: int = _K.patience, refit: bool = _K.refit, seed: int = 0,
                device="cpu", amp: bool = False, init_parts=None,
                progress: bool = True) -> dict:
    """Train DP-Net on ``images`` (a sequence of (R_i, D) region arrays, float16
    memmaps allowed) with ``labels`` (n,) (any sortable values).

    ``val_fraction`` of each class's images (stratified, seeded by ``seed``) are
    held out: after each epoch the held-out cross-entropy is measured, training
    stops after ``patience`` epochs without a lower one, and the best epoch is
    the one with the lowest. With ``refit`` the model is then trained again,
    from the same initialisation, on all the images for that many epochs (so
    the held-out slice only chooses the length of training and no image is
    wasted); without, the best epoch's weights are restored. ``val_fraction=0``
    trains all ``epochs`` on all images and keeps the last. ``init_parts`` (P,
    D), P = ``parts_per_class * C``, rows ordered class by class (classes
    sorted): the initial parts (normalised). ``amp``: bfloat16 autocast, CUDA
    only.

    Returns a dict: ``U`` (P, D) unit rows, ``V`` (C, P), ``bias`` (C,),
    ``part_class`` (P,) class index of each part, ``classes`` (C,), ``history``
    (per epoch of the held-out run ``train_loss``, ``train_ce``,
    ``val_accuracy``, ``val_loss``), ``best_epoch`` (0-based),
    ``val_accuracy`` and ``val_loss`` (at it; NaN without a held-out slice),
    ``epochs_run``, ``refit`` (whether the returned model was refitted),
    ``train_seconds`` (both runs), ``n_train``, ``n_val``.
    """
    _check_params(parts_per_class=parts_per_class, epochs=epochs, batch_size=batch_size,
                  patience=patience, val_fraction=val_fraction, lr=lr,
                  weight_decay=weight_decay, lambda_orth=lambda_orth,
                  lambda_assign=lambda_assign, lambda_cs=lambda_cs,
                  assign_temperature=assign_temperature)
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{len(images)} images but labels of shape {labels.shape}; expected "
                        f"({len(images)},)")
    classes, y = np.unique(labels, return_inverse=True)
    C = len(classes)
    if C < 2:
        raise DataError(f"DP-Net needs at least 2 classes, got {C}")
    dev = resolve_device(device)
    regions = _Regions(images, None, "dpnet", dev)
    D = regions.dim
    P = parts_per_class * C
    part_class = np.repeat(np.arange(C), parts_per_class)
    if init_parts is not None:
        shape = np.shape(init_parts)
        if shape != (P, D):
            raise DataError(f"init_parts has shape {shape}; expected (P, D) = ({P}, {D}): "
                            f"{parts_per_class} parts x {C} classes, D={D}")
        if not np.isfinite(init_parts).all() or (np.linalg.norm(init_parts, axis=1) == 0).any():
            raise DataError("init_parts holds NaN/inf or an all-zero row")
    train, val = _holdout(y, classes, val_fraction, seed)

    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    with _deterministic(dev.type == "cpu"):
        model = DPNet(P, D, C)
        _init_model(model, regions, y, train, part_class, init_parts, gen)
        model.to(dev)
        init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

        def optimiser():
            return torch.optim.Adam([{"params": [model.U], "weight_decay": 0.0},
                                     {"params": [model.V], "weight_decay": weight_decay},
                                     {"params": [model.bias], "weight_decay": 0.0}], lr=lr)

        def run_epoch(opt, idx):
            order = idx[torch.randperm(len(idx), generator=gen).numpy()]
            return _epoch(model, opt, order, regions, yt, batch_size, dev, amp,
                          (lambda_orth, lambda_assign, lambda_cs), assign_temperature, pc)

        pc = torch.from_numpy(part_class).to(dev)
        yt = torch.from_numpy(y)
        opt = optimiser()
        history = {k: [] for k in ("train_loss", "train_ce", "val_accuracy", "val_loss")}
        best = (math.nan, math.inf)  # (accuracy, loss) at the best epoch
        best_epoch, best_state, waited = -1, None, 0
        bar = _progress(total=epochs, desc="dpnet", unit="epoch", disable=not progress)
        for epoch in range(epochs):
            loss, ce = run_epoch(opt, train)
            history["train_loss"].append(loss)
            history["train_ce"].append(ce)
            acc, vloss = (_evaluate(model, regions, val, y, batch_size, dev, amp) if len(val)
                          else (math.nan, math.nan))
            history["val_accuracy"].append(acc)
            history["val_loss"].append(vloss)
            bar.update()
            logger.debug("dpnet epoch %d: loss %.4f (CE %.4f), held-out accuracy %.4f, "
                         "loss %.4f", epoch, loss, ce, acc, vloss)
            if not len(val) or vloss < best[1]:
                best, best_epoch, waited = (acc, vloss), epoch, 0
                if not refit or not len(val):
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                waited += 1
                if waited >= patience:
                    break
        bar.close()
        refitted = bool(refit and len(val))
        if refitted:  # the same initialisation, all images, the chosen number of epochs
            model.load_state_dict(init_state)
            opt = optimiser()
            everything = np.sort(np.concatenate([train, val]))
            for _ in _progress(range(best_epoch + 1), desc="dpnet refit", unit="epoch",
                               disable=not progress):
                run_epoch(opt, everything)
        else:
            model.load_state_dict(best_state)
    seconds = time.perf_counter() - start
    out = _export(model, part_class, classes)
    out.update(history={k: np.asarray(v, np.float64) for k, v in history.items()},
               best_epoch=best_epoch, val_accuracy=float(best[0]), val_loss=float(best[1])
               if len(val) else math.nan, epochs_run=len(history["train_loss"]),
               refit=refitted, train_seconds=seconds, n_train=len(train), n_val=len(val))
    logger.info("dpnet: %d parts (%d per class x %d classes), D=%d, %d train / %d held-out "
                "images; best epoch %d of %d (held-out loss %.4f, accuracy %.4f)%s, %.1f s "
                "on %s", P, parts_per_class, C, D, len(train), len(val), best_epoch,
                out["epochs_run"], out["val_loss"], out["val_accuracy"],
                ", refitted on all images" if refitted else "", seconds, dev)
    return out


def _export(model: DPNet, part_class, classes) -> dict:
    with torch.no_grad():
        return {"U": model.parts().cpu().numpy().astype(np.float32),
                "V": model.V.detach().cpu().numpy().astype(np.float32),
                "bias": model.bias.detach().cpu().numpy().astype(np.float32),
                "part_class": np.asarray(part_class, np.int64), "classes": np.asarray(classes)}


# ------------------------------------------------------------------ inference


def _load(model: dict, device) -> DPNet:
    U, V = np.asarray(model["U"], np.float32), np.asarray(model["V"], np.float32)
    net = DPNet(U.shape[0], U.shape[1], V.shape[0])
    with torch.no_grad():
        net.U.copy_(torch.from_numpy(U))
        net.V.copy_(torch.from_numpy(V))
        net.bias.copy_(torch.from_numpy(np.asarray(model["bias"], np.float32)))
    return net.to(device).eval()


def _run(model: dict, images, batch_size: int, device):
    dev = resolve_device(device)
    net = _load(model, dev)
    regions = _Regions(images, net.U.shape[1], "dpnet", dev)
    scores, parts = [], []
    with torch.no_grad():
        for s in range(0, len(regions), batch_size):
            x, mask = regions.batch(np.arange(s, min(s + batch_size, len(regions))))
            logits, _, b = net(x, mask)
            scores.append(logits.cpu().numpy())
            parts.append(b.cpu().numpy())
    P, C = net.U.shape[0], net.V.shape[0]
    return (np.concatenate(scores) if scores else np.zeros((0, C), np.float32),
            np.concatenate(parts) if parts else np.zeros((0, P), np.float32))


def predict_scores(model: dict, images, batch_size: int = _K.batch_size,
                   device="cpu") -> np.ndarray:
    """``(n, C)`` logits of ``model`` (from ``train_dpnet``) for ``images``, columns in
    ``model["classes"]`` order."""
    return _run(model, images, batch_size, device)[0]


def predict(model: dict, images, batch_size: int = _K.batch_size, device="cpu") -> np.ndarray:
    """The predicted class (a value of ``model["classes"]``) of each image."""
    return np.asarray(model["classes"])[predict_scores(model, images, batch_size,
                                                       device).argmax(axis=1)]


def part_responses(model: dict, images, batch_size: int = _K.batch_size,
                   device="cpu") -> np.ndarray:
    """``(n, P)`` bag of parts ``b``: each part's best cosine over the image's regions."""
    return _run(model, images, batch_size, device)[1]
