"""Choose pipeline settings by cross-validation on the training split, never the test split.

    python benchmarks/select_by_cv.py pipelines/scene15.toml \\
        --try encoding.top_k=3 --try parts.n_parts=24 --method parts
    python benchmarks/select_by_cv.py pipelines/cub200.toml --method parts \\
        --search 'features.pyramid=[];[672]' --search parts.n_parts=12,24 \\
        --search encoding.top_k=1,5 --search parts.beta_end=8,16

Runs the pipeline once with the config as it is and once per ``--try`` (each a
``--set`` override, or several joined by ``;``), every stage cached as usual, and
prints each variant's cross-validated training accuracy of ``--method`` (the
classifier stage's C search: stratified folds of the training images; with
``classifier.cv_parts``, the default, each fold held out of part learning too, see
the ``encoding_cv`` stage). ``--search KEY=V1,V2,...`` (values separated by ``,``, or
by ``;`` when a value holds commas) is a joint search instead: coordinate ascent from
the config, each key in turn set to the value of best CV with the others at their
best so far, round after round until a round changes nothing (ties keep the current
value, then the earlier one). The test accuracy is printed only with ``--show-test``,
for the record after choosing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from partlearn.config import load_config
from partlearn import Pipeline


def _values(spec: str) -> tuple[str, list[str]]:
    key, _, values = spec.partition("=")
    return key.strip(), [v.strip() for v in values.split(";" if ";" in values else ",")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("--try", dest="variants", action="append", default=[],
                    help="overrides of one variant, ';'-separated")
    ap.add_argument("--search", action="append", default=[], metavar="KEY=V1,V2,...",
                    help="a key of the joint search and its values (repeatable)")
    ap.add_argument("--rounds", type=int, default=3, help="at most this many search rounds")
    ap.add_argument("--set", action="append", default=[], help="overrides of every variant")
    ap.add_argument("--method", default="parts")
    ap.add_argument("--show-test", action="store_true")
    ap.add_argument("--out", default="runs/select")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    rows: dict[str, dict] = {}

    def evaluate(overrides: list[str]) -> float:
        name = "; ".join(overrides) or "(config)"
        if name not in rows:
            cfg = load_config(args.config, args.set + overrides)
            summary = Pipeline(cfg).run(out=Path(args.out) / f"variant{len(rows)}")
            m = summary["methods"][args.method]
            rows[name] = {"variant": name, "cv_accuracy": m["cv_accuracy"], "C": m["C"],
                          "test_top1": m["top1"]}
            shown = f"  test {100 * m['top1']:.1f}%" if args.show_test else ""
            print(f"{name:60s} CV {100 * m['cv_accuracy']:.2f}%  C={m['C']:g}{shown}",
                  flush=True)
        return rows[name]["cv_accuracy"]

    evaluate([])
    for variant in args.variants:
        evaluate([v for v in variant.split(";") if v.strip()])
    search = [_values(s) for s in args.search]
    if search:
        def value_of(overrides, key):
            section, _, field = key.partition(".")
            return getattr(getattr(load_config(args.config, args.set + overrides), section),
                           field)

        current = {key: next((v for v in values
                              if value_of([f"{key}={v}"], key) == value_of([], key)), values[0])
                   for key, values in search}

        def chosen(key=None, value=None):
            return [f"{k}={value if k == key else current[k]}" for k, _ in search]

        for r in range(args.rounds):
            changed = False
            for key, values in search:
                scores = {v: evaluate(chosen(key, v)) for v in values}
                best = max(values, key=lambda v: (scores[v], v == current[key]))
                changed |= best != current[key]
                current[key] = best
            print(f"round {r + 1}: {'; '.join(chosen())} (CV {100 * evaluate(chosen()):.2f}%)",
                  flush=True)
            if not changed:
                break
        print(f"chosen by the joint search: {'; '.join(chosen())}")
    best = max(rows.values(), key=lambda r: r["cv_accuracy"])
    print(f"best by CV: {best['variant']}")
    if args.json:
        Path(args.json).write_text(json.dumps(list(rows.values()), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
