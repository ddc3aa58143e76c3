"""Prediction on a finished run's own test images: images per second (decoding, features
of every short side, codes, scores: what ``partlearn predict`` does per image), and
whether every method's predictions and scores equal the run's (``predictions.csv``,
the classifier's ``test_scores``).

    python benchmarks/bench_predict.py RUN_DIR [--model MODEL_DIR] [--limit N] [--n-jobs J]

``--model``: an exported model (default: the run's model, read from its cache); the
run's cache is read for the reference scores either way.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from _machine import cpu_model  # benchmarks/ is on sys.path when run as a script

import partlearn
from partlearn.model._run import run_pipeline
from partlearn.model._model import open_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--model")
    ap.add_argument("--limit", type=int, default=0, help="the first N test images only")
    ap.add_argument("--n-jobs", type=int, default=-1)
    args = ap.parse_args()
    pipe = run_pipeline(args.run)
    rows = list(csv.DictReader((Path(args.run) / "predictions.csv").open()))
    root = Path(pipe.cfg.data.root)
    n = args.limit or len(rows)
    rows = rows[:n]
    model = partlearn.load_model(args.model or args.run, n_jobs=args.n_jobs)
    model.features_of([open_image(root / rows[0]["path"])])  # backbone built and checked
    t0 = time.perf_counter()
    pils = [open_image(root / r["path"]) for r in rows]
    t1 = time.perf_counter()
    feats = model.features_of(pils)
    t2 = time.perf_counter()
    scores = {m: model.scores_of(feats, m) for m in model.methods}
    t3 = time.perf_counter()
    print(f"{cpu_model()}, {args.run}: {n} images, decode {t1 - t0:.1f} s, features "
          f"{t2 - t1:.1f} s, codes and scores {t3 - t2:.2f} s: {n / (t3 - t0):.2f} images/s")
    clf = pipe.load("classifier")
    for method, s in scores.items():
        labels = np.asarray(model.methods[method].classes)[s.argmax(axis=1)]
        same = sum(model.classes[c] == r[method] for c, r in zip(labels, rows))
        diff = np.abs(s - clf.models[method]["test_scores"][:n]).max()
        print(f"  {method}: {same}/{n} predictions equal to predictions.csv, scores max "
              f"|difference| {diff:.3g}")


if __name__ == "__main__":
    main()
