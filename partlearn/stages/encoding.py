"""``encoding``: every image's part-response code, by ``partlearn.encoding.PartEncoder``
built on the fitted learner of the ``parts`` stage (``prefit``): test images by the
learnt parts, training images (with ``encoding.leave_one_out``) by their class's
parts learnt without them, as ``PartEncoder.fit_transform`` does."""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

from ..encoding import PartEncoder
from ..classify import uses
from ..encoding import ImageRegions, feature_names
from ._base import Stage

logger = logging.getLogger(__name__)


class Codes(NamedTuple):
    """``codes`` ``(N, n_cells * P)`` float32 of every kept image; ``names`` of the columns."""

    codes: np.ndarray
    names: list


def encoder(ctx, learner) -> PartEncoder:
    """The encoder of ``learner``'s parts at the encoding section's settings."""
    device = ctx.device_name(ctx.cfg.encoding.device)
    return PartEncoder.from_config(ctx.cfg.encoding, learner, prefit=True, device=device)


def image_regions(data, feats, images=None):
    """The kept images ``images`` (default: all, in order) as the encoder's
    ``ImageRegions`` (features memory-mapped): one view per image, built once; build
    the list once per stage and index it, never call this per image."""
    o = feats.offsets
    images = range(len(feats)) if images is None else images
    return [ImageRegions(feats.image(i), feats.boxes[o[i]:o[i + 1]],
                         (data.width[i], data.height[i]), feats.flips[o[i]:o[i + 1]])
            for i in images]


def codes_of(ctx, learner, class_names, leave_one_out: bool = True) -> Codes:
    """Every kept image's code by ``learner``'s parts (of ``class_names``: classes, or
    groups), training images leave-one-out unless ``leave_one_out`` is false (parts that
    no image of this dataset was learnt from)."""
    data, feats = ctx.get("dataset"), ctx.get("features")
    e = ctx.cfg.encoding
    enc = encoder(ctx, learner).fit()
    logger.info("%s: %d images x %d parts x %d cells, on %s", ctx.stage.name, len(feats),
                len(learner.parts_), sum(g * g for g in e.pyramid), enc.device)
    codes = enc.codes(image_regions(data, feats), train=data.train if leave_one_out else None)
    return Codes(codes, feature_names(learner.part_class_, e.pyramid, class_names).tolist())


def save(w, codes: Codes) -> None:
    w.save_array("codes", codes.codes)
    w.save_json("feature_names", list(codes.names))
    w.meta.update(n_images=len(codes.codes), dim=codes.codes.shape[1])


def encode_all(ctx, w, learner, class_names, leave_one_out: bool = True) -> None:
    """``codes_of``, stored."""
    save(w, codes_of(ctx, learner, class_names, leave_one_out))


def compute(ctx, w) -> None:
    foreign = bool(ctx.cfg.transfer.parts_from)  # no image of this dataset made those parts
    encode_all(ctx, w, ctx.get("parts"), ctx.parts_classes, leave_one_out=not foreign)


def derive(ctx) -> dict:
    """Another run's parts (``transfer.parts_from``) are used without leave-one-out: said
    in the key (the same parts entry may be this dataset's own)."""
    return {"parts_from": True} if ctx.cfg.transfer.parts_from else {}


def load(ctx, entry) -> Codes:
    return Codes(entry.array("codes"), entry.json("feature_names"))


# encoding.device and encoding.batch_images change no code beyond float rounding
STAGE = Stage(
    name="encoding", version=1, inputs=("dataset", "features", "parts"),
    fields=("encoding.pyramid", "encoding.top_k", "encoding.flip_average",
            "encoding.leave_one_out"),
    libs=("numpy",), seeded=True, compute=compute, load=load, derive=derive,
    applies=lambda cfg: uses(cfg, "parts"))
