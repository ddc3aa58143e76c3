"""Whether the two-stage part constraints do what they are named for, measured (issue 31).

    python benchmarks/interpretability_constraints.py pipelines/cub200.toml \\
        [--set key=value ...] [--cache-dir C] [--setting NAME=key:value,key:value ...]
        [--baseline NAME] [--json FILE]

One ``parts`` stage per setting (learnt once, cached as usual; the features must be
cached), its parts scored on the test split by the interpretability evaluator's
``score_parts`` (consistency with the best and the peak box, purity, duplicates,
coverage; no stability: that needs ``classifier.stability_noise`` in a run), and per
score the difference of each setting against ``--baseline`` (default ``none``: no
orthogonality, no NMS) with a 95% bootstrap interval over the classes (each class's
score paired). Default settings: ``none`` (``parts.orthogonality=0``,
``parts.nms_iou=0``), ``nms`` (NMS at 0.5, the default), ``orth`` (orthogonality 0.1,
BENCHMARKS' largest tried value that keeps accuracy, NMS off) and ``orth+nms``.
DP-Net's variants are compared in a run itself (the evaluator's ``constraints`` table).
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np

from _machine import cpu_model  # benchmarks/ is on sys.path when run as a script
from partlearn import Pipeline
from partlearn.config import load_config
from partlearn.evaluation import EvalContext
from partlearn.evaluation.interpretability import (TABLE_SCORES, constraint_table,
                                                   score_parts)
from partlearn.explain import PartModel

SETTINGS = {"none": {"parts.orthogonality": 0.0, "parts.nms_iou": 0.0},
            "nms": {"parts.orthogonality": 0.0, "parts.nms_iou": 0.5},
            "orth": {"parts.orthogonality": 0.1, "parts.nms_iou": 0.0},
            "orth+nms": {"parts.orthogonality": 0.1, "parts.nms_iou": 0.5}}


def parse_setting(text: str) -> tuple[str, dict]:
    name, _, body = text.partition("=")
    values = {}
    for item in body.split(","):
        key, _, value = item.partition(":")
        values[key] = json.loads(value)
    return name, values


class _Parts(EvalContext):
    """A run's view with the parts learnt and no classifier: the dataset's test split."""

    @property
    def test(self):
        return self.load("dataset").test


def score_setting(config, overrides, values, cache_dir) -> dict:
    cfg = load_config(config, overrides + [f"{k}={json.dumps(v)}" for k, v in values.items()])
    pipe = Pipeline(cfg, cache_dir=cache_dir)
    t0 = time.perf_counter()
    pipe.ensure("parts")
    learn_s = time.perf_counter() - t0
    ctx = _Parts(pipe, ".")
    data = pipe.load("dataset")
    test = data.test
    m = data.manifest
    model = PartModel.of_learner(pipe.load("parts"))
    t0 = time.perf_counter()
    boxes, scores = ctx.best_regions_of({"parts": model})["parts"]
    feats = pipe.load(pipe.features_stage)
    sizes = np.stack([data.width[test], data.height[test]], axis=1)
    found = score_parts(boxes, scores, np.asarray(model.weights), model.part_class,
                        m.label[test], m.keypoints[test], m.keypoint_names, sizes,
                        [feats.own_boxes(i) for i in test], seed=cfg.seed)
    return found | {"parts_key": pipe.key("parts"), "parts_s": round(learn_s, 1),
                    "score_s": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--cache-dir")
    ap.add_argument("--setting", action="append", default=[])
    ap.add_argument("--baseline", default="none")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    settings = dict(map(parse_setting, args.setting)) if args.setting else SETTINGS
    results = {name: score_setting(args.config, args.overrides, values, args.cache_dir)
               for name, values in settings.items()}
    table = constraint_table(results, args.baseline)
    print(f"machine: {cpu_model()}")
    print("| setting | consistency | peak box | purity | pure parts | duplicate pairs | "
          "coverage | keypoint coverage | parts s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['consistency']:.3f} | {r['consistency_peak']:.3f} | "
              f"{r['purity']:.3f} | {r['pure_parts']} | {r['duplicates']['either']} of "
              f"{r['duplicates']['pairs']} | {r['coverage']:.3f} | "
              f"{r['keypoint_coverage']:.3f} | {r['parts_s']} |")
    print(f"\nagainst {args.baseline} (mean per-class difference, 95% bootstrap over classes)")
    scores = [s for s in TABLE_SCORES if s != "stability"]
    print("| setting | " + " | ".join(scores) + " |")
    print("|---|" + "---|" * len(scores))
    for name, row in table["rows"].items():
        print(f"| {name} | " + " | ".join(
            f"{row[s]['diff']:+.3f} [{row[s]['ci95'][0]:+.3f}, {row[s]['ci95'][1]:+.3f}]"
            for s in scores) + " |")
    out = {"settings": settings, "results": results, "table": table, "machine": cpu_model()}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
