"""``multiscale``: region features from an image pyramid (``features.pyramid``); runs when
it is set and then stands for ``features`` downstream.

Each extra short side is the ``features`` stage of the same config at that short side
(a sub-input ``features@672``), so it is its own cache entry: adding a scale, or a run
at that short side alone, reuses it. Each region's descriptor comes from the scale that
shows it nearest ``features.pyramid_target`` px, or is the mean over the scales
(``features.pyramid_select``; ``partlearn.features.multiscale``). The whole-image descriptors are
``features.short_side``'s, so ``global`` is the same as without the pyramid.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

from .._progress import progress
from ._base import Stage
from .features import RegionFeatures

logger = logging.getLogger(__name__)


def _scales(cfg) -> dict[str, int]:
    return {f"features@{s}": s for s in cfg.features.pyramid}


def sub_inputs(cfg) -> dict[str, tuple[str, dict]]:
    # the sub-config's own pyramid is empty: it is one scale
    return {name: ("features", {"features.short_side": s, "features.pyramid": []})
            for name, s in _scales(cfg).items()}


def choice(f, boxes, image_short) -> np.ndarray | None:
    """Per region of one image (``boxes``, its short side ``image_short`` px), the index
    of the scale of ``[f.short_side, *f.pyramid]`` it is taken from; None: the mean."""
    from ..features import multiscale  # imports torch: only when features are computed

    if f.pyramid_select != "nearest":
        return None
    return multiscale.nearest_scale(boxes, image_short, [f.short_side, *f.pyramid],
                                    f.pyramid_target)


def combine(rows, scale_choice) -> np.ndarray:
    """One image's float16 region rows from its rows at every scale (``choice``): what
    the stage stores, and what ``partlearn.model`` computes for a new image."""
    from ..features import multiscale

    return multiscale.combine(rows, scale_choice).astype(np.float16)


class ImageFeatures(NamedTuple):
    """One image as the run's stages see it: float16 region rows ``(R, D)``, their boxes
    and mirror flags, ``size`` ``(width, height)``, the float16 global descriptor (and
    the mirrored image's, or None)."""

    regions: np.ndarray
    boxes: np.ndarray
    flips: np.ndarray
    size: tuple
    global_: np.ndarray
    global_flip: np.ndarray | None


def image_features(cfg, pils: list, backend) -> list[ImageFeatures]:
    """New images (RGB PIL images), each as the ``regions``, ``features`` and ``multiscale``
    stages of config ``cfg`` store a dataset's: the same regions, every short side of the
    pyramid extracted by ``extract_images`` (``backend``'s tasks, one torch thread each on
    the CPU: ``cpu_tasks``), the same float16 rows and scale choice. What
    ``partlearn.model`` and ``partlearn explain`` compute for an image."""
    from .._device import resolve_device
    from ..config import with_values
    from ..features import dense_regions
    from . import regions
    from .features import cpu_tasks, extract_images, precision, spec, torch_threads

    f = cfg.features
    n = len(pils)
    sizes = np.array([im.size for im in pils], np.int64).reshape(-1, 2)
    laid = [dense_regions(int(w), int(h), **regions.params(cfg.regions)) for w, h in sizes]
    keys = [f"image {k}" for k in range(n)]
    lookup = dict(zip(keys, pils))
    order = sorted(range(n), key=lambda i: (sizes[i, 0], sizes[i, 1]))
    tasks, threads = cpu_tasks(f.device, backend, n)
    chunks = [c.tolist() for c in np.array_split(order, tasks) if len(c)]
    prec = precision(f.amp, resolve_device(f.device))
    sides = [f.short_side, *f.pyramid]
    rows = {}
    for side in sides:  # each side as its features@S sub-input computes it
        side_cfg = with_values(cfg, {"features.short_side": side, "features.pyramid": [],
                                     "features.workers": 0})
        items = [{"paths": [keys[i] for i in c], "boxes": [laid[i][0] for i in c],
                  "flips": [laid[i][1] for i in c], "sizes": sizes[c]} for c in chunks]
        got = [None] * n
        with torch_threads(threads):
            for k, out in backend.map(extract_images, items, threads=tasks > 1,
                                      shared={"spec": spec(side_cfg, prec, threads, pools=False),
                                              "load_image": lookup.__getitem__}):
                for i, row in zip(chunks[k], out):
                    got[i] = row
        rows[side] = got
    out = []
    for i in range(n):
        base = rows[f.short_side][i]
        boxes, flips = laid[i]
        reg = base["regions"]
        if f.pyramid:
            reg = combine([rows[s][i]["regions"] for s in sides],
                          choice(f, boxes, int(sizes[i].min())))
        out.append(ImageFeatures(reg, boxes, flips, (sizes[i, 0], sizes[i, 1]),
                                 base["global"], base.get("global_flip")))
    return out


def compute(ctx, w) -> None:
    f = ctx.cfg.features
    data, regions = ctx.get("dataset"), ctx.get("regions")
    base = ctx.get("features")
    names = list(_scales(ctx.cfg))
    feats = [base] + [ctx.get(n) for n in names]
    sides = [f.short_side] + list(f.pyramid)
    short = np.minimum(data.width, data.height)
    counts = np.zeros(len(sides), np.int64)
    logger.info("multiscale: short sides %s, %s", sides,
                f"each region from the one nearest {f.pyramid_target} px"
                if f.pyramid_select == "nearest" else "the mean over them")
    done = {s for s in range(len(base.shards)) if w.shard_done(s)}  # a resumed write
    if done:
        logger.info("multiscale: %d of %d shards already done, resuming", len(done),
                    len(base.shards))
    for s in progress(range(len(base.shards)), desc="multiscale", unit="shard"):
        images = range(base.shard_images[s], base.shard_images[s + 1])
        choices = [choice(f, regions.boxes[regions.of(i)], short[i]) for i in images]
        for c in choices:
            if c is not None:
                counts += np.bincount(c, minlength=len(sides))
        if s in done:
            continue
        out = [combine([x.image(i) for x in feats], c) for i, c in zip(images, choices)]
        arrays = {"regions": np.concatenate(out),
                  "global": base.global_[images.start:images.stop]}
        if base.global_flip is not None:
            arrays["global_flip"] = base.global_flip[images.start:images.stop]
        w.save_shard(s, arrays)
    if f.pyramid_select == "nearest":
        share = counts / max(counts.sum(), 1)
        logger.info("multiscale: regions per short side: %s", ", ".join(
            f"{side}: {p:.0%}" for side, p in zip(sides, share)))
        w.meta["regions_per_scale"] = dict(zip(map(str, sides), counts.tolist()))
    w.meta.update(n_images=len(base), n_shards=len(base.shards), dim=base.dim,
                  dtype="float16", with_global_flip=base.global_flip is not None)


def load(ctx, entry) -> RegionFeatures:
    return RegionFeatures.from_entry(entry, ctx.get("regions"))


STAGE = Stage(
    name="multiscale", version=1,
    inputs=lambda cfg: ("dataset", "regions", "features", *_scales(cfg)),
    fields=("features.short_side", "features.pyramid", "features.pyramid_select",
            "features.pyramid_target"),
    libs=("numpy",), compute=compute, load=load,
    applies=lambda cfg: bool(cfg.features.pyramid), replaces="features",
    sub_inputs=sub_inputs)
