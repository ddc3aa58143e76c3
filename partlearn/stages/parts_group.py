"""``parts_group``: parts per group of the ``hierarchy``, by the same ``PartLearner`` and
constraints as ``parts``, groups as classes: positives a group's images, negatives the
other groups'; a group gets ``hierarchy.group_parts`` parts per class it holds."""

from __future__ import annotations

import numpy as np

from ..classify import uses
from . import parts
from ._base import Stage


def image_groups(ctx) -> np.ndarray:
    data = ctx.get("dataset")
    return ctx.get("hierarchy").class_group[data.manifest.label[data.train]]


def compute(ctx, w) -> None:
    hier = ctx.get("hierarchy")
    sizes = np.bincount(hier.class_group)
    parts.learn(ctx, w, image_groups(ctx), list(hier.group_names),
                class_n_parts=(ctx.cfg.hierarchy.group_parts * sizes).tolist())


def load(ctx, entry):
    return parts.rebuild(ctx, entry, image_groups(ctx))


def uses_hier_parts(cfg) -> bool:
    return uses(cfg, "parts[hier]")


STAGE = Stage(name="parts_group", version=1, inputs=("dataset", "features", "hierarchy"),
              fields=("parts.*", "seed", "hierarchy.group_parts"), libs=parts.STAGE.libs,
              seeded=True, compute=compute, load=load, applies=uses_hier_parts)
