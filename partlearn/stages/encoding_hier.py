"""``encoding_hier``: every image's code by the hierarchical parts: its group-part code
and its class-part code (each as ``encoding`` makes one, training images
leave-one-out), concatenated and scaled by 1/sqrt(2), so that the code has unit norm
and each level weighs the same."""

from __future__ import annotations

import numpy as np

from . import encoding
from ._base import Stage
from .parts_group import uses_hier_parts


def compute(ctx, w) -> None:
    hier = ctx.get("hierarchy")
    group = encoding.codes_of(ctx, ctx.get("parts_group"), hier.group_names)
    fine = encoding.codes_of(ctx, ctx.get("parts_class"), ctx.get("dataset").manifest.classes)
    codes = np.concatenate([group.codes, fine.codes], axis=1) / np.float32(np.sqrt(2))
    encoding.save(w, encoding.Codes(codes.astype(np.float32), group.names + fine.names))
    w.meta.update(group_dim=group.codes.shape[1])


STAGE = Stage(name="encoding_hier", version=1,
              inputs=("dataset", "features", "hierarchy", "parts_group", "parts_class"),
              fields=encoding.STAGE.fields, libs=encoding.STAGE.libs, seeded=True, compute=compute,
              load=encoding.load, applies=uses_hier_parts)
