"""Every stage's wall time and memory as the data grows, and its growth exponent.

Two axes, each at 1x, 2x, 4x, 8x, 16x (``--scales``) of a small base, on the demo
generator's planted data (``partlearn.data.demo``, ``DemoSpec``, up to ``MAX_CLASSES``
classes):

- **images**: ``--classes`` classes, ``k x --train`` training and ``k x --test`` test
  images per class;
- **classes**: ``k x --classes`` classes at ``--train``/``--test`` images per class (so
  the images grow with the classes too).

Every point is one cold ``python -m partlearn run`` in a process of its own on an empty
cache; its ``results.json`` gives each stage's (and evaluator's) seconds (``timings``),
and its peak resident and anonymous memory (``memory.stages``: sampled, the process's
own without the memory maps' page cache). The exponent of a stage is the least-squares
slope of log(CPU seconds) on log(k) over the scales (``fit``; ``cpu_seconds``: the
process's CPU time in the stage, which other work on the cores does not inflate as it
does the wall time, also given), and over the last two (``top``: the growth where the
constants matter least). Stages under 0.5 CPU s at 16x are noise and shown, not judged.

What to expect, in the **images** (per class, classes fixed): linear (slope <= 1.15,
``LINEAR``) for every stage that touches each image a fixed number of times; the parts
below it (the negatives are capped at ``parts.n_negative_images`` per class). In the
**classes** (images per class fixed, so N grows with C): the part learning is C tasks
of positives + negatives (negatives grow until the cap, then stay: linear past it); the
encodings are images x parts = C x C (2); the classifier's one-vs-rest SVMs on the part
code: C problems of N rows x D = C x C x C (3), on the global descriptor C x C (2).

    python benchmarks/bench_scaling.py                       # ~15 min on 2 busy cores
    python benchmarks/bench_scaling.py --scales 1 2 --axes images --json s.json

The config is ``pipelines/demo.toml`` with ``OVERRIDES`` (a random resnet18 to layer3,
small images, 3 CV folds): costs, not accuracy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the package of this checkout, installed or not
    sys.path.insert(0, str(ROOT))

from _machine import cpu_model  # noqa: E402  (benchmarks/ is on sys.path as a script)

OVERRIDES = [
    "backbone.name=\"resnet18\"",  # random weights, to layer3: 256 channels, stride 16
    "backbone.weights=\"none\"",
    "backbone.tap=\"layer3\"",
    "features.short_side=64",
    "features.device=\"cpu\"",
    "encoding.device=\"cpu\"",
    "regions.scales=[0.25, 0.4]",
    "regions.stride=0.5",
    "parts.n_parts=4",
    "classifier.cv_folds=3",
    "classifier.C=[0.1, 1.0, 10.0]",
    "classifier.extend=0",
    "classifier.solver=\"torch\"",
    "classifier.n_bootstrap=1000",
    "data.format=\"csv\"",
    "data.min_train_per_class=2",
]

LINEAR = 1.15  # the largest slope a stage linear in the images may measure


def dataset(work: Path, classes: int, train: int, test: int, image_size: int) -> Path:
    from partlearn.data.demo import DemoSpec, ensure_demo

    root = work / f"data-{classes}c-{train}-{test}-{image_size}px"
    ensure_demo(root, spec=DemoSpec(n_classes=classes, n_train=train, n_test=test,
                                    image_size=image_size, n_clutter=(4, 6)))
    return root


def run_point(work: Path, name: str, root: Path, config: str, sets: list[str]) -> dict:
    cache, out = work / f"cache-{name}", work / f"run-{name}"
    for d in (cache, out):
        shutil.rmtree(d, ignore_errors=True)
    cmd = [sys.executable, "-m", "partlearn", "-q", "run", config, "--cache-dir", str(cache),
           "--out", str(out), *[x for s in OVERRIDES + [f"data.root=\"{root}\""] + sets
                                for x in ("--set", s)]]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    r = json.loads((out / "results.json").read_text())
    shutil.rmtree(cache, ignore_errors=True)
    mem = r.get("memory", {}).get("stages", {})
    return {"wall_s": round(wall, 2), "seconds": r["timings"], "cpu": r.get("cpu_seconds", {}),
            "rss_mb": {s: m.get("peak_rss_mb") for s, m in mem.items()},
            "anon_mb": {s: m.get("peak_anon_mb") for s, m in mem.items()},
            "peak_rss_mb": r["peak_memory_mb"],
            "peak_anon_mb": r.get("memory", {}).get("peak_anon_mb")}


def slope(xs, ys) -> float | None:
    """Least-squares slope of log y on log x (None with fewer than two positive y)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if y and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else None


def fit(points: dict, scales: list[int], metric: str) -> dict:
    """Per stage: the values at every scale, the slope over all, over the last two."""
    stages = []
    for k in scales:
        stages += [s for s in points[k][metric] if s not in stages]
    out = {}
    for s in stages:
        ys = [points[k][metric].get(s) for k in scales]
        out[s] = {"values": ys, "fit": slope(scales, ys), "top": slope(scales[-2:], ys[-2:])}
    return out


def _f(v, fmt="{:.2f}") -> str:
    return "—" if v is None else fmt.format(v)


def table(axis: str, points: dict, scales: list[int], expected: dict) -> str:
    c, t = fit(points, scales, "cpu"), fit(points, scales, "seconds")
    a = fit(points, scales, "anon_mb")
    none = {"values": [None] * len(scales), "fit": None, "top": None}
    head = ([f"{k}x CPU s" for k in scales] + ["CPU slope", "top 2", "wall slope"]
            + [f"{scales[0]}x own MB", f"{scales[-1]}x own MB", "expected"])
    lines = [f"| {axis} | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for s in t:
        row, w, m = c.get(s, none), t[s], a.get(s, none)
        lines.append(f"| {s} | " + " | ".join(
            [_f(v, "{:.1f}") for v in row["values"]] + [_f(row["fit"]), _f(row["top"]),
                                                         _f(w["fit"])]
            + [_f(m["values"][0], "{:.0f}"), _f(m["values"][-1], "{:.0f}"),
               expected.get(s, "")]) + " |")
    return "\n".join(lines)


#: expected growth (exponent) per stage, by axis (see the module)
EXPECTED = {
    "images": {"dataset": "1", "regions": "1", "features": "1", "parts": "<= 1 (negatives capped)",
               "encoding": "1", "encoding_cv": "1", "classifier": "~1 (SVM on N rows)"},
    "classes": {"dataset": "1", "regions": "1", "features": "1",
                "parts": "1-2 (negatives grow to the cap)", "encoding": "2 (N x parts)",
                "encoding_cv": "2", "classifier": "2-3 (C SVMs x N x D)"},
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--axes", nargs="+", default=["images", "classes"],
                   choices=["images", "classes"])
    p.add_argument("--classes", type=int, default=3, help="classes at 1x")
    p.add_argument("--train", type=int, default=4, help="training images per class at 1x")
    p.add_argument("--test", type=int, default=2, help="test images per class at 1x")
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--config", default=str(ROOT / "pipelines" / "demo.toml"))
    p.add_argument("--set", action="append", default=[], help="more config overrides")
    p.add_argument("--work", default="/tmp/partlearn-bench-scaling",
                   help="datasets (kept: a rerun reuses them), caches, run directories")
    p.add_argument("--json", help="write every figure here too")
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    report = {"machine": f"{cpu_model()}, {os.cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "scales": args.scales, "overrides": OVERRIDES + args.set, "axes": {}}
    for axis in args.axes:
        points = {}
        for k in args.scales:
            c = args.classes * (k if axis == "classes" else 1)
            n_tr, n_te = (args.train * k, args.test * k) if axis == "images" else \
                (args.train, args.test)
            root = dataset(work, c, n_tr, n_te, args.image_size)
            points[k] = run_point(work, f"{axis}-{k}x", root, args.config, args.set)
            points[k]["images"] = c * (n_tr + n_te)
            points[k]["classes"] = c
            print(f"{axis:7s} {k:3d}x {c:3d} classes {points[k]['images']:5d} images: "
                  f"{points[k]['wall_s']:7.1f} s, peak {points[k]['peak_rss_mb']:.0f} MB "
                  f"resident, {_f(points[k]['peak_anon_mb'], '{:.0f}')} MB own", flush=True)
        report["axes"][axis] = {"points": points, "seconds": fit(points, args.scales, "seconds"),
                                "cpu": fit(points, args.scales, "cpu"),
                                "anon_mb": fit(points, args.scales, "anon_mb")}
        sizes = ", ".join(f"{k}x {points[k]['classes']} classes / {points[k]['images']} images"
                          for k in args.scales)
        print(f"\n{axis}: {sizes}\n")
        print(table(axis, points, args.scales, EXPECTED[axis]))
        if axis == "images":
            over = {s: round(v["fit"], 2) for s, v in report["axes"][axis]["cpu"].items()
                    if v["fit"] is not None and v["fit"] > LINEAR and (v["values"][-1] or 0) >= 0.5}
            print(f"\nstages over slope {LINEAR} in the images: {over or 'none'}")
        print(flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
