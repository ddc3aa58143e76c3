"""Are the parts real parts? ``partlearn.localization`` on every part model's best
boxes in the test images, from the dataset's annotated keypoints (CUB)."""

from __future__ import annotations

import numpy as np

from ..localization import part_localization
from ._base import EvalContext, Evaluator


def applies(ctx: EvalContext) -> str | None:
    m = ctx.data.manifest
    if m.keypoints is None or m.bbox is None:
        return "the dataset has no keypoints and object boxes"
    if not ctx.part_models():
        return "the run has no part model (no 'parts' method, no DP-Net)"
    return None


def run(ctx: EvalContext) -> dict:
    data, test = ctx.data, ctx.test
    m = data.manifest
    sizes = np.stack([data.width[test], data.height[test]], axis=1)
    best = ctx.best_regions()
    return {"localization": {
        name: part_localization(best[name][0], p.part_class, m.label[test], m.keypoints[test],
                                m.bbox[test], sizes, m.keypoint_names, seed=ctx.cfg.seed)
        for name, p in ctx.part_models().items()}}


EVALUATOR = Evaluator(name="localization", needs=("classifier",), run=run, applies=applies)
