"""The parts stage's work on the local backend against the dask backend, same cores.

    python benchmarks/bench_backend.py pipelines/scene15.toml [--rounds 2] [--workers 2]
                                       [--set data.root=...] [--cache-dir cache]

With the config's region features already cached (``partlearn run CONFIG --until
features``), fits the stage's ``PartLearner`` on the training images, exactly as the
parts stage does, once per backend per round, alternating (local, dask, local, dask,
...), so that the machine's drift falls on both alike:

- ``local``: ``LocalBackend(n_jobs=-1)``, classes on threads of this process;
- ``dask``: ``DaskBackend`` on a ``LocalCluster`` of ``--workers`` single-threaded
  worker processes, started once before the rounds (its start time is printed apart).

Prints the wall time of each fit, the dask / local ratio of the medians, whether
every part (weights, bias, matches) is bit-identical between the backends, and the
mean time of one class's task (an input of ``project_scale.py``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from _machine import cpu_model  # benchmarks/ is on sys.path when run as a script
from partlearn import Pipeline
from partlearn.backend import DaskBackend, LocalBackend
from partlearn.config import load_config
from partlearn.stages.parts import learner


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    pipe = Pipeline(cfg, cache_dir=args.cache_dir)
    data, feats = pipe.load("dataset"), pipe.load(pipe.features_stage)
    train = data.train
    X, boxes = feats.images(train), feats.image_boxes(train)
    y, names = data.manifest.label[train], list(data.manifest.classes)
    print(f"{cfg.name}: {len(names)} classes, {len(train)} training images, "
          f"{cfg.parts.n_parts} parts per class; {cpu_model()}")

    t0 = time.perf_counter()
    dask = DaskBackend(n_workers=args.workers)
    print(f"dask: LocalCluster of {args.workers} single-threaded workers started in "
          f"{time.perf_counter() - t0:.1f} s")
    backends = {"local": LocalBackend(-1), "dask": dask}
    times, fitted, per_class = {"local": [], "dask": []}, {}, {"local": [], "dask": []}
    try:
        for r in range(args.rounds):
            for name, backend in backends.items():
                t0 = time.perf_counter()
                est = learner(cfg).fit(X, y, boxes=boxes, class_names=names, backend=backend,
                                       on_class=lambda k, res, s, n=name: per_class[n].append(s))
                times[name].append(time.perf_counter() - t0)
                fitted[name] = est
                print(f"round {r}: {name}: {times[name][-1]:.1f} s", flush=True)
    finally:
        dask.close()
    a, b = fitted["local"], fitted["dask"]
    same = (np.array_equal(a.parts_, b.parts_) and np.array_equal(a.part_bias_, b.part_bias_)
            and all(np.array_equal(x, z) for x, z in zip(a.matches_, b.matches_)))
    med = {k: statistics.median(v) for k, v in times.items()}
    print("\n| backend | fits (s) | median (s) |\n|---|---|---|")
    for k, v in times.items():
        print(f"| {k} | {', '.join(f'{t:.1f}' for t in v)} | {med[k]:.1f} |")
    print(f"\ndask / local: {med['dask'] / med['local']:.3f}; parts bit-identical: {same}")
    for k, v in per_class.items():  # a class's own time (on a thread, or on a worker)
        print(f"{k}: a class takes {statistics.mean(v):.2f} s on average "
              f"({len(train) / len(names):.0f} positive images per class)")


if __name__ == "__main__":
    main()
