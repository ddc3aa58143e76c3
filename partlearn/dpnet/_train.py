"""DP-Net's training loop: ``train_dpnet`` (import it from ``partlearn.dpnet``).

Adam on mini-batches of images, early stopping on the cross-entropy of a stratified,
seeded held-out slice, then a refit on all training images or the best epoch's weights;
``partlearn.dpnet``'s docstring says what and why.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time

import numpy as np
import torch
from torch import nn

from .._arrays import indices_by_label
from .._device import resolve_device
from ._model import DPNet, _Regions, assignment, class_specificity, orthogonality
from .._progress import progress as _progress
from .._validation import ConfigError, DataError
from ..config import DPNetConfig

# the public module's name, as before the split: what callers filter and capture on
logger = logging.getLogger(__name__)

_K = DPNetConfig


# ------------------------------------------------------------------ checks and helpers


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
        pools = [train[idx] for idx in indices_by_label(y[train], int(max(part_class)) + 1)]
        for p, c in enumerate(part_class):
            pool = pools[c]
            i = int(pool[torch.randint(len(pool), (1,), generator=gen)])
            lo, hi = regions.offsets[i], regions.offsets[i + 1]
            r = int(lo + torch.randint(int(hi - lo), (1,), generator=gen))
            U[p] = torch.from_numpy(regions.image(i)[r - lo].astype(np.float32))
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


# ------------------------------------------------------------------ training


# long: the docstring documents every argument and returned field; the body is ~40 lines
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
    classes, y = _classes(images, labels)
    C = len(classes)
    dev = resolve_device(device)
    regions = _Regions(images, None, "dpnet", dev, host_copy=True)
    D = regions.dim
    P = parts_per_class * C
    part_class = np.repeat(np.arange(C), parts_per_class)
    _check_init_parts(init_parts, parts_per_class, C, D)
    train, val = _holdout(y, classes, val_fraction, seed)

    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    with _deterministic(dev.type == "cpu"):
        model = DPNet(P, D, C)
        _init_model(model, regions, y, train, part_class, init_parts, gen)
        model.to(dev)
        history, best, best_epoch, refitted = _fit(
            model, regions, y, part_class, train, val, gen, dev, amp=amp, batch_size=batch_size,
            lr=lr, weight_decay=weight_decay, lambdas=(lambda_orth, lambda_assign, lambda_cs),
            temperature=assign_temperature, epochs=epochs, patience=patience, refit=refit,
            progress=progress)
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


def _classes(images, labels) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct ``labels`` (at least 2) and each image's index into them."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{len(images)} images but labels of shape {labels.shape}; expected "
                        f"({len(images)},)")
    classes, y = np.unique(labels, return_inverse=True)
    C = len(classes)
    if C < 2:
        raise DataError(f"DP-Net needs at least 2 classes, got {C}")
    return classes, y


def _check_init_parts(init_parts, parts_per_class: int, C: int, D: int) -> None:
    if init_parts is not None:
        P = parts_per_class * C
        shape = np.shape(init_parts)
        if shape != (P, D):
            raise DataError(f"init_parts has shape {shape}; expected (P, D) = ({P}, {D}): "
                            f"{parts_per_class} parts x {C} classes, D={D}")
        if not np.isfinite(init_parts).all() or (np.linalg.norm(init_parts, axis=1) == 0).any():
            raise DataError("init_parts holds NaN/inf or an all-zero row")


def _state(model: DPNet) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _fit(model: DPNet, regions: _Regions, y: np.ndarray, part_class: np.ndarray,
         train: np.ndarray, val: np.ndarray, gen: torch.Generator, dev, *, amp: bool,
         batch_size: int, lr: float, weight_decay: float, lambdas: tuple[float, float, float],
         temperature: float, epochs: int, patience: int, refit: bool, progress: bool):
    """The schedule on the initialised ``model``: epochs on ``train`` early-stopped on
    ``val``, then (``refit``) the same start trained on all images for the best number of
    epochs, or else the best epoch's weights restored.

    Returns ``(history, (accuracy, loss) at the best epoch, best epoch, refitted)``.
    """
    init_state = _state(model)

    def optimiser():
        return torch.optim.Adam([{"params": [model.U], "weight_decay": 0.0},
                                 {"params": [model.V], "weight_decay": weight_decay},
                                 {"params": [model.bias], "weight_decay": 0.0}], lr=lr)

    def run_epoch(opt, idx):
        order = idx[torch.randperm(len(idx), generator=gen).numpy()]
        return _epoch(model, opt, order, regions, yt, batch_size, dev, amp, lambdas,
                      temperature, pc)

    pc = torch.from_numpy(part_class).to(dev)
    yt = torch.from_numpy(y)
    opt = optimiser()
    history, best, best_epoch, best_state = _early_stopping(
        model, lambda: run_epoch(opt, train),
        lambda: _evaluate(model, regions, val, y, batch_size, dev, amp), len(val),
        epochs=epochs, patience=patience, keep_best=not refit or not len(val),
        progress=progress)
    refitted = bool(refit and len(val))
    if refitted:  # the same initialisation, all images, the chosen number of epochs
        model.load_state_dict(init_state)
        refit_opt = optimiser()
        everything = np.sort(np.concatenate([train, val]))
        for _ in _progress(range(best_epoch + 1), desc="dpnet refit", unit="epoch",
                           disable=not progress):
            run_epoch(refit_opt, everything)
    else:
        model.load_state_dict(best_state)
    return history, best, best_epoch, refitted


def _early_stopping(model: DPNet, step, evaluate, n_val: int, *, epochs: int, patience: int,
                    keep_best: bool, progress: bool):
    """Up to ``epochs`` calls of ``step()`` (one epoch; its ``(loss, cross-entropy)``), each
    followed by ``evaluate()`` (the held-out ``(accuracy, cross-entropy)``; NaN when
    ``n_val`` is 0), stopping after ``patience`` epochs without a lower held-out loss.

    Returns ``(history, (accuracy, loss) at the best epoch, best epoch, its weights)``; the
    weights only with ``keep_best``, else None.
    """
    history = {k: [] for k in ("train_loss", "train_ce", "val_accuracy", "val_loss")}
    best = (math.nan, math.inf)  # (accuracy, loss) at the best epoch
    best_epoch, best_state, waited = -1, None, 0
    bar = _progress(total=epochs, desc="dpnet", unit="epoch", disable=not progress)
    for epoch in range(epochs):
        loss, ce = step()
        history["train_loss"].append(loss)
        history["train_ce"].append(ce)
        acc, vloss = evaluate() if n_val else (math.nan, math.nan)
        history["val_accuracy"].append(acc)
        history["val_loss"].append(vloss)
        bar.update()
        logger.debug("dpnet epoch %d: loss %.4f (CE %.4f), held-out accuracy %.4f, "
                     "loss %.4f", epoch, loss, ce, acc, vloss)
        if not n_val or vloss < best[1]:
            best, best_epoch, waited = (acc, vloss), epoch, 0
            if keep_best:
                best_state = _state(model)
        else:
            waited += 1
            if waited >= patience:
                break
    bar.close()
    return history, best, best_epoch, best_state


def _export(model: DPNet, part_class, classes) -> dict:
    with torch.no_grad():
        return {"U": model.parts().cpu().numpy().astype(np.float32),
                "V": model.V.detach().cpu().numpy().astype(np.float32),
                "bias": model.bias.detach().cpu().numpy().astype(np.float32),
                "part_class": np.asarray(part_class, np.int64), "classes": np.asarray(classes)}
