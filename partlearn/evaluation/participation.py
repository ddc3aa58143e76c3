"""Class-level participation: how much each part weighs in each class's decision.

Two-stage parts: the ``parts`` SVM's weights of a class times the part's mean
code over the class's test images, summed over the pyramid cells. DP-Net (its
first variant's first seed): ``V`` times the class's mean bag of parts. Per
class: its top parts, whether they are its own, and ``borrowed``, the share of
its positive participation that comes from other classes' parts.
"""

from __future__ import annotations

import numpy as np

from ..encoding import part_names
from ._base import EvalContext, Evaluator


def participation_rows(share, part_class, classes, top: int = 10) -> list[dict]:
    """Per class ``c``: its ``top`` parts by ``share(c)`` ``(P,)``, whether they are its
    own, and the share of its positive participation borrowed from other classes."""
    part_class = np.asarray(part_class)
    names = part_names(part_class, classes)
    out = []
    for c, name in enumerate(classes):
        value = share(c)
        positive = np.clip(value, 0, None)
        order = np.argsort(-value, kind="stable")[:top]
        out.append({"class": name, "borrowed": float(positive[part_class != c].sum()
                                                      / max(positive.sum(), 1e-12)),
                    "parts": [names[p] for p in order],
                    "own": [bool(part_class[p] == c) for p in order],
                    "participation": [float(value[p]) for p in order]})
    return out


def applies(ctx: EvalContext) -> str | None:
    if "parts" not in ctx.part_models() and not ctx.dpnet_runs():
        return ("the run has no 'parts' SVM on its own classes' parts and no DP-Net"
                + (" (transfer.parts_from: the parts are another run's classes')"
                   if ctx.cfg.transfer.parts_from else ""))
    return None


def run(ctx: EvalContext) -> dict:
    m, test = ctx.data.manifest, ctx.test
    label = m.label[test]
    out = {}
    if "parts" in ctx.part_models():
        coef = ctx.load("classifier").models["parts"]["coef"]
        codes = ctx.load("encoding").codes
        part_class = ctx.part_models()["parts"].part_class

        def share(c):
            typical = np.asarray(codes[test[label == c]], np.float32).mean(axis=0)
            return (coef[c] * typical).reshape(-1, len(part_class)).sum(axis=0)

        out["participation"] = participation_rows(share, part_class, m.classes)
    runs = ctx.dpnet_runs()
    if runs:  # the first variant's first seed (dpnet without constraints when there)
        name = next(n for n in ctx.part_models() if n.startswith("dpnet"))
        model = ctx.part_models()[name]
        v = runs[next(iter(runs))][0][1]["V"]
        bag = ctx.best_regions()[name][1]  # (n_test, P)
        out["participation_dpnet"] = participation_rows(
            lambda c: v[c] * bag[label == c].mean(axis=0), model.part_class, m.classes)
    return out


EVALUATOR = Evaluator(name="participation", needs=("classifier",), run=run, applies=applies)
