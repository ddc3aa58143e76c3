"""How much of the spread over part learning's seeds does float rounding alone give?

    python benchmarks/seeds_vs_rounding.py pipelines/cub200.toml --cache-dir /tmp/cub_cache \\
        --set data.root=/work/shared/data/cub200_c001-020/CUB_200_2011 \\
        --relative 1e-6 --noise 0 1 2 --out /tmp/rounding

Runs the config (one seed: ``seed``, ``seeds`` ignored) once per ``--noise`` k on region
and global features multiplied by ``1 + relative * N(0, 1)`` (float32, noise seeded by k):
another CPU's rounding of the same features, several orders of magnitude above the
float32 ulp and below float16's (which the cache stores). The features entry is the
cached one, perturbed when loaded; every stage that reads it, and those after, get keys
of their own (the features' key with the perturbation appended), so the perturbed runs
are cached beside the plain ones and never mixed with them. Prints and writes
(``OUT/rounding.json``) each method's top-1 per perturbation with their mean, std and
range, beside the plain run's; compare with the spread over ``seeds`` of a run's
``results.json``. A benchmark, not a setting: nothing in the package perturbs features.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from partlearn import Pipeline
from partlearn.config import load_config, with_values


class PerturbedPipeline(Pipeline):
    """A pipeline whose features (the stage the parts read) are perturbed when loaded."""

    def __init__(self, cfg, cache_dir, relative: float, noise: int):
        super().__init__(cfg, cache_dir)
        self.relative, self.noise = relative, noise
        self.tag = f"~perturbed:{relative:g}:{noise}"

    def inputs(self, stage: str) -> dict[str, str]:
        out = super().inputs(stage)
        if self.features_stage in out:  # the readers of the features, and so on down
            out[self.features_stage] += self.tag
        return out

    def load(self, stage: str):
        value = super().load(stage)
        if stage != self.features_stage or getattr(value, "perturbed", False):
            return value
        rng = np.random.default_rng(self.noise)

        def shake(x):
            x = np.asarray(x, np.float32)
            return x * (1 + self.relative * rng.standard_normal(x.shape, np.float32))

        value = dataclasses.replace(
            value, shards=[shake(s) for s in value.shards], global_=shake(value.global_),
            global_flip=None if value.global_flip is None else shake(value.global_flip))
        value.perturbed = True
        self._values[stage] = value
        return value


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--relative", type=float, default=1e-6)
    ap.add_argument("--noise", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    cfg = with_values(load_config(args.config, args.set), {"seeds": []})
    out = Path(args.out)
    plain = Pipeline(cfg, args.cache_dir).run(out=out / "plain")
    rows = {m: {"plain": v["top1"], "perturbed": []} for m, v in plain["methods"].items()}
    for k in args.noise:
        summary = PerturbedPipeline(cfg, args.cache_dir, args.relative, k).run(
            out=out / f"noise{k}")
        for m, v in summary["methods"].items():
            rows[m]["perturbed"].append(v["top1"])
    for m, r in rows.items():
        p = np.asarray(r["perturbed"])
        r |= {"mean": float(p.mean()), "std": float(p.std()), "min": float(p.min()),
              "max": float(p.max())}
        print(f"{m:16s} plain {100 * r['plain']:6.2f}   perturbed {100 * r['mean']:6.2f} "
              f"± {100 * r['std']:.2f} [{100 * r['min']:.2f}, {100 * r['max']:.2f}] "
              f"over {len(p)}: " + ", ".join(f"{100 * x:.2f}" for x in p))
    (out / "rounding.json").write_text(json.dumps(
        {"config": args.config, "set": args.set, "relative": args.relative,
         "noise": args.noise, "seed": cfg.seed, "methods": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
