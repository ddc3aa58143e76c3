"""EfficientNet-Lite's forward pass on the CPU: the package's model against partlearn's
inference rebuild (``partlearn/features/_lite.py``: BatchNorm folded, 'same' padding in the
kernels, conv + ReLU6 one oneDNN call), the same weights and inputs.

    python benchmarks/bench_lite.py [--threads 1] [--short-sides 320 448 672] [--reps 5]

Per short side (a 4:3 image, the long side rounded to the stride as the features
stage does) the two models alternate (ABBA) so that a noisy machine hurts both alike;
prints seconds per pass, the ratio, and the largest difference of the two maps
relative to their scale.
"""

from __future__ import annotations

import argparse
import time

import torch

from _machine import cpu_model  # benchmarks/ is on sys.path when run as a script
from partlearn._device import keep_heap_for_cpu_activations
from partlearn.features import create_backbone, lite_package_model


def seconds(model, x, reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        model(x)
    return (time.perf_counter() - t0) / reps


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--short-sides", type=int, nargs="+", default=[320, 448, 672])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_heap_for_cpu_activations()  # as the features stage runs
    package = lite_package_model(args.backbone)[0].extract_features
    rebuilt = create_backbone(args.backbone).model
    print(f"{args.backbone}, {args.threads} thread(s), {cpu_model()}\n")
    print("| short side | package (s) | rebuilt (s) | speed-up | max diff / max |")
    print("|---:|---:|---:|---:|---:|")
    with torch.inference_mode():
        for s in args.short_sides:
            long_ = 32 * round(s * 4 / 3 / 32)
            x = torch.rand(1, 3, s, long_, generator=torch.Generator().manual_seed(s)) * 2 - 1
            a, b = package(x), rebuilt(x)
            diff = float((a - b).abs().max() / a.abs().max())
            for m in (package, rebuilt):  # warm-up: kernels and the heap
                m(x)
            t = {"package": [], "rebuilt": []}
            for order in (("package", "rebuilt"), ("rebuilt", "package")):
                for k in order:
                    t[k].append(seconds(package if k == "package" else rebuilt, x, args.reps))
            p, r = sum(t["package"]) / 2, sum(t["rebuilt"]) / 2
            print(f"| {s} | {p:.3f} | {r:.3f} | {p / r:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
