"""Peak memory of every stage as the data grows: the demo generator at 1x, 4x, 16x the images.

Each stage is computed in a fresh process of its own, its inputs already cached (the
pipeline run ``--until`` that stage on the cache the previous processes filled), so a
process's peak resident memory (``ru_maxrss``) is that stage's (plus loading its
inputs); beside it, what the process itself holds, sampled: anonymous memory and USS
(``partlearn._memory``: resident memory counts the memory-mapped features' page cache). ``evaluate`` is a last process: every stage cached, the evaluators and the
report. ``import`` is the baseline: python + numpy + torch + partlearn, imported by every
process before it starts. The table gives the raw peaks and the peaks minus the baseline,
and the ratio largest/smallest scale.

    python benchmarks/bench_memory.py                      # 1x 4x 16x, ~20 min on 2 cores
    python benchmarks/bench_memory.py --scales 1 2 --json mem.json
    python benchmarks/bench_memory.py --set parts.n_parts=6

The dataset is ``partlearn.data.demo`` with ``DemoSpec(n_train=--train * k, n_test=--test * k,
image_size=--image-size)`` (6 classes: 90 images at 1x, 1,440 at 16x); the config is ``pipelines/demo.toml`` with every stage
switched on (PCA, the unsupervised parts, DP-Net, the retrieval pools), small (see
``OVERRIDES``), one worker (``n_jobs=1``: the peak of one thread's work, not of how
many run at once).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the package of this checkout, installed or not
    sys.path.insert(0, str(ROOT))

#: every stage on, sized so that 16x (1,440 images) runs in minutes on 2 CPU cores
OVERRIDES = [
    "n_jobs=1",
    "backbone.name=\"resnet18\"",  # random weights, to layer3: 256 channels, stride 16
    "backbone.weights=\"none\"",
    "backbone.tap=\"layer3\"",
    "features.short_side=96",
    "regions.scales=[0.25, 0.35]",  # 75 regions per image, 150 with the mirror's
    "regions.stride=0.5",
    "features.pca_max_regions=10000",  # the samples' caps bind at every scale: flat means
    "parts.background_regions=10000",  # streamed, not "below the cap"
    "retrieval.whiten_regions=10000",
    "features.device=\"cpu\"",
    "features.pca_dim=64",
    "features.pools=[\"mac\", \"rmac\"]",
    "regions.flips=true",
    "parts.n_parts=6",
    "classifier.methods=[\"global\", \"parts\", \"parts+global\", \"parts[unsup]\"]",
    "classifier.C=[0.1, 1.0, 10.0]",
    "classifier.extend=0",
    "classifier.cv_folds=3",
    "classifier.n_bootstrap=1000",
    "dpnet.variants=[\"wo\"]",
    "dpnet.seeds=[0]",
    "dpnet.epochs=2",
    "dpnet.refit=false",
    "dpnet.device=\"cpu\"",
    "encoding.device=\"cpu\"",
]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _own_mb() -> tuple[float, float]:
    """This process's own memory now, in MB: anonymous (not the file pages of memory maps,
    which the kernel shares and drops under pressure) and unique (USS: pages no other
    process maps), from ``/proc/self/smaps_rollup`` (``partlearn._memory``, the figures
    of results.json's ``memory``)."""
    from partlearn._memory import snapshot

    now = snapshot()
    return now["anon_mb"] or 0.0, now["uss_mb"] or 0.0


class _AnonPeak(threading.Thread):
    """The peaks of ``_own_mb`` over the process's life, sampled every ``period`` s."""

    def __init__(self, period: float = 0.005):
        super().__init__(daemon=True)
        self.period = period
        self.peak, self.uss = _own_mb()

    def sample(self):
        anon, uss = _own_mb()
        self.peak, self.uss = max(self.peak, anon), max(self.uss, uss)

    def run(self):
        while True:
            self.sample()
            time.sleep(self.period)


def worker(args) -> None:
    """One process: the imports, then (unless ``--stage import``) the run until a stage."""
    sampler = _AnonPeak()
    sampler.start()
    import numpy  # noqa: F401
    import torch  # noqa: F401

    import partlearn  # noqa: F401
    from partlearn.config import load_config
    from partlearn.runner import Pipeline

    base, base_anon, base_uss = _rss_mb(), sampler.peak, sampler.uss
    t0 = time.perf_counter()
    if args.stage != "import":
        cfg = load_config(args.config, args.set)
        pipe = Pipeline(cfg, cache_dir=args.cache)
        until = pipe.stages[-1] if args.stage == "evaluate" else args.stage
        summary = pipe.run(until=until, out=args.out, report=args.stage == "evaluate")
        if args.stage != "evaluate" and summary["stages"][until]["cached"]:
            raise SystemExit(f"{until} was cached already: not a measurement of it")
    sampler.sample()
    print(json.dumps({"peak_mb": _rss_mb(), "anon_mb": sampler.peak, "uss_mb": sampler.uss,
                      "import_mb": base, "import_anon_mb": base_anon,
                      "import_uss_mb": base_uss, "seconds": time.perf_counter() - t0}))


def measure(stage, config, sets, cache, out) -> dict:
    cmd = [sys.executable, __file__, "--worker", stage, "--config", config, "--cache", cache,
           "--out", out, *[x for s in sets for x in ("--set", s)]]
    p = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    return json.loads(p.stdout.strip().splitlines()[-1])


def dataset(work: Path, scale: int, args) -> Path:
    from partlearn.data.demo import DemoSpec, ensure_demo

    n_train, n_test = args.train * scale, args.test * scale
    root = work / f"data-{n_train}-{n_test}-{args.image_size}px"
    ensure_demo(root, spec=DemoSpec(n_train=n_train, n_test=n_test,
                                    image_size=args.image_size))
    return root


def table(rows: dict, scales, base: float, metric: str = "peak_mb") -> str:
    lo, hi = scales[0], scales[-1]
    head = ([f"{s}x MB" for s in scales] + [f"{hi}x/{lo}x"]
            + [f"{s}x −base" for s in scales] + [f"{hi}x/{lo}x −base"])
    lines = ["| stage | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for stage, by in rows.items():
        raw = [by[s][metric] for s in scales]
        own = [r - base for r in raw]
        ratio = f"{raw[-1] / raw[0]:.2f}"
        ratio_own = f"{own[-1] / own[0]:.2f}" if own[0] > 1 else "—"
        lines.append(f"| {stage} | " + " | ".join(
            [f"{r:.0f}" for r in raw] + [ratio] + [f"{o:.0f}" for o in own] + [ratio_own])
            + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--train", type=int, default=10, help="training images per class at 1x")
    p.add_argument("--test", type=int, default=5, help="test images per class at 1x")
    p.add_argument("--config", default=str(ROOT / "pipelines" / "demo.toml"))
    p.add_argument("--set", action="append", default=[], help="more config overrides")
    p.add_argument("--work", default="/tmp/partlearn-bench-memory",
                   help="datasets and caches (kept: a rerun reuses the datasets)")
    p.add_argument("--json", help="write the figures here too")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.stage = args.worker
        return worker(args)
    work = Path(args.work)
    base = measure("import", args.config, [], "", "")
    print(f"import baseline (python + numpy + torch + partlearn): {base['peak_mb']:.0f} MB, "
          f"anonymous {base['anon_mb']:.0f} MB", flush=True)
    rows: dict = {}
    for scale in args.scales:
        root = dataset(work, scale, args)
        sets = OVERRIDES + [f"data.root=\"{root}\"", "data.format=\"csv\"",
                            f"name=\"mem{scale}x\""] + args.set
        cache = work / f"cache-{scale}x"
        if cache.exists():  # every stage computed afresh
            import shutil

            shutil.rmtree(cache)
        from partlearn.config import load_config
        from partlearn.runner import Pipeline

        stages = Pipeline(load_config(args.config, sets), cache_dir=cache).stages
        for stage in (*stages, "evaluate"):
            r = measure(stage, args.config, sets, str(cache), str(work / f"run-{scale}x"))
            rows.setdefault(stage, {})[scale] = r
            print(f"{scale:3d}x {stage:15s} peak {r['peak_mb']:7.0f} MB  anon "
                  f"{r['anon_mb']:7.0f} MB  USS {r['uss_mb']:7.0f} MB  {r['seconds']:7.1f} s",
                  flush=True)
    print(f"\nimages per scale: "
          + ", ".join(f"{s}x {(args.train + args.test) * s * 6}" for s in args.scales))
    print(f"\npeak RSS (ru_maxrss: anonymous + the file pages of memory maps); "
          f"import baseline {base['peak_mb']:.0f} MB\n")
    print(table(rows, args.scales, base["peak_mb"]))
    print(f"\npeak anonymous memory (the process's own: smaps_rollup's Anonymous, sampled "
          f"every 5 ms, without the memory maps' file pages); import baseline "
          f"{base['anon_mb']:.0f} MB\n")
    print(table(rows, args.scales, base["anon_mb"], "anon_mb"))
    print(f"\npeak unique memory (USS: Private_Clean + Private_Dirty, sampled the same way; "
          f"file pages only this process maps count too); import baseline "
          f"{base['uss_mb']:.0f} MB\n")
    print(table(rows, args.scales, base["uss_mb"], "uss_mb"))
    if args.json:
        Path(args.json).write_text(json.dumps({"baseline": base,
                                               "overrides": OVERRIDES + args.set,
                                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
