"""Region and whole-image descriptors from a frozen backbone, and PCA on them.

``extract_features`` resizes each image so its short side is ``short_side``,
runs the backbone once (once more on the mirrored image when some region is
flipped), and pools every region box from that one feature map (``mode="roi"``,
RoIAlign geometry). ``mode="crop"`` is the original two-stage method: every
region cropped, resized and forwarded on its own; it exists for fidelity
checks. Functions take and return arrays; caching is the caller's business.
``fit_pca`` and ``apply_pca`` live in ``_pca`` and are importable from here.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .._device import keep_heap_for_cpu_activations, resolve_device
from ._roi import _roi_batch
from .._validation import ConfigError, DataError, PartlearnError, check_choice
from ..config import FEATURE_MODES, RETRIEVAL_POOLS, ROI_POOLING, FeaturesConfig

logger = logging.getLogger(__name__)

_F = FeaturesConfig  # defaults live there, once
_BOX_TOLERANCE = 1e-3  # pixels a box may stick out of its image (float rounding)


# ------------------------------------------------------------------ normalising


def _signed_sqrt_l2_torch(x: torch.Tensor) -> torch.Tensor:
    """``signed_sqrt_l2`` on the rows of a float tensor, on its device.

    The squared norm of ``sqrt(|x|)`` is ``sum |x|``: no second pass needed.
    """
    a = x.abs()
    norm = a.sum(dim=-1, keepdim=True).sqrt_().clamp_(min=torch.finfo(a.dtype).tiny)
    return a.sqrt_().copysign_(x).div_(norm)


# ---------------------------------------------------------------------- loading


def _resized_size(width: int, height: int, short_side: int,
                  multiple: int = 1) -> tuple[int, int]:
    """``(width, height)`` after scaling the short side to ``short_side``; the long
    side is rounded to a multiple of ``multiple`` (the backbone's stride).

    The rounding bends the aspect ratio by at most ``multiple / 2`` pixels
    (<= 2.4% at 448 px, stride 32); in exchange the feature map covers the image
    exactly, and images of similar shape share an input size, so they batch
    together and the backend does not build kernels (and keep memory) for
    every distinct size.
    """
    short = min(width, height)
    long_ = max(width, height) * short_side / short
    long_ = max(multiple, multiple * math.floor(long_ / multiple + 0.5))
    return (short_side, long_) if width <= height else (long_, short_side)


def _batches(targets: list[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Runs of consecutive images of one size, at most ``batch_size`` long."""
    batches: list[list[int]] = []
    for i, size in enumerate(targets):
        if batches and len(batches[-1]) < batch_size and targets[batches[-1][0]] == size:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


@dataclass
class _Failure:
    """A user-facing error raised while loading, carried out of a worker process."""

    message: str


def _to_chw(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)


def _crop_regions(img: Image.Image, boxes: np.ndarray, flips: np.ndarray,
                  crop_size: int) -> torch.Tensor:
    """``(R, 3, crop, crop)`` uint8: each box cut from the (mirrored) image and resized."""
    width, height = img.size
    out = np.empty((len(boxes), crop_size, crop_size, 3), dtype=np.uint8)
    mirrored = None
    for k, ((x0, y0, x1, y1), flip) in enumerate(zip(boxes.tolist(), flips.tolist())):
        src = img
        if flip:
            mirrored = mirrored or img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            src, (x0, x1) = mirrored, (width - x1, width - x0)
        box = (max(x0, 0.0), max(y0, 0.0), min(x1, width), min(y1, height))
        out[k] = np.asarray(src.resize((crop_size, crop_size), Image.Resampling.BILINEAR,
                                       box=box))
    return torch.from_numpy(out).permute(0, 3, 1, 2)


class _Images(torch.utils.data.Dataset):
    """Decode + resize (+ crop) of one image: ``(index, (3, H, W) uint8, crops or None)``."""

    def __init__(self, paths, sizes, targets, load_image, boxes, flips, crop_size, crops):
        self.paths, self.sizes, self.targets, self.crops = paths, sizes, targets, crops
        self.load_image = load_image
        self.boxes, self.flips, self.crop_size = boxes, flips, crop_size  # crop_size 0: no crops

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            img = self.load_image(self.paths[i])
        except PartlearnError as e:
            return _Failure(str(e))
        if self.crops is not None and self.crops[i] is not None:
            img = img.crop(tuple(self.crops[i]))
        expected = tuple(int(v) for v in self.sizes[i])
        if img.size != expected:
            return _Failure(
                f"{self.paths[i]}: load_image gave a {img.size[0]}x{img.size[1]} px image but "
                f"sizes[{i}] says {expected[0]}x{expected[1]}"
            )
        if img.mode != "RGB":
            img = img.convert("RGB")
        full = _to_chw(img.resize(self.targets[i], Image.Resampling.BILINEAR))
        crops = None
        if self.crop_size:
            crops = _crop_regions(img, self.boxes[i], self.flips[i], self.crop_size)
        return i, full, crops


def _collate(items):
    for item in items:
        if isinstance(item, _Failure):
            return item
    idx = [item[0] for item in items]
    return idx, torch.stack([item[1] for item in items]), [item[2] for item in items]


# ---------------------------------------------------------------------- pooling


def amp_dtype(device) -> torch.dtype:
    """The autocast type on CUDA ``device``: bfloat16 where the GPU has it, else float16.

    On an H200, float16 autocast had cuDNN build kernels at every new input
    shape (1.6 s each for EfficientNet-Lite0, against 0.08 s in bfloat16 and
    0.05 s in float32, for the same speed after; BENCHMARKS.md): with CUB's
    many image sizes that made extraction slower than on 2 CPU cores.
    """
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) \
        else torch.float16


def _forward(model: torch.nn.Module, x: torch.Tensor, amp: bool) -> torch.Tensor:
    """The tap's map in float32. On CPU one image at a time: at 448 px that is
    2-3x faster per image than a batch (the activations stay in cache)."""
    if x.device.type == "cuda":
        with torch.autocast("cuda", dtype=amp_dtype(x.device), enabled=amp):
            return model(x).float()
    return torch.cat([model(x[i:i + 1]) for i in range(len(x))]).float()


def _check_inputs(paths, boxes, flips, sizes):
    n = len(paths)
    if not (len(boxes) == len(flips) == len(sizes) == n):
        raise ConfigError(
            f"paths, boxes, flips and sizes must have one entry per image: got {n} paths, "
            f"{len(boxes)} boxes, {len(flips)} flips, {len(sizes)} sizes"
        )
    sizes = np.asarray(sizes).reshape(-1, 2) if n else np.zeros((0, 2), np.int64)
    if np.any(sizes < 1):
        i = int(np.flatnonzero((sizes < 1).any(axis=1))[0])
        raise DataError(f"{paths[i]}: size {sizes[i].tolist()} must be positive (width, height)")
    out_boxes, out_flips = [], []
    for i in range(n):
        b = np.ascontiguousarray(boxes[i], dtype=np.float32)
        f = np.ascontiguousarray(flips[i], dtype=bool)
        if b.ndim != 2 or b.shape[1] != 4 or f.shape != (len(b),):
            raise DataError(
                f"{paths[i]}: boxes should be (R, 4) and flips (R,), got {b.shape} and {f.shape}"
            )
        width, height = sizes[i]
        bad = ~np.isfinite(b).all(axis=1) | (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1]) | (
            b[:, 0] < -_BOX_TOLERANCE) | (b[:, 1] < -_BOX_TOLERANCE) | (
            b[:, 2] > width + _BOX_TOLERANCE) | (b[:, 3] > height + _BOX_TOLERANCE)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{paths[i]}: box {k} = {b[k].tolist()} is not a non-empty x0, y0, x1, y1 box "
                f"inside the {width}x{height} px image"
            )
        out_boxes.append(b)
        out_flips.append(f)
    return out_boxes, out_flips, sizes.astype(np.int64)


def extract_features(paths, boxes, flips, sizes, backbone, *, load_image, mode=_F.mode,
                     short_side=_F.short_side, roi_size=_F.roi_size,
                     roi_pooling=_F.roi_pooling, crop_size=_F.crop_size,
                     batch_size=_F.batch_size, device=_F.device, amp=_F.amp,
                     workers=_F.workers, postprocess=True, with_global_flip=False,
                     descriptors=(), gem_p=_F.gem_p, crops=None, noise=_F.noise):
    """Yield ``(index, regions (R_i, D), global (D,), global_flip (D,) or None)`` per image,
    and with ``descriptors`` a fifth item: ``{name: array}`` of the retrieval descriptors
    asked for (``config.RETRIEVAL_POOLS``, each L2-normalised, not square-rooted): ``mac``
    (max over the map), ``gem`` (generalised mean, power ``gem_p``), ``spoc`` (sum over
    the map) as ``(D,)``, and ``rmac`` ``(R_i, D)``: every region's max-pooled
    descriptor (RoIAlign max, the regional MACs R-MAC aggregates; ``roi`` mode only).

    Images come in input order. ``boxes[i]`` ``(R_i, 4)`` are ``x0, y0, x1,
    y1`` in original pixels of image ``i`` (``sizes[i]`` = its ``(width,
    height)`` as ``load_image`` returns it); ``flips[i]`` ``(R_i,)`` takes a
    region's content from the mirrored image (same box in the original frame).
    ``global`` is the mean of the full-image map (of the mirrored image for
    ``global_flip``, given only with ``with_global_flip``). ``postprocess``
    applies ``signed_sqrt_l2``. Arrays are float32. The backbone's model is
    moved to ``device``. ``crops[i]`` (optional): an integer ``(left, top,
    right, bottom)`` box the image is cropped to right after loading (a
    retrieval query's box), or None; ``sizes[i]`` and ``boxes[i]`` are then of
    the crop.
    """
    check_choice("mode", mode, FEATURE_MODES)
    check_choice("roi_pooling", roi_pooling, ROI_POOLING)
    for name, value in (("short_side", short_side), ("roi_size", roi_size),
                        ("crop_size", crop_size), ("batch_size", batch_size)):
        if value < 1:
            raise ConfigError(f"{name}={value} must be >= 1")
    if workers < -1:
        raise ConfigError(f"workers={workers} must be >= 0, or -1 (auto)")
    boxes, flips, sizes = _check_inputs(paths, boxes, flips, sizes)
    device = resolve_device(device)
    if workers == -1:  # on CPU, loader processes only take cores from the forward pass
        workers = min(8, os.cpu_count() or 1) if device.type == "cuda" else 0
    if device.type == "cpu" and keep_heap_for_cpu_activations():
        logger.debug("features: glibc keeps the activations' buffers in its heap")
    targets = [_resized_size(int(w), int(h), short_side, backbone.stride)
               for w, h in sizes]
    if crops is not None and len(crops) != len(paths):
        raise DataError(f"crops must have one entry per image: got {len(crops)} for "
                        f"{len(paths)} paths")
    dataset = _Images(list(paths), sizes, targets, load_image, boxes, flips,
                      crop_size if mode == "crop" else 0, crops)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=_batches(targets, batch_size), num_workers=workers,
        collate_fn=_collate, pin_memory=device.type == "cuda")
    # checks above run at the call; the work below runs as the caller iterates
    for name in descriptors:
        check_choice("descriptors", name, RETRIEVAL_POOLS)
    if "rmac" in descriptors and mode != "roi":
        raise ConfigError("the rmac descriptor pools the regions of one map: it needs "
                          "features.mode = \"roi\"")
    if not gem_p > 0:
        raise ConfigError(f"gem_p={gem_p} must be > 0")
    if noise and mode != "roi":
        raise ConfigError("features.noise perturbs the whole image's input: it needs "
                          "features.mode = \"roi\"")
    seeds = [noise_seed(p) for p in paths] if noise else None
    return _extract(loader, backbone, boxes, flips, sizes, device, mode, roi_size, roi_pooling,
                    batch_size, amp, postprocess, with_global_flip, tuple(descriptors), gem_p,
                    noise, seeds)


def noise_seed(path) -> int:
    """The seed of an image's noise: from its file name and folder (not the dataset's
    location), so the same image gets the same noise in any shard, order or copy."""
    p = os.path.normpath(str(path)).split(os.sep)
    return zlib.crc32("/".join(p[-2:]).encode())


def add_noise(x: torch.Tensor, std: float, seeds) -> torch.Tensor:
    """``x`` ``(B, 3, H, W)`` plus Gaussian noise of σ ``std`` clipped at ±1.25 ``std``,
    image ``b``'s drawn on the CPU from a generator seeded ``seeds[b]``."""
    for b, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(int(seed))
        n = torch.randn(x[b].shape, generator=g).mul_(std).clamp_(-1.25 * std, 1.25 * std)
        x[b] += n.to(x.device)
    return x


def _pooled(fmap: torch.Tensor, names, gem_p: float) -> dict:
    """The whole-map retrieval descriptors of a batch of same-size maps, L2-normalised."""
    fmap = fmap.float()
    out = {}
    if "mac" in names:
        out["mac"] = fmap.amax(dim=(2, 3))
    if "gem" in names:  # as max * mean((x / max)^p)^(1/p): no overflow at a large p
        x = fmap.clamp(min=1e-6)
        top = x.amax(dim=(2, 3), keepdim=True)
        out["gem"] = top[..., 0, 0] * (x / top).pow(gem_p).mean(dim=(2, 3)).pow(1.0 / gem_p)
    if "spoc" in names:
        out["spoc"] = fmap.sum(dim=(2, 3))
    return {k: torch.nn.functional.normalize(v, dim=1).cpu().numpy() for k, v in out.items()}


def _extract(loader, backbone, boxes, flips, sizes, device, mode, roi_size, roi_pooling,
             batch_size, amp, postprocess, with_global_flip, descriptors=(), gem_p=3.0,
             noise=0.0, seeds=None):
    model = backbone.model.to(device)
    mean = torch.tensor(backbone.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std, device=device).view(1, 3, 1, 1)

    def normalise(images: torch.Tensor) -> torch.Tensor:
        x = images.to(device, non_blocking=True).float().div_(255.0)
        return x.sub_(mean).div_(std)

    post = _signed_sqrt_l2_torch if postprocess else (lambda t: t)
    with torch.inference_mode():
        for batch in loader:
            if isinstance(batch, _Failure):
                raise DataError(batch.message)
            idx, images, crops = batch
            x = normalise(images)
            if noise:
                x = add_noise(x, noise, [seeds[i] for i in idx])
            fmap = _forward(model, x, amp)
            # crops of flipped regions come mirrored from the loader
            need_flip = with_global_flip or (mode == "roi" and any(flips[i].any() for i in idx))
            fmap_flip = _forward(model, x.flip(-1), amp) if need_flip else None
            glob = post(fmap.mean(dim=(2, 3))).cpu().numpy()
            glob_flip = post(fmap_flip.mean(dim=(2, 3))).cpu().numpy() if with_global_flip \
                else None
            if mode == "roi":
                regions = _roi_batch(fmap, fmap_flip, [boxes[i] for i in idx],
                                     [flips[i] for i in idx], [sizes[i] for i in idx],
                                     images.shape[-1], images.shape[-2], backbone.stride,
                                     roi_size, roi_pooling)
            else:
                regions = [torch.cat([_forward(model, normalise(c[s:s + batch_size]), amp)
                                      .mean(dim=(2, 3)) for s in range(0, len(c), batch_size)])
                           if len(c) else fmap.new_zeros(0, fmap.shape[1]) for c in crops]
                regions = torch.cat(regions)
            regions = post(regions).cpu().numpy()
            pooled = _pooled(fmap, descriptors, gem_p) if descriptors else None
            if "rmac" in descriptors:
                pooled["rmac"] = torch.nn.functional.normalize(_roi_batch(
                    fmap, fmap_flip, [boxes[i] for i in idx], [flips[i] for i in idx],
                    [sizes[i] for i in idx], images.shape[-1], images.shape[-2],
                    backbone.stride, roi_size, "max").float(), dim=1).cpu().numpy()
            start = 0
            for b, i in enumerate(idx):
                r = len(boxes[i])
                item = (i, regions[start:start + r], glob[b],
                        glob_flip[b] if glob_flip is not None else None)
                if pooled is not None:
                    item += ({k: v[start:start + r] if k == "rmac" else v[b]
                              for k, v in pooled.items()},)
                yield item
                start += r
