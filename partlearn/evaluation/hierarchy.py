"""What a hierarchy of classes changes, measured on the test images.

Per method (every SVM, and each DP-Net variant's first seed): accuracy per level (the
class, and the group of the predicted class) and how many mistakes stay inside the
right group, against the share a wrong class drawn at random from the other classes
would give. Per set of parts (the group parts, the class parts under them, and the
flat per-class parts when the run has them): ``specificity`` over each part's best
test images; and ``containment``, how often a class part's best box lies inside one
of its group parts' best boxes (against the other groups' parts: the control).
"""

from __future__ import annotations

import numpy as np

from .._arrays import indices_by_label
from ..parts import hierarchy as h
from ..explain import PartModel
from ..stages.dpnet import method_name
from ._base import EvalContext, Evaluator

TOP_K = 10  # a part's best test images, for its specificity


def levels(y, pred, class_group) -> dict:
    """Class and group accuracy of ``pred``; ``errors_in_group``: the share of its
    mistakes that keep the right group; ``errors_in_group_chance``: that share for a
    wrong class drawn uniformly from the other classes."""
    wrong = pred != y
    sizes = np.bincount(class_group)[class_group]  # each class's group size
    same = class_group[pred] == class_group[y]
    return {"class_top1": float((~wrong).mean()), "group_top1": float(same.mean()),
            "errors": int(wrong.sum()),
            "errors_in_group": float(same[wrong].mean()) if wrong.any() else None,
            "errors_in_group_chance": float(((sizes[y] - 1) / (len(class_group) - 1))[wrong]
                                            .mean()) if wrong.any() else None}


def parts_properties(ctx, class_group) -> dict:
    data, test = ctx.data, ctx.test
    y = data.manifest.label[test]
    models = {"group parts": PartModel.of_learner(ctx.load("parts_group")),
              "class parts": PartModel.of_learner(ctx.load("parts_class"))}
    if ctx.has("parts"):
        models["flat parts"] = PartModel.of_learner(ctx.load("parts"))
    best = ctx.best_regions_of(models)
    out = {}
    for name, p in models.items():
        level = "group" if name == "group parts" else "class"
        out[name] = {"specificity": h.specificity(best[name][1], y, class_group,
                                                  np.asarray(p.part_class), level, TOP_K)}
    size = np.stack([data.width[test], data.height[test]], axis=1)
    group_boxes = best["group parts"][0]
    group_part_group = np.asarray(models["group parts"].part_class)
    for name in [n for n in models if n != "group parts"]:
        part_class = np.asarray(models[name].part_class)
        per_class = np.bincount(part_class)
        if len(set(per_class)) != 1:  # a class's own parts, as one (n, Pc, 4) array
            continue
        own = np.stack(indices_by_label(part_class, len(per_class)))[y]  # (n, Pc)
        boxes = np.take_along_axis(best[name][0], own[:, :, None], axis=1)
        out[name]["containment"] = h.containment(boxes, group_boxes, class_group[y],
                                                 group_part_group, size)
    return out


def run(ctx: EvalContext) -> dict:
    hier = ctx.load("hierarchy")
    y = ctx.data.manifest.label[ctx.test]
    cg = hier.class_group
    per_method = {method: levels(y, model["test_pred"], cg)
                  for method, model in ctx.load("classifier").models.items()}
    for variant, runs in ctx.dpnet_runs().items():
        per_method[method_name(variant)] = levels(y, runs[0][1]["test_pred"], cg) | {
            "seed": runs[0][0]}
    out = {"groups": {name: [ctx.data.manifest.classes[c] for c in hier.members(g)]
                      for g, name in enumerate(hier.group_names)},
           "levels": per_method}
    if ctx.has("parts_group"):
        out["parts"] = parts_properties(ctx, cg)
    return {"hierarchy": out}


EVALUATOR = Evaluator(name="hierarchy", needs=("hierarchy", "classifier"), run=run)
