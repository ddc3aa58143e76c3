"""Flat against hierarchical parts, at the same number of parts and code length.

    python benchmarks/bench_hierarchy.py pipelines/cub200.toml \\
        --hierarchy "taxonomy:pipelines/cub200_families.csv" --hierarchy cluster \\
        --random 3 [--set ...] [--cache-dir cache] [--out runs/bench_hier] [--json FILE]
        [--time-rounds K]

One pipeline run per hierarchy (``--hierarchy``: ``taxonomy:CSV``, ``cluster``,
``groups``), each with the methods ``global``, ``parts`` (flat: ``parts.n_parts`` per
class), ``parts[hier]`` (``hierarchy.group_parts`` per class of a group +
``hierarchy.class_parts`` per class, the split of ``parts.n_parts`` given by
``--split G,C``, default a third to the groups) and ``2level:parts[hier]``; and, per
hierarchy, ``--random`` runs of the control (``hierarchy.shuffle`` = 0, 1, ...: the
classes dealt at random into groups of the same sizes). Every stage is cached as
usual, so the flat parts are learnt once. Prints, per run, top-1 of each method and
the paired differences on the same test images (95% paired bootstrap interval, exact
McNemar p), the parts' fit time (flat ``parts`` against ``parts_group`` +
``parts_class``, when this run computed them), and the hierarchy evaluator's
specificity and containment. ``--time-rounds K`` then times the flat fit against the
hierarchical fits (group + class parts) in this process, alternating, K rounds each.
Settings are the pipeline file's: nothing here is chosen on the test split.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from _machine import cpu_model  # benchmarks/ is on sys.path when run as a script
from partlearn import Pipeline
from partlearn.config import load_config
from partlearn.evaluation import paired_comparison

METHODS = ["global", "parts", "parts[hier]", "2level:parts[hier]", "2level:parts"]


def _correct(out: Path, run_summary: dict) -> dict:
    """Per method, the test images it gets right (from predictions.csv)."""
    import csv

    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {m: np.array([r[m] == r["label"] for r in rows]) for m in run_summary["methods"]}


def run_one(base, overrides, out: Path, cache_dir) -> dict:
    cfg = load_config(base, overrides)
    summary = Pipeline(cfg, cache_dir=cache_dir).run(out=out)
    correct = _correct(out, summary)
    timings = summary["timings"]
    cached = {s: i["cached"] for s, i in summary["stages"].items()}
    return {"overrides": overrides, "out": str(out), "correct": correct,
            "top1": {m: summary["methods"][m]["top1"] for m in summary["methods"]},
            "hierarchy": summary.get("hierarchy", {}),
            "seconds": {s: (None if cached.get(s) else timings.get(s))
                        for s in ("parts", "parts_group", "parts_class", "encoding",
                                  "encoding_hier")}}


def time_fits(cfg, cache_dir, rounds: int) -> None:
    """The flat parts' fit against the group and class parts' fits, as their stages make
    them (background, negatives, part counts), alternating in one process, so that the
    shared machine's drift falls on both alike."""
    import statistics
    import time

    from partlearn.parts.hierarchy import sibling_negatives
    from partlearn.stages.parts import learner

    pipe = Pipeline(cfg, cache_dir=cache_dir)
    data, feats = pipe.load("dataset"), pipe.load(pipe.features_stage)
    cg = pipe.load("hierarchy").class_group
    train = data.train
    X, boxes, y = feats.images(train), feats.image_boxes(train), data.manifest.label[train]
    h = cfg.hierarchy

    def flat():
        learner(cfg).fit(X, y, boxes=boxes)

    def hier():
        learner(cfg).fit(X, cg[y], boxes=boxes,
                         class_n_parts=(h.group_parts * np.bincount(cg)).tolist())
        learner(cfg).fit(X, y, boxes=boxes, class_n_parts=[h.class_parts] * len(cg),
                         negatives=sibling_negatives(y, cg, cfg.parts.n_negative_images,
                                                     h.sibling_fraction, cfg.seed))
    times = {"flat": [], "hierarchical": []}
    for _ in range(rounds):
        for name, fit in (("flat", flat), ("hierarchical", hier)):
            t0 = time.perf_counter()
            fit()
            times[name].append(time.perf_counter() - t0)
            print(f"fit {name}: {times[name][-1]:.1f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nfit time, medians of {rounds}: flat {med['flat']:.1f} s, hierarchical (group + "
          f"class parts) {med['hierarchical']:.1f} s, ratio {med['hierarchical'] / med['flat']:.2f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("--hierarchy", action="append", default=[],
                    help="taxonomy:CSV, cluster or groups")
    ap.add_argument("--random", type=int, default=3, help="control runs per hierarchy")
    ap.add_argument("--split", default="", help="group_parts,class_parts (default: a third "
                                                "of parts.n_parts to the groups)")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default="runs/bench_hier")
    ap.add_argument("--json")
    ap.add_argument("--time-rounds", type=int, default=0,
                    help="then time the flat and the hierarchical fits in this process, "
                         "alternating, this many rounds each (the first hierarchy)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    base_cfg = load_config(args.config, args.set)
    n = base_cfg.parts.n_parts
    gp, cp = (map(int, args.split.split(",")) if args.split else (n // 3, n - n // 3))
    common = args.set + [f"classifier.methods={json.dumps(METHODS)}",
                         f"hierarchy.group_parts={gp}", f"hierarchy.class_parts={cp}"]
    print(f"{base_cfg.name}: flat {n} parts per class against {gp} per class of a group + "
          f"{cp} per class; {cpu_model()}", flush=True)
    runs = {}
    for spec in args.hierarchy or ["cluster"]:
        source, _, csv_path = spec.partition(":")
        h = [f"hierarchy.source={source}"] + ([f"hierarchy.taxonomy={csv_path}"] if csv_path
                                               else [])
        for shuffle in [-1] + list(range(args.random)):
            name = source + ("" if shuffle < 0 else f"-random{shuffle}")
            out = Path(args.out) / f"{base_cfg.name}-{name}"
            runs[name] = run_one(args.config, common + h + [f"hierarchy.shuffle={shuffle}"],
                                 out, args.cache_dir)
            r = runs[name]
            print(f"{name}: " + ", ".join(f"{m} {100 * a:.1f}" for m, a in r["top1"].items())
                  + f"; seconds {r['seconds']}", flush=True)
    rows = []

    def compare(a_run, a, b_run, b):
        c = paired_comparison(runs[a_run]["correct"][a], runs[b_run]["correct"][b])
        rows.append({"a": f"{a_run}:{a}", "b": f"{b_run}:{b}", "diff": c["diff"],
                     "ci95": c["ci95"], "p": c["mcnemar_p"]})

    for name in runs:
        compare(name, "parts[hier]", name, "parts")
        compare(name, "2level:parts[hier]", name, "parts[hier]")
    for spec in args.hierarchy or ["cluster"]:
        source = spec.partition(":")[0]
        for method in ("parts[hier]", "2level:parts[hier]"):
            for k in range(args.random):
                compare(source, method, f"{source}-random{k}", method)
    sources = [spec.partition(":")[0] for spec in args.hierarchy or ["cluster"]]
    for other in sources[1:]:  # e.g. a taxonomy against a hierarchy built without labels
        for method in ("parts[hier]", "2level:parts[hier]"):
            compare(sources[0], method, other, method)
    print("\n| a | b | a - b | 95% interval | McNemar p |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['a']} | {r['b']} | {100 * r['diff']:+.1f} | "
              f"[{100 * r['ci95'][0]:+.1f}, {100 * r['ci95'][1]:+.1f}] | {r['p']:.3g} |")
    print("\n| run | " + " | ".join(METHODS) + " | group top-1 (parts[hier]) | mistakes in "
          "the group: parts, parts[hier] (chance) | class entropy: class parts (flat) | "
          "contained (control) |\n|---|" + "---|" * (len(METHODS) + 4))
    for name, r in runs.items():
        lv = r["hierarchy"].get("levels", {})
        hier, flat = lv.get("parts[hier]", {}), lv.get("parts", {})
        p = r["hierarchy"].get("parts", {})
        spec = {k: v["specificity"]["class_entropy_bits"] for k, v in p.items()}
        cont = p.get("class parts", {}).get("containment", {})

        def pct(v):
            return "—" if v is None else f"{100 * v:.0f}%"
        print(f"| {name} | " + " | ".join(f"{100 * r['top1'][m]:.1f}" for m in METHODS)
              + f" | {100 * hier.get('group_top1', np.nan):.1f} | "
              f"{pct(flat.get('errors_in_group'))}, {pct(hier.get('errors_in_group'))} "
              f"({pct(hier.get('errors_in_group_chance'))}) | "
              f"{spec.get('class parts', np.nan):.2f} ({spec.get('flat parts', np.nan):.2f}) | "
              f"{pct(cont.get('contained'))} ({pct(cont.get('control'))}) |")
    if args.time_rounds:
        time_fits(load_config(args.config, runs[next(iter(runs))]["overrides"]),
                  args.cache_dir, args.time_rounds)
    fit = {name: r["seconds"] for name, r in runs.items()}
    print(f"\nfit seconds (None: cached): {json.dumps(fit)}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"runs": {k: {kk: vv for kk, vv in v.items() if kk != "correct"}
                      for k, v in runs.items()}, "comparisons": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
