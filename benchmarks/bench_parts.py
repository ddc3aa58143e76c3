"""Benchmark part learning (``partlearn.parts``) on synthetic region features.

    python benchmarks/bench_parts.py                 # all three measurements
    python benchmarks/bench_parts.py --only ratio    # or: regions, workers

Synthetic data at realistic sizes: D=1280 (the default backbone's width),
``--images`` positive images per class with ``--regions`` regions each, float16
like the feature cache; every region is a noisy copy of a vector from a
clutter set shared by all classes, except a few planted per-class prototypes.

1. ``ratio``: one class's ``learn_class_parts`` (``--negatives`` negative images)
   against the matrix products it cannot avoid, done by BLAS in the same run
   (``baseline``): the whitening of its positives, for every update it ran the
   scores ``Z Uᵀ`` and weighted means ``Aᵀ Z``, and the parts scored twice on
   all negative regions (mining them once, the final max responses). The
   negatives come stacked once, as the shared negative pool of
   ``PartLearner.fit`` and the pipeline. Rounds alternate class and baseline.
2. ``regions``: the same class at 1x, 2x, 4x the regions per image (positives
   and negatives), rounds interleaved; time per region should stay flat.
3. ``workers``: the per-class learning of ``--classes`` classes (what
   ``PartLearner.fit`` runs after the background: ``parts.learn_classes``) on
   one thread with one BLAS thread against 2 joblib worker threads of one BLAS
   thread each, rounds interleaved; and ``PartLearner.fit`` end to end with
   ``n_jobs=1`` (BLAS on every core) against ``n_jobs=2``.

Prints a Markdown summary (and JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from _machine import cpu_model  # benchmarks/ is on sys.path when run as a script
from partlearn.parts import _learner as P
from partlearn.backend import LocalBackend
from partlearn.config import PartsConfig
from partlearn.data import make_planted_regions


def synthetic(n_classes, n_images, n_regions, dim, seed=0, n_clutter=300, k=5, noise=1.0):
    """``(X, y)``: float16 ``(n_regions, dim)`` arrays, ``n_images`` per class."""
    d = make_planted_regions(n_classes, n_images, n_regions, dim, k=k, noise=noise,
                             n_clutter=n_clutter, seed=seed)
    return [x.astype(np.float16) for x in d["X"]], d["label"]


def one_class_inputs(args, n_regions, seed=0):
    """Positives (class 0), negatives (``--negatives`` images of other classes, stacked
    once as the pipeline's shared negative pool is), background."""
    n_classes = 1 + -(-args.negatives // args.images)
    X, y = synthetic(n_classes, args.images, n_regions, args.dim, seed=seed)
    pos = [X[i] for i in np.flatnonzero(y == 0)]
    neg = P.stack_regions([X[i] for i in np.flatnonzero(y != 0)][:args.negatives])
    sample = np.concatenate(X)[::max(1, len(y) * n_regions // PartsConfig.background_regions)]
    return pos, neg, P.fit_background(sample)


def timed(f):
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


def baseline(pos, neg, background, n_updates):
    """Seconds of the products the method needs, by BLAS: ``(positives, all)``.

    Positives: the whitening ``Z = (X - μ0) W`` and, at every update, the scores
    ``Z Uᵀ`` and the weighted means ``Aᵀ Z``. All: those, and every part scored
    on all negative regions twice (hard negatives are mined among all of them
    once, and the final max responses read them all again).
    """
    mean, w = background["mean"], background["whitener"]
    xp, _ = P.stack_regions(pos, len(mean))  # conversion not timed: not a product
    rng = np.random.default_rng(0)
    u = rng.standard_normal((PartsConfig.n_parts, len(mean)), dtype=np.float32)
    a = rng.random((len(xp), len(u)), dtype=np.float32)
    t0 = time.perf_counter()
    z = (xp - mean) @ w
    for _ in range(n_updates):
        s = z @ u.T
        m = a.T @ z
    t1 = time.perf_counter()
    for _ in range(2):
        s = neg.x @ u.T
    t2 = time.perf_counter()
    del s, m
    return t1 - t0, t2 - t0


class _Steps:
    """Adds up the seconds of named steps: ``with steps("name"): ...``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name):
        t = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t


def breakdown(pos, neg, background, boxes) -> dict:
    """Seconds of each step of ``learn_class_parts`` at the defaults, run step by step
    with the module's own helpers (a copy of its loop, for the figures only)."""
    c = PartsConfig()
    step = _Steps()
    mean, w = background["mean"], background["whitener"]
    with step("convert positives"):
        xp, offp = P.stack_regions(pos, len(mean))
    xn, offn = neg
    with step("whiten positives"):
        z = (xp - mean) @ w
    counts = np.diff(offp)
    r_max = int(counts.max())
    valid = np.arange(r_max)[None, :] < counts[:, None]
    with step("IoU"):
        overlap = P._iou_overlap(boxes, r_max, c.nms_iou)
    with step("k-means (faiss)"):
        u = P._normalise_rows(P._faiss.kmeans(z, c.n_parts, c.kmeans_iter, c.n_init, 0)[0])
    spad = np.full((len(pos), c.n_parts, r_max), -np.inf, np.float32)
    rows = spad.transpose(0, 2, 1)
    beta, pool = c.beta_start, None
    while beta <= c.beta_end * (1 + 1e-9):
        if pool is None:
            with step("mine: first level, all negatives"):
                _, idx = P._faiss.topk_inner(u @ w, xn, c.hard_negatives * c.negative_cache)
                pool = xn[np.unique(idx)]
        with step("mine: hard negatives in the pool"):
            hard = P._hard_negative_mean(u, pool, mean, w, c.hard_negatives)
        with step("score products"):
            rows[valid] = z @ u.T
        with step("NMS"):
            match, _ = P._harden(spad, c.slack, c.sparsity, overlap)
            spad[P._suppression(match, overlap)] = -np.inf
        with step("Sinkhorn"):
            m = P._softassign(spad, beta, c.slack, c.sinkhorn_iter, c.sparsity)
        with step("weighted means"):
            a = m.transpose(0, 2, 1)[valid]
            u = P._normalise_rows((a.T @ z) / a.sum(axis=0)[:, None]
                                  - c.negative_weight * hard)
        beta *= c.beta_growth
    with step("final scores"):
        P._max_per_image(xn, offn, u @ w, 0.0)
    return step.seconds


def bench_ratio(args) -> dict:
    pos, neg, bg = one_class_inputs(args, args.regions)
    rng = np.random.default_rng(0)
    boxes = []
    for x in pos:  # random boxes in a 500x500 image: NMS has work to do
        xy = rng.uniform(0, 400, (len(x), 2))
        boxes.append(np.c_[xy, xy + rng.uniform(50, 100, (len(x), 2))].astype(np.float32))
    P.learn_class_parts(pos, neg, bg, boxes=boxes)  # warm-up
    rows, parts = [], []
    for _ in range(args.rounds):
        t_class, res = timed(lambda: P.learn_class_parts(pos, neg, bg, boxes=boxes))
        n_updates = int(res["n_updates"])
        positives, products = baseline(pos, neg, bg, n_updates)
        rows.append({"t_class": t_class, "positives": positives, "products": products,
                     "n_updates": n_updates})
        parts.append(breakdown(pos, neg, bg, boxes))
    def med(key):
        return float(np.median([r[key] for r in rows]))

    return {"n_positives": len(pos), "n_negatives": len(neg.offsets) - 1,
            "regions": args.regions, "dim": args.dim, "rounds": rows,
            "t_class": med("t_class"), "positives": med("positives"), "products": med("products"),
            "ratio_positives": float(np.median([r["t_class"] / r["positives"] for r in rows])),
            "ratio": float(np.median([r["t_class"] / r["products"] for r in rows])),
            "breakdown": {k: float(np.median([p[k] for p in parts])) for k in parts[0]}}


def bench_regions(args) -> dict:
    scales = (1, 2, 4)
    base = max(8, args.regions // 2)
    inputs = {s: one_class_inputs(args, base * s) for s in scales}
    for s in scales:
        P.learn_class_parts(*inputs[s])  # warm-up
    times = {s: [] for s in scales}
    updates = {}
    for r in range(args.rounds):
        for s in (scales if r % 2 == 0 else scales[::-1]):
            t, res = timed(functools.partial(P.learn_class_parts, *inputs[s]))
            times[s].append(t)
            updates[s] = int(res["n_updates"])
    out = []
    for s in scales:
        t = float(np.median(times[s]))
        n = (args.images + args.negatives) * base * s
        out.append({"scale": s, "regions_per_image": base * s, "total_regions": n,
                    "seconds": t, "rounds": times[s], "us_per_region": 1e6 * t / n,
                    "n_updates": updates[s]})
    return {"rows": out}


def bench_workers(args) -> dict:
    X, y = synthetic(args.classes, args.images, args.regions, args.dim, seed=1)
    params = {"random_state": 0, "n_negative_images": args.negatives}
    est = P.PartLearner(**params).fit(X, y)  # the background and the per-class jobs of fit
    bg = est.background_
    pool, negatives = P.negative_pool(y, args.negatives, np.random.default_rng(0))
    stack = P.stack_regions([X[i] for i in pool])
    items = [([X[i] for i in np.flatnonzero(y == c)], {"negative_images": neg})
             for c, neg in zip(est.classes_, negatives)]
    shared = {"negatives": stack, "background": bg, "dim": X.shape[-1], "token": "bench"}

    def classes(n_jobs):  # what fit runs after the background
        if n_jobs == 1:
            with threadpool_limits(1):
                return [r for _, r, _ in P.learn_classes(items, shared, LocalBackend(1))]
        return [r for _, r, _ in P.learn_classes(items, shared, LocalBackend(n_jobs))]

    def fit(n_jobs):
        return P.PartLearner(n_jobs=n_jobs, **params).fit(X, y)

    classes(2)  # start the worker pool
    fit(2)
    t = {"classes_1": [], "classes_2": [], "fit_1": [], "fit_2": []}
    for r in range(args.rounds):
        order = (1, 2) if r % 2 == 0 else (2, 1)
        for n in order:
            t[f"classes_{n}"].append(timed(functools.partial(classes, n))[0])
        for n in order:
            t[f"fit_{n}"].append(timed(functools.partial(fit, n))[0])
    med = {k: float(np.median(v)) for k, v in t.items()}
    return {"classes": args.classes, "times": t, "median": med,
            "speedup_classes": med["classes_1"] / med["classes_2"],
            "speedup_fit": med["fit_1"] / med["fit_2"]}


def machine() -> dict:
    blas = [f"{i['internal_api']} {i.get('version', '')} ({i['num_threads']} threads)"
            for i in threadpool_info()]
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "blas": blas, "faiss_gpus": P._faiss.num_gpus()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=("ratio", "regions", "workers"), action="append")
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--images", type=int, default=30, help="positive images per class")
    ap.add_argument("--regions", type=int, default=200, help="regions per image")
    ap.add_argument("--negatives", type=int, default=PartsConfig.n_negative_images)
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tmp", default=os.environ.get("TMPDIR", "/tmp"))
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    todo = args.only or ["ratio", "regions", "workers"]
    out = {"machine": machine(), "args": vars(args)}
    if "ratio" in todo:
        r = out["ratio"] = bench_ratio(args)
        print(f"\n### One class: {r['n_positives']} positives, {r['n_negatives']} negatives, "
              f"{r['regions']} regions/image, D={r['dim']}\n")
        print("| class learning | all its products | ratio | the positives' products | ratio "
              "| updates |")
        print("|---|---|---|---|---|---|")
        print(f"| {r['t_class']:.3f} s | {r['products']:.3f} s | **{r['ratio']:.2f}** | "
              f"{r['positives']:.3f} s | {r['ratio_positives']:.2f} | "
              f"{r['rounds'][0]['n_updates']} |")
        print("\nSteps (run one by one, medians): " + ", ".join(
            f"{k} {1000 * v:.0f} ms" for k, v in r["breakdown"].items()))
    if "regions" in todo:
        r = out["regions"] = bench_regions(args)
        print("\n### Cost vs regions\n")
        print("| scale | regions/image | regions (pos + neg) | seconds | µs/region | updates |")
        print("|---|---|---|---|---|---|")
        for row in r["rows"]:
            print(f"| {row['scale']}x | {row['regions_per_image']} | {row['total_regions']:,} "
                  f"| {row['seconds']:.3f} | {row['us_per_region']:.2f} | {row['n_updates']} |")
    if "workers" in todo:
        r = out["workers"] = bench_workers(args)
        m = r["median"]
        print(f"\n### Workers: {r['classes']} classes\n")
        print("| section | 1 worker | 2 workers | speed-up |")
        print("|---|---|---|---|")
        print(f"| per-class learning (1 BLAS thread per worker) | {m['classes_1']:.2f} s | "
              f"{m['classes_2']:.2f} s | **{r['speedup_classes']:.2f}x** |")
        print(f"| PartLearner.fit (n_jobs=1: BLAS on all cores) | {m['fit_1']:.2f} s | "
              f"{m['fit_2']:.2f} s | **{r['speedup_fit']:.2f}x** |")
    print("\nmachine:", json.dumps(out["machine"]))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    sys.exit(main() and 0)
