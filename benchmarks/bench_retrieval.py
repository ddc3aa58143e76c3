"""What retrieval evaluation costs: 3,000 queries over 3,000 images (the issue's target).

    python benchmarks/bench_retrieval.py [--n 3000] [--dim 1280] [--classes 100]

Synthetic unit descriptors (class means plus noise, so rankings are not degenerate).
Times, each the best of ``--rounds``: category-level evaluation (every image queries
the others: mAP and recall@K), the same after average query expansion, after diffusion
(k = 50), and instance-style exact search of the whole database through faiss
(``search``) and through an IVF-PQ index. Prints seconds and ms per query.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from _machine import cpu_model  # benchmarks/ is on sys.path when run as a script
from partlearn.retrieval import category_retrieval, diffusion, query_expansion, search


def _best(fn, rounds: int) -> float:
    best = np.inf
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, args.classes, args.n)
    x = rng.standard_normal((args.classes, args.dim))[labels] + \
        2.0 * rng.standard_normal((args.n, args.dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def qe():
        _, r = search(x, x, 6)
        category_retrieval(x, labels, queries=query_expansion(x, x, r[:, 1:], n=5))

    timings = {
        "category mAP + R@K": lambda: category_retrieval(x, labels),
        "  + average QE (n=5)": qe,
        "  + diffusion (k=50)": lambda: category_retrieval(
            x, labels, scores=diffusion(x, x, k=50)),
        "exact search, whole database": lambda: search(x, x),
        "IVF-PQ search, top 100": lambda: search(x, x, 100, index="ivfpq"),
    }
    print(f"# {cpu_model()}, {os.cpu_count()} cores; {args.n} queries over {args.n} images, "
          f"d = {args.dim}; best of {args.rounds}")
    for name, fn in timings.items():
        s = _best(fn, args.rounds)
        print(f"{name:32s} {s:7.2f} s  {1000 * s / args.n:6.2f} ms/query")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
