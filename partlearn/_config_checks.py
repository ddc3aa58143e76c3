"""The checks of a ``Config``: every field's range, named as ``section.field``, run when
a ``Config`` is made (``Config.__post_init__``)."""

from __future__ import annotations

import dataclasses
import math
import re

from ._validation import ConfigError, check_choice
from .config import (BAD_IMAGE_POLICIES, DATASET_FORMATS, DPNET_VARIANTS, FEATURE_MODES,
                     HIERARCHY_SOURCES, METHODS, PYRAMID_SELECT, RERANKING, RETRIEVAL_POOLS, ROI_POOLING,
                     SEARCH_INDEXES)


# long: a flat list of checks, one or a few per field; their order decides which error a
# config with several shows first, so it is kept in one piece
def check(cfg) -> None:
    _check_finite(cfg)
    if cfg.n_jobs == 0:
        raise ConfigError("n_jobs=0 must be -1 (every core) or a number of workers >= 1")
    _check_dpnet(cfg.dpnet)
    check_choice("backend", cfg.backend, ("local", "dask"))
    if cfg.retrieval.whiten_regions < 1:
        raise ConfigError(f"retrieval.whiten_regions={cfg.retrieval.whiten_regions} must be "
                          ">= 1")
    if cfg.dask.n_workers < 0:
        raise ConfigError(f"dask.n_workers={cfg.dask.n_workers} must be >= 0 (0: one per core)")
    if not cfg.dask.timeout > 0:
        raise ConfigError(f"dask.timeout={cfg.dask.timeout} must be > 0 seconds")
    check_choice("data.format", cfg.data.format, DATASET_FORMATS)
    check_choice("data.on_bad_image", cfg.data.on_bad_image, BAD_IMAGE_POLICIES)
    check_choice("features.mode", cfg.features.mode, FEATURE_MODES)
    check_choice("features.roi_pooling", cfg.features.roi_pooling, ROI_POOLING)
    _check_pyramid(cfg.features)
    _check_retrieval(cfg)
    _check_hierarchy(cfg)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", cfg.features.device):
        raise ConfigError(
            f"features.device={cfg.features.device!r} is not 'auto', 'cpu', 'cuda' or 'cuda:N'"
        )
    r = cfg.regions
    if not r.scales or any(not 0 < s <= 1 for s in r.scales):
        raise ConfigError(
            f"regions.scales={list(r.scales)} must be a non-empty list of fractions in (0, 1]"
        )
    if not 0 < r.stride <= 1:
        raise ConfigError(f"regions.stride={r.stride} must be a fraction of the window in (0, 1]")
    positive = {
        "data.min_side": cfg.data.min_side,
        "features.short_side": cfg.features.short_side,
        "features.roi_size": cfg.features.roi_size,
        "features.crop_size": cfg.features.crop_size,
        "features.batch_size": cfg.features.batch_size,
        "features.shard_size": cfg.features.shard_size,
        "features.pca_max_regions": cfg.features.pca_max_regions,
        "features.pyramid_target": cfg.features.pyramid_target,
    }
    for name, value in positive.items():
        if value < 1:
            raise ConfigError(f"{name}={value} must be >= 1")
    for name, value in {
        "features.pca_dim": cfg.features.pca_dim,
        "regions.min_size": r.min_size,
        "data.min_train_per_class": cfg.data.min_train_per_class,
    }.items():
        if value < 0:
            raise ConfigError(f"{name}={value} must be >= 0")
    if cfg.features.workers < -1:
        raise ConfigError(f"features.workers={cfg.features.workers} must be >= 0, or -1 (auto)")
    if cfg.features.whiten and not cfg.features.pca_dim:
        raise ConfigError("features.whiten=true needs features.pca_dim > 0")
    b = cfg.backbone
    for name, value in (("backbone.mean", b.mean), ("backbone.std", b.std)):
        if value and len(value) != 3:
            raise ConfigError(f"{name}={list(value)} must hold 3 numbers (R, G, B) or be empty")
    p = cfg.parts
    for name in ("n_parts", "n_init", "kmeans_iter", "updates_per_beta", "sinkhorn_iter",
                 "n_negative_images", "min_images", "background_regions"):
        if getattr(p, name) < 1:
            raise ConfigError(f"parts.{name}={getattr(p, name)} must be >= 1")
    for name in ("hard_negatives", "negative_cache", "keep", "negative_weight", "tol"):
        if getattr(p, name) < 0:
            raise ConfigError(f"parts.{name}={getattr(p, name)} must be >= 0")
    if p.slack < 0:
        raise ConfigError(f"parts.slack={p.slack} must be >= 0: a z-score under the background "
                          "model, how far above the background a region must score to match")
    if p.keep > p.n_parts:
        raise ConfigError(f"parts.keep={p.keep} must be <= parts.n_parts={p.n_parts} "
                          "(0 keeps all)")
    if not 0 < p.beta_start <= p.beta_end:
        raise ConfigError(f"parts.beta_start={p.beta_start} and parts.beta_end={p.beta_end} "
                          "must satisfy 0 < beta_start <= beta_end")
    if p.beta_growth <= 1:
        raise ConfigError(f"parts.beta_growth={p.beta_growth} must be > 1")
    if not 0 <= p.orthogonality <= 1:
        raise ConfigError(f"parts.orthogonality={p.orthogonality} must be in [0, 1] (0: off)")
    if not 0 <= p.nms_iou <= 1:
        raise ConfigError(f"parts.nms_iou={p.nms_iou} must be an IoU in [0, 1] (0 or 1: off)")
    if not 0 <= p.shrinkage <= 1:
        raise ConfigError(f"parts.shrinkage={p.shrinkage} must be in [0, 1]")
    e = cfg.encoding
    if not e.pyramid or any(g < 1 for g in e.pyramid) or len(set(e.pyramid)) != len(e.pyramid):
        raise ConfigError(f"encoding.pyramid={list(e.pyramid)} must be distinct grid sides "
                          ">= 1, e.g. [1, 2]")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", e.device):
        raise ConfigError(f"encoding.device={e.device!r} is not 'auto', 'cpu', 'cuda' or 'cuda:N'")
    for name in ("top_k", "batch_images"):
        if getattr(e, name) < 1:
            raise ConfigError(f"encoding.{name}={getattr(e, name)} must be >= 1")
    k = cfg.classifier
    if not k.methods and not cfg.retrieval.descriptors:  # methods = []: a retrieval-only run
        raise ConfigError(f"classifier.methods is empty and so is retrieval.descriptors: "
                          f"nothing to evaluate; choose methods from {', '.join(METHODS)}")
    if not k.methods and cfg.dpnet.variants:
        raise ConfigError("dpnet.variants needs classifier.methods: DP-Net is reported next to "
                          "the two-stage methods (set dpnet.variants = [] for retrieval only)")
    for m in k.methods:
        check_choice("classifier.methods", m, METHODS)
    if not k.C or any(c <= 0 for c in k.C):
        raise ConfigError(f"classifier.C={list(k.C)} must be a non-empty list of numbers > 0")
    if k.cv_folds < 2:
        raise ConfigError(f"classifier.cv_folds={k.cv_folds} must be >= 2")
    check_choice("classifier.solver", k.solver, ("liblinear", "torch"))
    if k.memory_mb < 0:
        raise ConfigError(f"classifier.memory_mb={k.memory_mb:g} must be >= 0 (0: no limit)")
    dp = cfg.dpnet
    for v in dp.variants:
        check_choice("dpnet.variants", v, DPNET_VARIANTS)
    if dp.variants and not dp.seeds:
        raise ConfigError("dpnet.seeds is empty; give at least one seed, e.g. [0, 1, 2]")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", dp.device):
        raise ConfigError(f"dpnet.device={dp.device!r} is not 'auto', 'cpu', 'cuda' or 'cuda:N'")
    for name in ("extend", "max_iter", "n_bootstrap"):
        if getattr(k, name) < (0 if name == "extend" else 1):
            raise ConfigError(f"classifier.{name}={getattr(k, name)} is out of range")


def _check_finite(cfg) -> None:
    """Every number of every section is finite (NaN and inf are never a setting)."""
    for section in dataclasses.fields(cfg):
        value = getattr(cfg, section.name)
        items = ([(f"{section.name}.{f.name}", getattr(value, f.name))
                  for f in dataclasses.fields(value)] if dataclasses.is_dataclass(value)
                 else [(section.name, value)])
        for name, v in items:
            for x in (v if isinstance(v, tuple) else (v,)):
                if isinstance(x, float) and not math.isfinite(x):
                    raise ConfigError(f"{name}={list(v) if isinstance(v, tuple) else v} must "
                                      "be finite (no NaN or inf)")


def _check_dpnet(dp) -> None:
    for name in ("parts_per_class", "epochs", "batch_size", "patience"):
        if getattr(dp, name) < 1:
            raise ConfigError(f"dpnet.{name}={getattr(dp, name)} must be >= 1")
    for name in ("lr", "assign_temperature"):
        if not getattr(dp, name) > 0:
            raise ConfigError(f"dpnet.{name}={getattr(dp, name)} must be > 0")
    for name in ("weight_decay", "lambda_orth", "lambda_assign", "lambda_cs"):
        if getattr(dp, name) < 0:
            raise ConfigError(f"dpnet.{name}={getattr(dp, name)} must be >= 0 (0: off)")
    if not 0 <= dp.val_fraction < 1:
        raise ConfigError(f"dpnet.val_fraction={dp.val_fraction} must be in [0, 1)")
    for name in ("variants", "seeds"):
        values = list(getattr(dp, name))
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise ConfigError(f"dpnet.{name}={values} lists {twice} more than once")


def _check_hierarchy(cfg) -> None:
    h = cfg.hierarchy
    check_choice("hierarchy.source", h.source, HIERARCHY_SOURCES)
    if h.source == "taxonomy" and not h.taxonomy:
        raise ConfigError('hierarchy.source = "taxonomy" needs hierarchy.taxonomy, a CSV with '
                          "the header class,group")
    if h.n_groups < 0 or h.n_groups == 1:
        raise ConfigError(f"hierarchy.n_groups={h.n_groups} must be >= 2, or 0 (automatic)")
    for name in ("group_parts", "class_parts"):
        if getattr(h, name) < 1:
            raise ConfigError(f"hierarchy.{name}={getattr(h, name)} must be >= 1")
    if not 0 <= h.sibling_fraction <= 1:
        raise ConfigError(f"hierarchy.sibling_fraction={h.sibling_fraction} must be in [0, 1]")


def _check_retrieval(cfg) -> None:
    g = cfg.groups
    for name in ("kmeans_iter", "restarts", "min_images"):
        if getattr(g, name) < 1:
            raise ConfigError(f"groups.{name}={getattr(g, name)} must be >= 1")
    if g.n_groups < 0 or g.n_groups == 1:
        raise ConfigError(f"groups.n_groups={g.n_groups} must be >= 2, or 0 (automatic)")
    f, r = cfg.features, cfg.retrieval
    for pool in f.pools:
        check_choice("features.pools", pool, RETRIEVAL_POOLS)
    if "rmac" in f.pools and f.mode != "roi":
        raise ConfigError('features.pools with "rmac" needs features.mode = "roi" (R-MAC '
                          "pools the regions of one feature map)")
    if not f.gem_p > 0:
        raise ConfigError(f"features.gem_p={f.gem_p} must be > 0")
    for name in r.descriptors:
        for piece in name.split("+"):
            if piece in ("global", "parts", "parts[unsup]", "parts[hier]", "w"):
                continue
            check_choice("retrieval.descriptors", piece,
                         RETRIEVAL_POOLS + ("global", "parts", "parts[unsup]", "parts[hier]"))
            if piece not in f.pools:
                raise ConfigError(f"retrieval.descriptors has {name!r}, which needs {piece!r} "
                                  f"in features.pools (now {list(f.pools)})")
    for name in r.rerank:
        check_choice("retrieval.rerank", name, RERANKING)
    check_choice("retrieval.index", r.index, SEARCH_INDEXES)
    if r.nprobe < 1:
        raise ConfigError(f"retrieval.nprobe={r.nprobe} must be >= 1")
    if not r.ks or any(k < 1 for k in r.ks):
        raise ConfigError(f"retrieval.ks={list(r.ks)} must be a non-empty list of K >= 1")
    if r.qe_neighbours < 1 or r.diffusion_k < 1:
        raise ConfigError("retrieval.qe_neighbours and retrieval.diffusion_k must be >= 1")
    if not 0 < r.diffusion_alpha < 1 or r.whiten_shrinkage < 0:
        raise ConfigError(f"retrieval.diffusion_alpha={r.diffusion_alpha} must be in (0, 1) "
                          f"and retrieval.whiten_shrinkage={r.whiten_shrinkage} >= 0")


def _check_pyramid(f) -> None:
    check_choice("features.pyramid_select", f.pyramid_select, PYRAMID_SELECT)
    if not f.pyramid:
        return
    sides = (f.short_side, *f.pyramid)
    if any(s < 32 for s in f.pyramid) or len(set(sides)) != len(sides):
        raise ConfigError(f"features.pyramid={list(f.pyramid)} must be short sides >= 32 px, "
                          f"distinct and other than features.short_side={f.short_side}")
    if f.mode != "roi":
        raise ConfigError(f"features.pyramid={list(f.pyramid)} needs features.mode = 'roi' "
                          f"(crop mode shows every region at features.crop_size already)")
