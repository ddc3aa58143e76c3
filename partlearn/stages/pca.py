"""``pca``: PCA (or PCA-whitening) of the region features, fitted on training regions
only; runs when ``features.pca_dim > 0`` and then stands for ``features`` downstream."""

from __future__ import annotations

import logging

import numpy as np

from .._arrays import sample_regions
from .._progress import progress
from .._validation import ConfigError
from ._base import Stage
from .features import RegionFeatures

logger = logging.getLogger(__name__)


def compute(ctx, w) -> None:
    from ..features import apply_pca, fit_pca  # imports torch: only when the stage computes
    f = ctx.cfg.features
    feats = ctx.get("features")
    x = sample_regions(feats.images(ctx.get("dataset").train), f.pca_max_regions,
                       np.random.default_rng(ctx.cfg.seed))
    if f.pca_dim > min(x.shape):
        raise ConfigError(f"features.pca_dim={f.pca_dim} exceeds what {x.shape[0]} training "
                          f"regions of dimension {x.shape[1]} allow ({min(x.shape)})")
    logger.info("pca: fitting %d components on %d training regions", f.pca_dim, len(x))
    pca = fit_pca(x, f.pca_dim, whiten=f.whiten, random_state=ctx.cfg.seed)
    for name, array in pca.items():
        w.save_array(f"pca_{name}", array)

    def project(x):
        return apply_pca(np.asarray(x, np.float32), pca, f.whiten).astype(np.float16)

    for s, reg in enumerate(progress(feats.shards, desc="pca", unit="shard")):
        images = slice(feats.shard_images[s], feats.shard_images[s + 1])
        arrays = {"regions": project(reg), "global": project(feats.global_[images])}
        if feats.global_flip is not None:
            arrays["global_flip"] = project(feats.global_flip[images])
        w.save_shard(s, arrays)
    w.meta.update(n_images=len(feats), n_shards=len(feats.shards), dim=f.pca_dim,
                  dtype="float16", with_global_flip=feats.global_flip is not None)


def load(ctx, entry) -> RegionFeatures:
    return RegionFeatures.from_entry(entry, ctx.get("regions"))


def check(ctx) -> None:
    """``features.pca_dim`` above the backbone's channels is an error before the features
    pass (the number of training regions is checked when they exist)."""
    dim = ctx.backbone.channels
    if ctx.cfg.features.pca_dim > dim:
        raise ConfigError(f"features.pca_dim={ctx.cfg.features.pca_dim} exceeds the "
                          f"{dim} channels of the region features ({ctx.backbone.name}); "
                          f"choose at most {dim}, or 0 for no PCA")


STAGE = Stage(
    name="pca", version=1, inputs=("dataset", "regions", "features"),
    fields=("features.pca_dim", "features.whiten", "features.pca_max_regions", "seed"),
    libs=("numpy", "scikit-learn"), compute=compute, load=load,
    applies=lambda cfg: cfg.features.pca_dim > 0, replaces="features", check=check)
