"""``parts_class``: parts per class under the ``hierarchy``: ``hierarchy.class_parts``
per class, learnt against negatives drawn mostly (``hierarchy.sibling_fraction``) from
its siblings, the other classes of its group (``hierarchy.sibling_negatives``): the
fine distinctions that the group parts do not make."""

from __future__ import annotations

from ..hierarchy import sibling_negatives
from . import parts
from ._base import Stage
from .parts_group import uses_hier_parts


def compute(ctx, w) -> None:
    data = ctx.get("dataset")
    m, c = data.manifest, ctx.cfg.hierarchy
    y = m.label[data.train]
    negatives = sibling_negatives(y, ctx.get("hierarchy").class_group,
                                  ctx.cfg.parts.n_negative_images, c.sibling_fraction,
                                  ctx.cfg.seed)
    parts.learn(ctx, w, y, list(m.classes), negatives=negatives,
                class_n_parts=[c.class_parts] * len(m.classes))


def load(ctx, entry):
    data = ctx.get("dataset")
    return parts.rebuild(ctx, entry, data.manifest.label[data.train])


STAGE = Stage(name="parts_class", version=1, inputs=("dataset", "features", "hierarchy"),
              fields=("parts.*", "seed", "hierarchy.class_parts", "hierarchy.sibling_fraction"),
              libs=parts.STAGE.libs, compute=compute, load=load, applies=uses_hier_parts)
