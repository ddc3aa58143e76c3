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
  uniform and the term cannot act; the default 0.1 was chosen by CV);
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
is the caller's business. This module applies a trained model; ``_model`` holds the
network, the constraints and the padded batches, ``_train`` ``train_dpnet`` and its
helpers; the package exports the public names of all three.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .._device import resolve_device
from ._model import DPNet, _Regions
from ..config import DPNetConfig

logger = logging.getLogger(__name__)


_K = DPNetConfig


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
