"""What verifying a cache costs: every entry a config's run uses (``--stages``: some of
them), hashed in full (the first verification, nothing remembered) and checked against
the remembered verification (the stat of each file only), as a fraction of a warm run.

    python benchmarks/bench_verify.py pipelines/cub200.toml --cache-dir COPY \\
        --stages features multiscale --warm-run /tmp/store_warm [--set data.root=...]

``--adopt`` first rewrites, in ``COPY`` (never the original store), every entry of an
older partlearn as the current store writes it: its old digests are checked, then
its files hashed in full and recorded. This is for measuring only (an adopted entry
is trusted on its old, sampled digests); the store itself recomputes such an entry.

"Cold" evicts the entry's files from the page cache first (``posix_fadvise``
DONTNEED, this copy's files only): the disk is read. "First" hashes files that are
in the page cache (as after a run). "Remembered" is the ``stat`` of each file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _machine import cpu_model  # benchmarks/ is on sys.path when run as a script

from partlearn import _store_check
from partlearn.cache import VERIFIED, Cache, _size, human_size


def adopt(cache: Cache, stage: str, key: str) -> str:
    """Rewrite an older entry's meta.json in the current format (see the module)."""
    path = cache.path(stage, key)
    meta = json.loads((path / "meta.json").read_text())
    if meta.get("store") == _store_check.FORMAT:
        return "current"
    for rel, rec in (meta.get("files") or {}).items():
        if _store_check.legacy_digest(path / rel, rec["bytes"]) != rec["digest"]:
            raise SystemExit(f"{path / rel}: its old digest differs; not adopted")
    meta["files"], _ = _store_check.describe(path)
    meta["store"] = _store_check.FORMAT
    meta[_store_check.META_HASH] = _store_check.meta_hash(meta)
    (path / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    return "adopted"


def evict(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def forget(cache: Cache, stage: str, key: str) -> None:
    (cache.root / stage / (key + VERIFIED)).unlink(missing_ok=True)


def timed_check(root, entries) -> float:
    cache = Cache(root)  # a fresh process's: nothing verified in memory
    t0 = time.perf_counter()
    for stage, key in entries:
        state, reason = cache.check(stage, key)
        if state != "cached":
            raise SystemExit(f"{stage}/{key}: {state} ({reason})")
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--cache-dir", required=True, help="a copy of the store (see --adopt)")
    p.add_argument("--stages", nargs="*", help="only these stages' entries")
    p.add_argument("--adopt", action="store_true")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--warm-run", help="also time `partlearn run` into this folder, twice")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config overrides, as `partlearn run --set`")
    args = p.parse_args(argv)

    from partlearn.config import load_config
    from partlearn.runner import Pipeline

    pipe = Pipeline(load_config(args.config, args.set), cache_dir=args.cache_dir)
    entries = [(s, k) for s, k in pipe.entries() if not args.stages or s in args.stages]
    cache = Cache(args.cache_dir)
    if args.adopt:
        for s, k in pipe.entries():
            print(f"{s}/{k}: {adopt(cache, s, k)}")
    size = sum(_size(cache.path(s, k)) for s, k in entries)
    n_files = sum(1 for s, k in entries for q in cache.path(s, k).rglob("*") if q.is_file())
    out = {"cpu": cpu_model(), "entries": [f"{s}/{k}" for s, k in entries],
           "bytes": size, "files": n_files, "cold_s": [], "first_s": [], "remembered_s": []}
    for _ in range(args.repeat):
        for s, k in entries:
            forget(cache, s, k)
            evict(cache.path(s, k))
        out["cold_s"].append(timed_check(args.cache_dir, entries))
        for s, k in entries:
            forget(cache, s, k)
        out["first_s"].append(timed_check(args.cache_dir, entries))
        out["remembered_s"].append(timed_check(args.cache_dir, entries))
    if args.warm_run:
        cmd = [sys.executable, "-m", "partlearn", "-q", "run", args.config,
               "--cache-dir", args.cache_dir, "--out", args.warm_run,
               *[x for kv in args.set for x in ("--set", kv)]]
        out["warm_run_s"] = []
        for _ in range(2):  # the first also redraws memos of an older format
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True)
            out["warm_run_s"].append(time.perf_counter() - t0)
            summary = json.loads((Path(args.warm_run) / "results.json").read_text())
            assert all(v["cached"] for v in summary["stages"].values()), summary["stages"]
    print(f"{len(entries)} entries, {n_files} files, {human_size(size)}")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
