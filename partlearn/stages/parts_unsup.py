"""``parts_unsup``: parts per unsupervised group (``groups``), by the same
``PartLearner`` and constraints as the per-class ``parts``, groups as pseudo-classes
(negatives from the other groups). No label is read."""

from __future__ import annotations

from . import parts
from ._base import Stage
from ..classify import uses


def names(group) -> list[str]:
    return [f"group{k:02d}" for k in range(int(group.max()) + 1)]


def compute(ctx, w) -> None:
    group = ctx.get("groups")
    parts.learn(ctx, w, group, names(group))


def load(ctx, entry):
    return parts.rebuild(ctx, entry, ctx.get("groups"))


STAGE = Stage(name="parts_unsup", version=1, inputs=("dataset", "features", "groups"),
              fields=("parts.*", "seed"), libs=parts.STAGE.libs, seeded=True, compute=compute, load=load,
              applies=lambda cfg: uses(cfg, "parts[unsup]"))
