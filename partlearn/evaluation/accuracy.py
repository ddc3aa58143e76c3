"""Test accuracy of every method, paired comparisons, and ``predictions.csv``.

DP-Net variants report the mean and std over their seeds; their per-class
figures, predictions and paired comparisons are those of the first seed.
"""

from __future__ import annotations

import numpy as np

from ..stages.dpnet import method_name
from ._base import EvalContext, Evaluator
from ._stats import metrics, paired_comparison

_SVM_INFO = ("C", "C_at_edge", "cv_accuracy", "cv_folds", "cv", "dim", "train_seconds")


def _dpnet_row(y, runs, n_classes) -> tuple[dict, np.ndarray]:
    per_seed = [metrics(y, a["test_pred"], n_classes) for _, a in runs]
    row = per_seed[0] | {
        "seeds": [seed for seed, _ in runs],
        "top1_per_seed": [r["top1"] for r in per_seed],
        "val_accuracy": float(np.mean([a["val_accuracy"] for _, a in runs])),
        "train_seconds": float(np.mean([a["train_seconds"] for _, a in runs])),
        "dim": int(runs[0][1]["U"].shape[0])}
    for k in ("top1", "mean_class_accuracy"):
        row[k] = float(np.mean([r[k] for r in per_seed]))
        row[f"{k}_std"] = float(np.std([r[k] for r in per_seed]))
    return row, runs[0][1]["test_pred"]


def run(ctx: EvalContext) -> dict:
    m = ctx.data.manifest
    test = ctx.test
    y = m.label[test]
    methods, preds = {}, {}
    for method, model in ctx.load("classifier").models.items():
        preds[method] = model["test_pred"]
        methods[method] = metrics(y, model["test_pred"], len(m.classes)) | {
            k: model["info"][k] for k in _SVM_INFO}
    for variant, runs in ctx.dpnet_runs().items():
        name = method_name(variant)
        methods[name], preds[name] = _dpnet_row(y, runs, len(m.classes))
    names = list(methods)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[:i]
             if not (a.startswith("dpnet") and b.startswith("dpnet")) or b == "dpnet"]
    comparisons = [{"a": a, "b": b} | paired_comparison(
        preds[a] == y, preds[b] == y, ctx.cfg.classifier.n_bootstrap, ctx.cfg.seed)
        for a, b in pairs]
    with open(ctx.out / "predictions.csv", "w", newline="") as f:
        f.write("path,label," + ",".join(names) + "\n")
        for j, i in enumerate(test):
            f.write(f"{m.path[i]},{m.classes[y[j]]},"
                    + ",".join(m.classes[preds[n][j]] for n in names) + "\n")
    return {"classes": list(m.classes), "methods": methods, "comparisons": comparisons}


EVALUATOR = Evaluator(name="accuracy", needs=("classifier",), run=run)
