"""``descriptors``: the global retrieval descriptors of every image, from the pools the
features stage extracted (``features.pools``): ``mac``, ``gem``, ``spoc`` as they are
and PCA-whitened (``mac+w``, ...), and ``rmac`` (Tolias, Sicre & Jégou, ICLR 2016):
each image's regional MACs over the dense regions, L2-normalised, PCA-whitened,
L2-normalised again, summed and L2-normalised. Every whitening is learnt on the
training images only (never on the images that will query), with the variances
shrunk towards their mean (``retrieval.whiten_shrinkage``): a few hundred
images estimate a 1,280-d covariance poorly.
"""

from __future__ import annotations

import logging

import numpy as np

from .._arrays import LazyImages, l2_normalize, sample_regions
from ._base import Stage

logger = logging.getLogger(__name__)

def whitening(x: np.ndarray, shrinkage: float, seed: int) -> dict:
    """PCA-whitening of the rows of ``x`` (all components the rows allow), variances
    shrunk: ``var + shrinkage * mean(var)``."""
    from ..features import fit_pca  # imports torch: only when the stage computes
    pca = fit_pca(x, min(x.shape[0] - 1, x.shape[1]), random_state=seed)
    var = pca["explained_variance"]
    pca["explained_variance"] = (var + shrinkage * var.mean()).astype(np.float32)
    return pca


def whiten(x, pca: dict) -> np.ndarray:
    """``x`` projected, whitened and L2-normalised (float32)."""
    y = (np.asarray(x, np.float32) - pca["mean"]) @ pca["components"].T
    return l2_normalize(y / np.sqrt(pca["explained_variance"]), axis=1)


def rmac(feats, images, pca: dict) -> np.ndarray:
    """``(len(images), d)``: R-MAC of each image by the whitening ``pca``."""
    return l2_normalize(np.stack([whiten(feats.regional_macs(i), pca).sum(axis=0)
                                  for i in images]), axis=1)


def compute(ctx, w) -> None:
    data, feats = ctx.get("dataset"), ctx.get("features")
    shrink, seed = ctx.cfg.retrieval.whiten_shrinkage, ctx.cfg.seed
    train = data.train
    for name, x in feats.pools.items():
        w.save_array(name, np.asarray(x, np.float16))
        pca = whitening(np.asarray(x[train], np.float32), shrink, seed)
        w.save_array(f"{name}+w", whiten(x, pca).astype(np.float16))
        logger.info("descriptors: %s, whitened to %d dimensions on %d training images", name,
                    len(pca["components"]), len(train))
    if feats.rmac_shards:
        # one image's regional MACs converted at a time, not every training region's
        sample = sample_regions(LazyImages(feats.regional_macs, train),
                                ctx.cfg.retrieval.whiten_regions,
                                np.random.default_rng(seed))
        pca = whitening(sample, shrink, seed)
        w.save_array("rmac", rmac(feats, range(len(feats)), pca).astype(np.float16))
        logger.info("descriptors: rmac, regions whitened to %d dimensions on %d training "
                    "regions", len(pca["components"]), len(sample))
    w.meta["descriptors"] = sorted(p.name.removesuffix(".npy") for p in w.path.glob("*.npy"))


def load(ctx, entry) -> dict:
    """``{name: (N, d) float16}`` for every descriptor of the entry."""
    return {name: entry.array(name) for name in entry.meta["descriptors"]}


STAGE = Stage(
    name="descriptors", version=1, inputs=("dataset", "regions", "features"),
    fields=("retrieval.whiten_shrinkage", "retrieval.whiten_regions", "seed"), libs=("numpy", "scikit-learn"),
    compute=compute, load=load, applies=lambda cfg: bool(cfg.features.pools),
    exact_inputs=True)
