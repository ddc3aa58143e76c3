"""``encoding_unsup``: every image's code by the unsupervised parts (``parts_unsup``),
as ``encoding`` does for the per-class parts."""

from __future__ import annotations

from . import encoding
from ._base import Stage
from ..classify import uses
from .parts_unsup import names


def compute(ctx, w) -> None:
    encoding.encode_all(ctx, w, ctx.get("parts_unsup"), names(ctx.get("groups")))


STAGE = Stage(name="encoding_unsup", version=1,
              inputs=("dataset", "features", "groups", "parts_unsup"),
              fields=encoding.STAGE.fields, libs=encoding.STAGE.libs, seeded=True, compute=compute,
              load=encoding.load, applies=lambda cfg: uses(cfg, "parts[unsup]"))
