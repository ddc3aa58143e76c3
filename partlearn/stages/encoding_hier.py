"""``encoding_hier``: every image's code by the hierarchical parts: its group-part code
and its class-part code (each as ``encoding`` makes one, training images
leave-one-out), concatenated and scaled by 1/sqrt(2), so that the code has unit norm
and each level weighs the same."""

from __future__ import annotations

import numpy as np

from . import encoding
from ._base import Stage
from .parts_group import uses_hier_parts


def join(group_codes, fine_codes) -> np.ndarray:
    """The ``parts[hier]`` code: the group parts' and the class parts' codes side by side,
    scaled to unit norm (each is)."""
    codes = np.concatenate([group_codes, fine_codes], axis=1) / np.float32(np.sqrt(2))
    return codes.astype(np.float32)


def compute(ctx, w) -> None:
    hier = ctx.get("hierarchy")
    group = encoding.codes_of(ctx, ctx.get("parts_group"), hier.group_names)
    fine = encoding.codes_of(ctx, ctx.get("parts_class"), ctx.get("dataset").manifest.classes)
    encoding.save(w, encoding.Codes(join(group.codes, fine.codes), group.names + fine.names))
    w.meta.update(group_dim=group.codes.shape[1])


STAGE = Stage(name="encoding_hier", version=1,
              inputs=("dataset", "features", "hierarchy", "parts_group", "parts_class"),
              fields=encoding.STAGE.fields, libs=encoding.STAGE.libs, seeded=True, compute=compute,
              load=encoding.load, applies=uses_hier_parts)
