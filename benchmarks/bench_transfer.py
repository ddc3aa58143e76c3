"""What the transfer evaluation costs once the descriptors exist.

    python benchmarks/bench_transfer.py pipelines/cub200_novel.toml [--set data.root=...]
                                        [--cache-dir cache] [--methods global parts]

With the config's run finished (every stage and the novel images' features cached),
builds each method's descriptors of the novel and base images once (not timed), then
times, per method and shot count, the ``transfer.episodes`` episodes (drawing them, the
nearest class mean, and logistic regression: the C chosen on base episodes, then the
fit on the novel ones), and the unseen-class retrieval (plain and with query
expansion). Prints wall and CPU seconds (CPU: this process's, all threads): on a
machine shared with other jobs the CPU seconds are what the work costs.
"""

from __future__ import annotations

import argparse
import time

from _machine import cpu_model  # benchmarks/ is on sys.path when run as a script
from partlearn import Pipeline
from partlearn.config import load_config
from partlearn.evaluation._base import EvalContext
from partlearn.evaluation.retrieval import _rank
from partlearn.evaluation.transfer import _few_shot, descriptors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--methods", nargs="*", default=None)
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    pipe = Pipeline(cfg, cache_dir=args.cache_dir)
    ctx = EvalContext(pipe, "/tmp")
    t, r = cfg.transfer, cfg.retrieval
    labels = pipe.novel.load("dataset").manifest.label
    base_labels = ctx.data.manifest.label[ctx.data.train]
    print(f"{cpu_model()}; {len(labels)} novel images, {t.episodes} episodes, "
          f"{t.ways}-way, {t.queries} queries, C grid {list(t.C)}")
    memo: dict = {}
    for name in args.methods or t.methods:
        x, xb = descriptors(ctx, name, memo)
        for shots in t.shots:
            w, c = time.perf_counter(), time.process_time()
            _few_shot(t, x, labels, xb, base_labels, shots)
            print(f"{name:14s} d={x.shape[1]:5d} {shots}-shot episodes (ncm + logreg, C on "
                  f"base): {time.perf_counter() - w:6.2f} s wall, "
                  f"{time.process_time() - c:6.2f} s CPU")
        w, c = time.perf_counter(), time.process_time()
        for rerank in ("none", "qe"):
            _rank(x, labels, r, rerank)
        print(f"{name:14s} retrieval (plain + qe): {time.perf_counter() - w:6.2f} s wall, "
              f"{time.process_time() - c:6.2f} s CPU")


if __name__ == "__main__":
    main()
