"""The first test image explained as ``partlearn explain`` does, from the cached region
features: the heatmap of its predicted class and the top parts' boxes, for the
two-stage parts (``figures/heatmap_*.png``) and DP-Net (``figures/heatmap_dpnet_*.png``)."""

from __future__ import annotations

from pathlib import Path

from ..explain import draw_explanation
from ._base import EvalContext, Evaluator, digest, keep, restore


def heatmap(ctx: EvalContext, prefix: str, model, pred: int, class_coef) -> str:
    m = ctx.data.manifest
    i = int(ctx.test[0])
    memo = ctx.memo("heatmap", {"image": m.path[i], "pred": pred, "prefix": prefix,
                                "parts": digest(class_coef, model.weights)})
    restored = restore(memo, ctx.out)
    if restored:  # drawn once for the same image, parts and classifier
        return restored[0]
    x, boxes = ctx.load(ctx.pipe.features_stage).own(i)
    name = f"figures/{prefix}_{Path(m.path[i]).stem}.png"
    (ctx.out / "figures").mkdir(exist_ok=True)
    draw_explanation(ctx.data.image(i), boxes, model.responses(x),
                     class_coef, model.part_class, m.classes,
                     f"{Path(m.path[i]).name}: {m.classes[pred]}?", ctx.out / name)
    keep([ctx.out / name], memo, ctx.memo_needs)
    return name


def applies(ctx: EvalContext) -> str | None:
    if not ctx.part_models():
        return "the run has no part model of its classes (no 'parts' method, no DP-Net)"
    return None


def run(ctx: EvalContext) -> dict:
    figures = []
    models = ctx.part_models()
    if "parts" in models:
        svm = ctx.load("classifier").models["parts"]
        pred = int(svm["test_pred"][0])
        figures.append(heatmap(ctx, "heatmap", models["parts"], pred, svm["coef"][pred]))
    runs = ctx.dpnet_runs()
    if runs:
        variant = next(iter(runs))
        arrays = runs[variant][0][1]
        name = next(n for n in models if n.startswith("dpnet"))
        pred = int(arrays["test_pred"][0])
        figures.append(heatmap(ctx, "heatmap_dpnet", models[name], pred, arrays["V"][pred]))
    return {"figures": figures}


EVALUATOR = Evaluator(name="heatmaps", needs=("classifier",), run=run, applies=applies)
