"""Choose pipeline settings by cross-validation on the training split, never the test split.

    python benchmarks/select_by_cv.py pipelines/scene15.toml \\
        --try encoding.top_k=3 --try parts.n_parts=24 --method parts

Runs the pipeline once with the config as it is and once per ``--try`` (each a
``--set`` override, or several joined by ``;``), every stage cached as usual,
and prints each variant's cross-validated training accuracy of ``--method``
(the classifier stage's C search: stratified folds of the training images,
whose part codes are leave-one-out, see ``encoding.leave_one_out``). The test
accuracy is printed only with ``--show-test``, for the record after choosing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from partlearn.config import load_config
from partlearn import Pipeline


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("--try", dest="variants", action="append", default=[],
                    help="overrides of one variant, ';'-separated")
    ap.add_argument("--set", action="append", default=[], help="overrides of every variant")
    ap.add_argument("--method", default="parts")
    ap.add_argument("--show-test", action="store_true")
    ap.add_argument("--out", default="runs/select")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    rows = []
    for k, variant in enumerate([""] + args.variants):
        overrides = args.set + [v for v in variant.split(";") if v.strip()]
        cfg = load_config(args.config, overrides)
        summary = Pipeline(cfg).run(out=Path(args.out) / f"variant{k}")
        m = summary["methods"][args.method]
        rows.append({"variant": variant or "(config)", "cv_accuracy": m["cv_accuracy"],
                     "C": m["C"], "test_top1": m["top1"]})
        shown = f"  test {100 * m['top1']:.1f}%" if args.show_test else ""
        print(f"{variant or '(config)':40s} CV {100 * m['cv_accuracy']:.2f}%  C={m['C']:g}{shown}",
              flush=True)
    best = max(rows, key=lambda r: r["cv_accuracy"])
    print(f"best by CV: {best['variant']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
