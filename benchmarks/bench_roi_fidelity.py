"""How close the fast path's region features come to cropping each region: ``roi`` mode
(one forward pass per image at ``--short-sides``, RoIAlign per box) against ``crop``
mode (every region cropped, resized to ``crop_size`` and forwarded), per region size.

    python benchmarks/bench_roi_fidelity.py --data ../shared/data/cub200_c001-020/CUB_200_2011 \
        [--images 50] [--short-sides 320 448 672] [--pyramids 448,672 320,448,672] [--tap stride16]

The same images (``--images`` spread over images.txt), the default dense regions
(``config.RegionsConfig``), the default backbone and weights. For each region the
cosine between its ``roi`` descriptor at each short side and its ``crop`` descriptor
(both signed-square-rooted and L2-normalised, as the pipeline stores them), averaged
per window scale (a fraction of the short side; the full-image region apart), with the
number of feature-map cells the window spans at that short side (stride 32). Prints a
Markdown table; this is what ``features.mode = "roi"`` gives up against ``"crop"``
(27-40x slower, BENCHMARKS "Region features"). Each ``--pyramids`` entry (short sides,
the first the base) adds two columns: the ``multiscale`` stage's region features, each
region from the scale nearest 224 px (``nearest``) and the mean over the scales
(``mean``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _machine import cpu_model  # benchmarks/ is on sys.path when run as a script
from bench_features import cub_images, load_rgb
from partlearn.features import _extract as F
from partlearn.features import multiscale
from partlearn.features import create_backbone
from partlearn.config import BackboneConfig, RegionsConfig
from partlearn.features import dense_regions


def extract(paths, boxes, flips, sizes, backbone, mode, short_side):
    out = [None] * len(paths)
    for k, reg, *_ in F.extract_features(paths, boxes, flips, sizes, backbone,
                                         load_image=load_rgb, mode=mode,
                                         short_side=short_side, device="cpu", workers=0):
        out[k] = reg
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--short-sides", type=int, nargs="+", default=[448, 672])
    ap.add_argument("--pyramids", nargs="*", default=[],
                    help="comma-separated short sides, each a subset of --short-sides")
    ap.add_argument("--backbone", default=BackboneConfig.name)
    ap.add_argument("--tap", default=BackboneConfig.tap,
                    help="the backbone's tap (e.g. stride16: an earlier, finer map)")
    args = ap.parse_args(argv)
    pyramids = [[int(v) for v in p.split(",")] for p in args.pyramids]
    if any(s not in args.short_sides for p in pyramids for s in p):
        ap.error("every short side of --pyramids must be in --short-sides")
    paths = cub_images(Path(args.data), args.images)
    sizes = np.array([Image.open(p).size for p in paths])
    cfg = RegionsConfig()
    regions = [dense_regions(int(w), int(h), **dataclasses.asdict(cfg)) for w, h in sizes]
    boxes, flips = [r[0] for r in regions], [r[1] for r in regions]
    backbone = create_backbone(args.backbone, tap=args.tap)
    t0 = time.perf_counter()
    crop = extract(paths, boxes, flips, sizes, backbone, "crop", args.short_sides[0])
    print(f"crop mode: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    roi = {}
    for s in args.short_sides:
        t0 = time.perf_counter()
        roi[s] = extract(paths, boxes, flips, sizes, backbone, "roi", s)
        print(f"roi mode at {s}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    # each region's window scale: its side over the image's short side
    rel = np.concatenate([(b[:, 2] - b[:, 0]) / min(w, h) for b, (w, h) in zip(boxes, sizes)])
    full = np.concatenate([np.arange(len(b)) == 0 for b in boxes]) if cfg.full_image else \
        np.zeros(len(rel), bool)
    def cosines(feats):
        return np.concatenate([(np.asarray(a, np.float32) * np.asarray(c, np.float32)).sum(1)
                               for a, c in zip(feats, crop)])

    cos = {f"at {s}": cosines(roi[s]) for s in args.short_sides}
    for p in pyramids:
        for select in ("nearest", "mean"):
            cos[f"{select} {'+'.join(map(str, p))}"] = cosines([multiscale.combine(
                [roi[s][i] for s in p], None if select == "mean" else
                multiscale.nearest_scale(boxes[i], min(sizes[i]), p, 224))
                for i in range(len(paths))])
    groups = [(f"{sc:g}", ~full & np.isclose(rel, sc, atol=0.02), sc) for sc in cfg.scales]
    groups.append(("full image", full, 1.0))
    stride = backbone.stride
    print(f"\n{len(paths)} CUB images, {len(rel)} regions, {backbone.name} at {backbone.tap} "
          f"(stride {stride}, {backbone.channels} channels); {cpu_model()}\n")
    head = " | ".join(f"cosine {c}" + (" (cells)" if c.startswith("at ") else "") for c in cos)
    print(f"| window (of the short side) | regions | {head} |")
    print("|---|---:|" + "---:|" * len(cos))
    for name, mask, sc in groups:
        cells = [f"{cos[f'at {s}'][mask].mean():.3f} ({sc * s / stride:.1f} x "
                 f"{sc * s / stride:.1f})" for s in args.short_sides]
        cells += [f"{c[mask].mean():.3f}" for n, c in cos.items() if not n.startswith("at ")]
        print(f"| {name} | {int(mask.sum())} | {' | '.join(cells)} |")
    print(f"| all | {len(rel)} | " + " | ".join(f"{c.mean():.3f}" for c in cos.values()) + " |")


if __name__ == "__main__":
    main()
