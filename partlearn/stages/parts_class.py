"""``parts_class``: parts per class under the ``hierarchy``: ``hierarchy.class_parts``
per class, learnt against negatives drawn mostly (``hierarchy.sibling_fraction``) from
its siblings, the other classes of its group (``hierarchy.sibling_negatives``): the
fine distinctions that the group parts do not make. With
``hierarchy.within_group_parts``, parts of parts: every training image is seen
through the regions at a finer scale inside the best regions of its group's parts
(``hierarchy.inside_best_boxes``)."""

from __future__ import annotations

import logging

import numpy as np

from ..parts.hierarchy import inside_best_boxes, sibling_negatives
from . import parts
from ._base import Stage
from .parts_group import uses_hier_parts

logger = logging.getLogger(__name__)


def inputs(cfg) -> tuple[str, ...]:
    return ("dataset", "features", "hierarchy") + (
        ("parts_group",) if cfg.hierarchy.within_group_parts else ())


def _within_group_regions(ctx, y, class_group):
    """The training images' regions inside their group parts' best regions, and boxes."""
    data, feats, group = ctx.get("dataset"), ctx.get("features"), ctx.get("parts_group")
    X, boxes, kept = [], [], 0
    for i, c in zip(data.train, y):
        own = group.part_class_ == class_group[c]
        x, b = feats.image(int(i)), np.asarray(feats.image_boxes([int(i)])[0])
        keep = inside_best_boxes(np.asarray(x, np.float32), b, group.parts_[own],
                                 group.part_bias_[own])
        X.append(np.asarray(x[keep]))
        boxes.append(b[keep])
        kept += int(keep.sum())
    total = int(feats.offsets[data.train + 1].sum() - feats.offsets[data.train].sum())
    logger.info("parts_class: parts of parts: %d of %d training regions lie inside their "
                "group parts' best regions", kept, total)
    return X, boxes


def compute(ctx, w) -> None:
    data = ctx.get("dataset")
    m, c = data.manifest, ctx.cfg.hierarchy
    y = m.label[data.train]
    class_group = ctx.get("hierarchy").class_group
    negatives = sibling_negatives(y, class_group, ctx.cfg.parts.n_negative_images,
                                  c.sibling_fraction, ctx.cfg.seed)
    regions = _within_group_regions(ctx, y, class_group) if c.within_group_parts else None
    parts.learn(ctx, w, y, list(m.classes), regions=regions, negatives=negatives,
                class_n_parts=[c.class_parts] * len(m.classes))


def load(ctx, entry):
    data = ctx.get("dataset")
    return parts.rebuild(ctx, entry, data.manifest.label[data.train])


STAGE = Stage(name="parts_class", version=1, inputs=inputs,
              fields=("parts.*", "seed", "hierarchy.class_parts", "hierarchy.sibling_fraction",
                      "hierarchy.within_group_parts"),
              libs=parts.STAGE.libs, seeded=True, compute=compute, load=load, applies=uses_hier_parts)
