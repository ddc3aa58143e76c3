"""What glibc's default malloc thresholds cost a CPU forward pass, against the heap kept
(``partlearn._device.keep_heap_for_cpu_activations``, which ``extract_features`` calls).

    PYTHONPATH=. python benchmarks/bench_heap.py [--sides 448 672] [--rounds 3] [--reps 5]

Each round runs two fresh processes one after the other (default thresholds, then the
heap kept), each timing ``--reps`` forward passes of the default backbone on a random
batch of one image per short side (4:3, long side a multiple of 32) after one warm-up
pass; per pass: wall time, kernel (system) CPU time and minor page faults. Prints a
Markdown table of the medians over the rounds and the ratio of the two.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np

from _machine import cpu_model  # benchmarks/ is on sys.path when run as a script

CHILD = r"""
import json, resource, sys, time
import torch
from partlearn._device import keep_heap_for_cpu_activations
from partlearn.features import create_backbone
keep, sides, reps = sys.argv[1] == "kept", [int(s) for s in sys.argv[2].split(",")], int(sys.argv[3])
if keep:
    assert keep_heap_for_cpu_activations()
model = create_backbone("efficientnet_lite0").model.eval()
out = {}
for side in sides:
    x = torch.randn(1, 3, side, side * 4 // 3 // 32 * 32)
    with torch.no_grad():
        model(x)
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(reps):
            model(x)
        t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    out[side] = {"wall": (t1 - t0) / reps, "sys": (r1.ru_stime - r0.ru_stime) / reps,
                 "faults": (r1.ru_minflt - r0.ru_minflt) / reps}
print(json.dumps(out))
"""


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sides", type=int, nargs="+", default=[448, 672])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    runs = {"default": [], "kept": []}
    for _ in range(args.rounds):
        for mode in runs:
            p = subprocess.run([sys.executable, "-c", CHILD, mode,
                                ",".join(map(str, args.sides)), str(args.reps)],
                               capture_output=True, text=True, check=True)
            runs[mode].append(json.loads(p.stdout.strip().splitlines()[-1]))
    print(f"\nEfficientNet-Lite0 forward, 1 image, {args.reps} passes x {args.rounds} rounds; "
          f"{cpu_model()}\n")
    print("| short side | default: s/pass (kernel s) | faults/pass | heap kept: s/pass "
          "(kernel s) | faults/pass | default / kept |")
    print("|---|---:|---:|---:|---:|---:|")
    for side in map(str, args.sides):
        med = {m: {k: float(np.median([r[side][k] for r in runs[m]]))
                   for k in ("wall", "sys", "faults")} for m in runs}
        d, k = med["default"], med["kept"]
        print(f"| {side} | {d['wall']:.3f} ({d['sys']:.3f}) | {d['faults']:,.0f} | "
              f"{k['wall']:.3f} ({k['sys']:.3f}) | {k['faults']:,.0f} | "
              f"**{d['wall'] / k['wall']:.2f}x** |")


if __name__ == "__main__":
    main()
