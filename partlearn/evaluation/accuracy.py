"""Test accuracy of every method, paired comparisons, and ``predictions.csv``.

Every method reports its top-1 and mean class accuracy as the mean over its seeds (the
run's ``seeds`` for the SVM methods, ``dpnet.seeds`` for DP-Net) with their ``_std``,
``_min``, ``_max`` and ``_per_seed``; ``seeds`` lists them. Paired comparisons use every
seed (``paired_comparison_seeds``; exact McNemar when both methods have one). Per-class
figures, the SVMs' C and CV accuracy are those of the first seed (``per_class_seed``);
``C_per_seed`` and ``cv_accuracy_per_seed`` beside them. ``predictions.csv``: one
column per method, its first seed's predictions, then ``method@seed=S`` for each
further seed. The p-values of the comparison table are also given Holm-corrected
(``p_holm``).
"""

from __future__ import annotations

import csv

import numpy as np

from .. import _files
from ..stages.dpnet import method_name
from ._base import EvalContext, Evaluator
from ._stats import holm, metrics, paired_comparison, paired_comparison_seeds

_SVM_INFO = ("C", "C_at_edge", "cv_accuracy", "cv_folds", "cv", "dim", "train_seconds")
_FUSION_INFO = ("weight", "C_b", "C_within", "cv_group_accuracy")  # late fusion, two-level


def seed_row(y, runs, n_classes) -> dict:
    """A method's row from its test predictions per seed (``runs``: ``(seed, pred)``):
    the first seed's ``metrics``, with top-1 and mean class accuracy as the mean over
    the seeds, their std (population), min, max and per-seed values."""
    per_seed = [metrics(y, pred, n_classes) for _, pred in runs]
    row = per_seed[0] | {"seeds": [seed for seed, _ in runs], "per_class_seed": runs[0][0]}
    for k in ("top1", "mean_class_accuracy"):
        values = [r[k] for r in per_seed]
        row |= {k: float(np.mean(values)), f"{k}_std": float(np.std(values)),
                f"{k}_min": float(np.min(values)), f"{k}_max": float(np.max(values)),
                f"{k}_per_seed": values}
    return row


def _dpnet_row(y, runs, n_classes) -> dict:
    return seed_row(y, [(seed, a["test_pred"]) for seed, a in runs], n_classes) | {
        "val_accuracy": float(np.mean([a["val_accuracy"] for _, a in runs])),
        "train_seconds": float(np.mean([a["train_seconds"] for _, a in runs])),
        "dim": int(runs[0][1]["U"].shape[0])}


def _svm_row(y, runs, n_classes) -> dict:
    """``runs``: ``(seed, saved model)`` of one SVM method."""
    info = runs[0][1]["info"]
    row = seed_row(y, [(seed, model["test_pred"]) for seed, model in runs], n_classes) | {
        k: info[k] for k in _SVM_INFO + _FUSION_INFO if k in info}
    if len(runs) > 1:
        for k in ("C", "cv_accuracy"):
            if k in info:
                row[f"{k}_per_seed"] = [model["info"][k] for _, model in runs]
    return row


def run(ctx: EvalContext) -> dict:
    m = ctx.data.manifest
    test = ctx.test
    y = m.label[test]
    methods, preds = {}, {}  # preds: (seed, test predictions) per method
    classifiers = [(seed, ctx.load(name)) for seed, name in ctx.pipe.per_seed("classifier")]
    for method in classifiers[0][1].models:
        runs = [(seed, c.models[method]) for seed, c in classifiers]
        methods[method] = _svm_row(y, runs, len(m.classes))
        preds[method] = [(seed, model["test_pred"]) for seed, model in runs]
    for variant, runs in ctx.dpnet_runs().items():
        name = method_name(variant)
        methods[name] = _dpnet_row(y, runs, len(m.classes))
        preds[name] = [(seed, a["test_pred"]) for seed, a in runs]
    correct = {n: np.stack([p == y for _, p in runs]) for n, runs in preds.items()}
    names = list(methods)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[:i]
             if not (a.startswith("dpnet") and b.startswith("dpnet")) or b == "dpnet"]
    k = ctx.cfg.classifier
    comparisons = []
    for a, b in pairs:
        if len(correct[a]) == len(correct[b]) == 1:
            c = paired_comparison(correct[a][0], correct[b][0], k.n_bootstrap, ctx.cfg.seed)
            c |= {"p": c["mcnemar_p"], "test": "exact McNemar"}
        else:
            c = paired_comparison_seeds(correct[a], correct[b], k.n_bootstrap, ctx.cfg.seed)
        comparisons.append({"a": a, "b": b} | c)
    for c, p in zip(comparisons, holm([c["p"] for c in comparisons])):
        c["p_holm"] = p
    columns = [(n, preds[n][0][1]) for n in names] + [
        (f"{n}@seed={seed}", p) for n in names for seed, p in preds[n][1:]]
    write_predictions(ctx.out / "predictions.csv", [m.path[i] for i in test],
                      [m.classes[c] for c in y],
                      {name: [m.classes[c] for c in p] for name, p in columns})
    return {"classes": list(m.classes), "methods": methods, "comparisons": comparisons}


def write_predictions(file, paths: list, labels: list, predicted: dict) -> None:
    """``predictions.csv``: ``path,label,METHOD...``, one row per test image, as CSV (a
    comma or quote in a path or class name is quoted, UTF-8), written atomically."""
    with _files.replacing(file) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["path", "label", *predicted])
        out.writerows(zip(paths, labels, *predicted.values()))


EVALUATOR = Evaluator(name="accuracy", needs=("classifier",), run=run)
