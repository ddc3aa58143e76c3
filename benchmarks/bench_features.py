"""Benchmark region feature extraction: RoI pooling overhead and RoI vs crop cost.

    python benchmarks/bench_features.py --data ../shared/data/cub200_c001-020/CUB_200_2011

1. Throughput of RoI region extraction (forward + pooling of every dense
   region + signed sqrt/L2) against a plain forward pass of the same backbone
   at the same resolution over the same images. Measured twice, in one run,
   interleaved so that a noisy machine hurts both sides alike:
   (a) on decoded tensors, forward-only and forward+pooling alternating per
   image (ABBA), which isolates the pooling cost; (b) end to end
   (decode + resize + forward [+ pooling]) with ``extract_features`` against
   the same loader and forward without pooling, rounds alternating.
2. Cost per region of ``mode="roi"`` against ``mode="crop"`` (every region
   cropped, resized to crop_size and forwarded), end to end: crop runs on
   ``--crop-images`` images per round (interleaved with the RoI rounds) and
   is compared per region.

Prints a Markdown summary (and JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _machine import cpu_model  # benchmarks/ is on sys.path when run as a script
from partlearn.features import _extract as F
from partlearn.features import create_backbone
from partlearn.config import BackboneConfig, FeaturesConfig, RegionsConfig
from partlearn.features import dense_regions


def load_rgb(path):
    with Image.open(path) as img:
        return img.convert("RGB")


def cub_images(root: Path, n: int) -> list[str]:
    """``n`` images spread evenly over images.txt (every class represented)."""
    lines = (root / "images.txt").read_text().split("\n")
    rel = [line.split(maxsplit=1)[1] for line in lines if line.strip()]
    pick = np.linspace(0, len(rel) - 1, min(n, len(rel))).round().astype(int)
    return [str(root / "images" / rel[i]) for i in pick]


def plain_forward(paths, sizes, backbone, args):
    """The same loader and forward as extract_features, with no pooling."""
    targets = [F._resized_size(int(w), int(h), args.short_side, backbone.stride) for w, h in sizes]
    data = F._Images(paths, sizes, targets, load_rgb, None, None, 0)
    loader = torch.utils.data.DataLoader(data, batch_sampler=F._batches(targets, args.batch_size),
                                         num_workers=args.workers, collate_fn=F._collate)
    mean = torch.tensor(backbone.mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        for idx, images, _ in loader:
            x = (images.float() / 255.0 - mean) / std
            F._forward(backbone.model, x, False).mean(dim=(2, 3)).numpy()


def roi_extract(paths, boxes, flips, sizes, backbone, args, mode="roi"):
    n_regions = 0
    for _, reg, _, _ in F.extract_features(
            paths, boxes, flips, sizes, backbone, load_image=load_rgb, mode=mode,
            short_side=args.short_side, batch_size=args.batch_size, device="cpu",
            workers=args.workers):
        n_regions += len(reg)
    return n_regions


def timed(fn, *a, **kw):
    t = time.perf_counter()
    out = fn(*a, **kw)
    return time.perf_counter() - t, out


def tensor_level(paths, boxes, flips, sizes, backbone, args):
    """Forward vs forward+pooling on decoded tensors, ABBA per image."""
    prepared = []
    for p, (w, h) in zip(paths, sizes):
        tw, th = F._resized_size(int(w), int(h), args.short_side, backbone.stride)
        img = load_rgb(p).resize((tw, th), Image.Resampling.BILINEAR)
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255.0
        mean = torch.tensor(backbone.mean).view(1, 3, 1, 1)
        std = torch.tensor(backbone.std).view(1, 3, 1, 1)
        prepared.append((x - mean) / std)
    model, cfg = backbone.model, FeaturesConfig()

    def forward_only(i):
        F._forward(model, prepared[i], False).mean(dim=(2, 3)).numpy()

    def with_pooling(i):
        x = prepared[i]
        fmap = F._forward(model, x, False)
        F._signed_sqrt_l2_torch(fmap.mean(dim=(2, 3))).numpy()
        reg = F._roi_batch(fmap, None, [boxes[i]], [flips[i]], [sizes[i]], x.shape[-1],
                           x.shape[-2], backbone.stride, cfg.roi_size, cfg.roi_pooling)
        F._signed_sqrt_l2_torch(reg).numpy()

    t_fwd = t_roi = 0.0
    with torch.inference_mode():
        forward_only(0), with_pooling(0)  # warm-up
        for r in range(args.rounds):
            for i in range(len(prepared)):
                order = (forward_only, with_pooling) if (i + r) % 2 == 0 else (
                    with_pooling, forward_only)
                for fn in order:
                    dt, _ = timed(fn, i)
                    if fn is forward_only:
                        t_fwd += dt
                    else:
                        t_roi += dt
    n = len(prepared) * args.rounds
    return {"forward_img_s": n / t_fwd, "roi_img_s": n / t_roi, "ratio": t_fwd / t_roi}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="CUB_200_2011 folder (with images.txt)")
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--crop-images", type=int, default=1,
                    help="images run in crop mode per round (different ones each round)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repetitions")
    ap.add_argument("--short-side", type=int, default=FeaturesConfig.short_side)
    ap.add_argument("--batch-size", type=int, default=FeaturesConfig.batch_size)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    ap.add_argument("--backbone", default=BackboneConfig.name)
    ap.add_argument("--weights", default=BackboneConfig.weights,
                    help="weights enum, DEFAULT, a state-dict file, or none (random: speed only)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    paths = cub_images(Path(args.data), args.images)
    sizes = np.array([Image.open(p).size for p in paths])
    regions = [dense_regions(int(w), int(h), **dataclasses.asdict(RegionsConfig()))
               for w, h in sizes]
    boxes, flips = [r[0] for r in regions], [r[1] for r in regions]
    backbone = create_backbone(args.backbone, weights=args.weights)
    n_regions = sum(len(b) for b in boxes)
    print(f"{len(paths)} images, {n_regions} regions ({n_regions / len(paths):.0f}/image), "
          f"{backbone.name} ({backbone.weights_id}), short side {args.short_side}",
          file=sys.stderr)

    tensor = tensor_level(paths, boxes, flips, sizes, backbone, args)

    # end to end, rounds alternating; each round also crops a few images
    t_plain = t_roi = t_crop = 0.0
    crop_regions = 0
    roi_extract(paths[:2], boxes[:2], flips[:2], sizes[:2], backbone, args)  # warm-up
    k = args.crop_images
    for r in range(args.rounds):
        steps = ("plain", "roi", "crop") if r % 2 == 0 else ("crop", "roi", "plain")
        for step in steps:
            if step == "plain":
                dt, _ = timed(plain_forward, paths, sizes, backbone, args)
                t_plain += dt
            elif step == "roi":
                dt, _ = timed(roi_extract, paths, boxes, flips, sizes, backbone, args)
                t_roi += dt
            else:
                sel = [(r * k + j) % len(paths) for j in range(k)]
                dt, count = timed(roi_extract, [paths[i] for i in sel], [boxes[i] for i in sel],
                                  [flips[i] for i in sel], sizes[sel], backbone, args,
                                  mode="crop")
                t_crop += dt
                crop_regions += count
    n = len(paths) * args.rounds
    e2e = {"forward_img_s": n / t_plain, "roi_img_s": n / t_roi, "ratio": t_plain / t_roi}
    roi_per_region = t_roi / (n_regions * args.rounds)
    crop_per_region = t_crop / crop_regions
    k = k * args.rounds

    result = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "images": len(paths), "regions": n_regions, "backbone": backbone.name,
        "short_side": args.short_side, "batch_size": args.batch_size, "workers": args.workers,
        "rounds": args.rounds, "tensor_level": tensor, "end_to_end": e2e,
        "roi_ms_per_region": 1e3 * roi_per_region, "crop_images": k,
        "crop_regions": crop_regions, "crop_ms_per_region": 1e3 * crop_per_region,
        "crop_over_roi": crop_per_region / roi_per_region,
        "command": "python " + " ".join([sys.argv[0]] + (argv or sys.argv[1:])),
    }
    m = result["machine"]
    print(f"""
- Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['threads']} threads; CPU.
- {len(paths)} CUB images, {n_regions} dense regions ({n_regions / len(paths):.0f}/image),
  {backbone.name}, short side {args.short_side}, batch {args.batch_size}, workers {args.workers},
  {args.rounds} interleaved rounds.
- Pooling overhead, decoded tensors (forward vs forward + RoI pooling + sqrt/L2, ABBA per image):
  {tensor['forward_img_s']:.2f} vs {tensor['roi_img_s']:.2f} img/s, ratio {tensor['ratio']:.3f}.
- End to end (decode + resize + forward [+ pooling]):
  plain forward {e2e['forward_img_s']:.2f} img/s, RoI extraction {e2e['roi_img_s']:.2f} img/s, ratio {e2e['ratio']:.3f}.
- Per region: RoI {1e3 * roi_per_region:.3f} ms; crop {1e3 * crop_per_region:.1f} ms
  ({crop_regions} regions of {k} images); crop / RoI = {result['crop_over_roi']:.0f}x.
""")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
