"""Cold and warm wall time and peak memory of ``partlearn run CONFIG [--until STAGE]``.

Each run is a separate process (so peak memory is that run's own) on a fresh
cache directory; the warm run re-runs the same command on the now-full cache.

    python benchmarks/bench_pipeline.py pipelines/cub200.toml              # every stage
    python benchmarks/bench_pipeline.py pipelines/cub200.toml --until features
    python benchmarks/bench_pipeline.py pipelines/cub200.toml --keep-cache cache/cub
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_model  # benchmarks/ is on sys.path when run as a script


def run(config, until, cache, out, extra):
    cmd = [sys.executable, "-m", "partlearn", "-q", "run", config,
           *(["--until", until] if until else []), "--cache-dir", cache, "--out", out, *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    results = json.loads((Path(out) / "results.json").read_text())
    return {"wall_s": round(wall, 2), "peak_memory_mb": results["peak_memory_mb"],
            "stages": {s: {"cached": v["cached"], "seconds": results["timings"][s]}
                       for s, v in results["stages"].items()},
            "top1": {m: v["top1"] for m, v in results.get("methods", {}).items()}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--until", default="", help="the last stage (default: all)")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--json", help="write the figures here too")
    p.add_argument("--keep-cache", metavar="DIR",
                   help="fill this new, empty cache directory and keep it (default: a "
                        "temporary one), so that later runs reuse its stages")
    args = p.parse_args(argv)
    extra = [x for s in args.set for x in ("--set", s)]
    if args.keep_cache and Path(args.keep_cache).exists() and any(
            Path(args.keep_cache).iterdir()):
        p.error(f"--keep-cache {args.keep_cache} is not empty: a cold run needs an empty cache")
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.keep_cache or f"{tmp}/cache"
        cold = run(args.config, args.until, cache, f"{tmp}/cold", extra)
        warm = run(args.config, args.until, cache, f"{tmp}/warm", extra)
    report = {"config": args.config, "until": args.until, "set": args.set,
              "machine": f"{cpu_model()}, "
                         f"{__import__('os').cpu_count()} cores",
              "cold": cold, "warm": warm,
              "warm_over_cold": round(warm["wall_s"] / cold["wall_s"], 4)}
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
