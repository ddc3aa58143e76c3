"""Test accuracy of every method, paired comparisons, and ``predictions.csv``.

DP-Net variants report the mean and std over their seeds, and their paired
comparisons use every seed (``paired_comparison_seeds``); their per-class figures
and predictions are those of the first seed (``per_class_seed`` says which). The
p-values of the comparison table are also given Holm-corrected (``p_holm``).
"""

from __future__ import annotations

import numpy as np

from .. import _files
from ..stages.dpnet import method_name
from ._base import EvalContext, Evaluator
from ._stats import holm, metrics, paired_comparison, paired_comparison_seeds

_SVM_INFO = ("C", "C_at_edge", "cv_accuracy", "cv_folds", "cv", "dim", "train_seconds")
_FUSION_INFO = ("weight", "C_b", "C_within", "cv_group_accuracy")  # late fusion, two-level


def _dpnet_row(y, runs, n_classes) -> tuple[dict, np.ndarray]:
    per_seed = [metrics(y, a["test_pred"], n_classes) for _, a in runs]
    row = per_seed[0] | {
        "seeds": [seed for seed, _ in runs], "per_class_seed": runs[0][0],
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
    methods, preds, correct = {}, {}, {}  # correct: (seeds, n) per method
    for method, model in ctx.load("classifier").models.items():
        preds[method] = model["test_pred"]
        correct[method] = (model["test_pred"] == y)[None]
        methods[method] = metrics(y, model["test_pred"], len(m.classes)) | {
            k: model["info"][k] for k in _SVM_INFO + _FUSION_INFO if k in model["info"]}
    for variant, runs in ctx.dpnet_runs().items():
        name = method_name(variant)
        methods[name], preds[name] = _dpnet_row(y, runs, len(m.classes))
        correct[name] = np.stack([a["test_pred"] == y for _, a in runs])
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
    with _files.replacing(ctx.out / "predictions.csv") as tmp, open(tmp, "w", newline="") as f:
        f.write("path,label," + ",".join(names) + "\n")
        for j, i in enumerate(test):
            f.write(f"{m.path[i]},{m.classes[y[j]]},"
                    + ",".join(m.classes[preds[n][j]] for n in names) + "\n")
    return {"classes": list(m.classes), "methods": methods, "comparisons": comparisons}


EVALUATOR = Evaluator(name="accuracy", needs=("classifier",), run=run)
