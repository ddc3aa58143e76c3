"""What the retrieval pools (``features.pools``) cost in the features pass.

    python benchmarks/bench_pools.py --data ../shared/data/cub200_c001-020/CUB_200_2011

``extract_features`` end to end (decode, resize, forward, RoI mean pooling of the
dense regions) on the same ``--images`` CUB images without pools, with the
whole-map pools (``mac``, ``gem``, ``spoc``) and with ``rmac`` too (every region
max-pooled by RoIAlign), rounds interleaved so that a noisy machine hurts every
setting alike. Prints images/s and the ratios to the run without pools.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from _machine import cpu_model  # benchmarks/ is on sys.path when run as a script
from partlearn.data import _dataset as datasets
from partlearn.features import create_backbone
from partlearn.config import FeaturesConfig, RegionsConfig
from partlearn.features import extract_features
from partlearn.features import dense_regions

SETTINGS = {"none": (), "mac+gem+spoc": ("mac", "gem", "spoc"),
            "mac+gem+spoc+rmac": ("mac", "gem", "spoc", "rmac")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="CUB_200_2011 folder")
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    m = datasets.read_dataset(args.data, format="cub")
    paths = [str(Path(m.root) / p) for p in m.path[:args.images]]
    sizes = np.array([datasets.load_image(p).size for p in paths])
    r, f = RegionsConfig(), FeaturesConfig()
    regions = [dense_regions(w, h, scales=r.scales, stride=r.stride, full_image=r.full_image,
                             flips=False, min_size=r.min_size) for w, h in sizes]
    backbone = create_backbone("efficientnet_lite0")
    seconds = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name, pools in SETTINGS.items():
            t0 = time.perf_counter()
            for _ in extract_features(paths, [b for b, _ in regions], [fl for _, fl in regions],
                                      sizes, backbone, load_image=datasets.load_image,
                                      short_side=f.short_side, device="cpu", workers=0,
                                      descriptors=pools):
                pass
            seconds[name].append(time.perf_counter() - t0)
    n_regions = sum(len(b) for b, _ in regions)
    print(f"# {cpu_model()}, {os.cpu_count()} cores; {len(paths)} CUB images, "
          f"{n_regions / len(paths):.0f} regions per image, {args.rounds} rounds (median)")
    base = np.median(seconds["none"])
    print("| pools | images/s | time / no pools |\n|---|---|---|")
    for name, s in seconds.items():
        print(f"| {name} | {len(paths) / np.median(s):.1f} | {np.median(s) / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
