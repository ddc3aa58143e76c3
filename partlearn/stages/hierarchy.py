"""``hierarchy``: the group of every class (``partlearn.parts.hierarchy``), from the taxonomy
file (``hierarchy.source = "taxonomy"``), or without labels beyond the classes: the
class means of the training images' global descriptors clustered (``"cluster"``), or
the unsupervised groups (``groups``) mapped to classes by majority (``"groups"``);
``hierarchy.shuffle`` >= 0 deals the classes at random into groups of the same sizes
(the control). Its value: ``Hierarchy``."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..parts import hierarchy as h
from .._arrays import indices_by_label, l2_normalize
from .._validation import DataError
from ..classify import two_level, uses
from ._base import Stage

logger = logging.getLogger(__name__)


class Hierarchy(NamedTuple):
    """``class_group`` ``(C,)`` (groups 0..G-1) and ``group_names`` ``(G,)``."""

    class_group: np.ndarray
    group_names: list

    def members(self, g: int) -> np.ndarray:
        return np.flatnonzero(self.class_group == g)


def uses_hierarchy(cfg) -> bool:
    return uses(cfg, "parts[hier]") or any(two_level(m) for m in cfg.classifier.methods)


def inputs(cfg) -> tuple[str, ...]:
    return ("dataset", "features") + (("groups",) if cfg.hierarchy.source == "groups" else ())


def _taxonomy(ctx):
    m = ctx.get("dataset").manifest
    return h.read_taxonomy(ctx.cfg.hierarchy.taxonomy, m.classes)


def derive(ctx) -> dict:
    """The taxonomy file's contents (not its path) key the hierarchy."""
    c = ctx.cfg.hierarchy
    if c.source != "taxonomy":
        return {}
    try:
        digest = hashlib.sha256(Path(c.taxonomy).read_bytes()).hexdigest()
    except OSError as e:
        raise DataError(f"hierarchy.taxonomy: cannot read {c.taxonomy} ({e.strerror})") \
            from None
    return {"taxonomy_sha256": digest}


def _check_count(ctx, class_group) -> int:
    """G, the number of groups, when 2 <= G < classes (else no hierarchy: an error)."""
    c = ctx.cfg.hierarchy
    n_groups, n_classes = int(class_group.max()) + 1, len(class_group)
    if not 2 <= n_groups < n_classes:
        hint = {"taxonomy": f" ({c.taxonomy})",
                "groups": "; the unsupervised groups map to classes one to one or all to "
                          "one: set groups.n_groups nearer the number of groups of classes "
                          "wanted"}.get(c.source, "")
        raise DataError(f"hierarchy ({c.source}): {n_groups} group(s) for {n_classes} "
                        f"classes{hint}; a hierarchy needs 2 groups or more, and fewer than "
                        "the classes")
    return n_groups


def check(ctx) -> None:
    if ctx.cfg.hierarchy.source == "taxonomy":  # before anything is computed: a class
        _check_count(ctx, _taxonomy(ctx)[0])   # missing or in two groups, or one group


def compute(ctx, w) -> None:
    c = ctx.cfg.hierarchy
    data = ctx.get("dataset")
    m = data.manifest
    y = m.label[data.train]
    if c.source == "taxonomy":
        class_group, names = _taxonomy(ctx)
    else:
        if c.source == "cluster":
            x = l2_normalize(np.asarray(ctx.get("features").global_[data.train], np.float32),
                             axis=1)
            means = np.stack([x[idx].mean(axis=0) for idx in indices_by_label(y, len(m.classes))])
            g = c.n_groups or max(2, int(round(np.sqrt(len(m.classes)))))
            class_group = h.cluster_classes(means, g)
        else:
            class_group = h.groups_to_classes(ctx.get("groups"), y, len(m.classes))
        names = [f"group{g:02d}" for g in range(int(class_group.max()) + 1)]
    n_groups = _check_count(ctx, class_group)
    if c.shuffle >= 0:
        class_group = h.shuffle_hierarchy(class_group, c.shuffle)
        names = [f"random{g:02d}" for g in range(n_groups)]
    w.save_array("class_group", class_group)
    w.save_json("group_names", list(names))
    w.meta.update(n_groups=n_groups, sizes=np.bincount(class_group).tolist())
    for g in range(n_groups):
        logger.info("hierarchy: %s: %s", names[g],
                    ", ".join(m.classes[k] for k in np.flatnonzero(class_group == g)))


def load(ctx, entry) -> Hierarchy:
    return Hierarchy(entry.array("class_group", mmap=False), entry.json("group_names"))


# hierarchy.taxonomy: its contents are keyed (derive), not its path
STAGE = Stage(name="hierarchy", version=1, inputs=inputs,
              fields=("hierarchy.source", "hierarchy.n_groups", "hierarchy.shuffle"),
              libs=("numpy", "scipy"), seeded=True, compute=compute, load=load, applies=uses_hierarchy,
              derive=derive, check=check)
