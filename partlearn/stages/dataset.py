"""``dataset``: the manifest and its audit (sizes, bad images, duplicates).

Its key hashes the dataset settings and every image's path, label, split and
contents (not where the folder is, nor the files' times: the same files elsewhere,
or copied again, are the same data). Its value is the dataset after the bad-image policy: the kept images and
their sizes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _files
from .. import data as datasets
from ..cache import load_memo, save_memo
from .._validation import DataError
from ._base import Stage


@dataclass(frozen=True)
class Dataset:
    """The kept images: ``manifest`` (those images only), their ``width``/``height``,
    ``kept`` (their indices in the manifest as read) and the ``audit`` report. Where the
    manifest crops an image (a retrieval query), ``crops[i]`` is its integer box and
    ``width``/``height`` are the crop's: every stage sees the crop only."""

    manifest: datasets.Manifest
    width: np.ndarray
    height: np.ndarray
    kept: np.ndarray
    audit: dict
    crops: tuple | None = None

    @property
    def train(self) -> np.ndarray:
        return np.flatnonzero(self.manifest.split == "train")

    @property
    def test(self) -> np.ndarray:
        return np.flatnonzero(self.manifest.split == "test")

    def image(self, i: int):
        """Image ``i`` as the pipeline sees it (cropped where the manifest crops it)."""
        img = datasets.load_image(self.manifest.filepath(i))
        return img if self.crops is None or self.crops[i] is None else img.crop(self.crops[i])


def _file_hashes(root: Path, rels, memo: Path | None) -> list[str]:
    """The sha256 of every file ``root/rel`` (``"missing"`` for one that is not there,
    ``"not a file"`` for a folder),
    each remembered in ``memo`` by its size and mtime, so a file is read again only
    when either changes (DVC's state): a copy of the data, whose times differ, is
    hashed once and keeps its key."""
    file = None
    known: dict = {}
    if memo is not None:
        name = hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[:24]
        file = memo / "file_hashes" / f"{name}.json"
        known = load_memo(file, dict) or {}
    out, changed = [], False
    for rel in rels:
        try:
            st = os.stat(root / rel)
        except OSError:
            out.append("missing")
            continue
        if not stat.S_ISREG(st.st_mode):  # a folder listed as an image: the audit says it is bad
            out.append("not a file")
            continue
        stamp = [st.st_size, st.st_mtime_ns]
        seen = known.get(rel)
        if seen is None or seen[:2] != stamp:
            with open(root / rel, "rb") as f:
                known[rel], changed = stamp + [hashlib.file_digest(f, "sha256").hexdigest()], True
        out.append(known[rel][2])
    if file is not None and changed:
        save_memo(file, known)
    return out


def fingerprint(manifest, memo: Path | None = None) -> str:
    """Hash of the manifest and of every image file's contents (missing files too); the
    files' hashes are remembered in ``memo`` (``_file_hashes``)."""
    described = manifest.to_dict()
    described.pop("root")  # the same files elsewhere are the same data
    h = hashlib.sha256(json.dumps(described, sort_keys=True).encode())
    for digest in _file_hashes(Path(manifest.root), manifest.path, memo):
        h.update(f"{digest};".encode())
    return h.hexdigest()[:24]


def derive(ctx) -> dict:
    check_manifest(ctx.manifest)  # before a file is hashed: none outside data.root is read
    return {"files": fingerprint(ctx.manifest, ctx.memo)}


def check_manifest(manifest) -> None:
    """A dataset with no images, or an image path that leaves ``data.root`` once ``..`` and
    symlinks are resolved, is a ``DataError`` (before any image is opened)."""
    if len(manifest) == 0:
        raise DataError(f"the dataset at {manifest.root} lists no images; expected at least "
                        "one training image per class and test images")
    root = os.path.realpath(manifest.root)
    for rel in manifest.path:
        real = os.path.realpath(os.path.join(root, rel))
        if os.path.commonpath([root, real]) != root:
            raise DataError(f"{manifest.root}: image path {rel!r} leads outside data.root (to "
                            f"{real}); every image must be under the dataset root")


def compute(ctx, w) -> None:
    d = ctx.cfg.data
    check_manifest(ctx.manifest)
    audit = datasets.audit_dataset(ctx.manifest, min_side=d.min_side,
                                   min_train_per_class=d.min_train_per_class,
                                   n_jobs=max(1, os.cpu_count() or 1))
    manifest = datasets.clip_boxes(ctx.manifest, audit.width, audit.height)
    w.save_json("manifest", manifest.to_dict())
    w.save_json("audit", audit.report)
    w.save_array("width", audit.width)
    w.save_array("height", audit.height)
    w.save_array("bad", audit.bad)


def _audit(entry) -> datasets.Audit:
    return datasets.Audit(report=entry.json("audit"), width=entry.array("width", mmap=False),
                          height=entry.array("height", mmap=False),
                          bad=entry.array("bad", mmap=False))


def write_run_files(ctx, entry, value: Dataset | None, out: Path) -> None:
    """``audit.json``/``audit.md``: with the skipped images when the policy skipped some,
    and also when it stopped the run (``value`` None)."""
    report = value.audit if value is not None else entry.json("audit")
    _files.write_text(out / "audit.json", json.dumps(report, indent=1))
    _files.write_text(out / "audit.md", datasets.audit_markdown(report))


_CROP_TOLERANCE = 0.5  # pixels a crop box may stick out of its image (clipped)


def crop_boxes(manifest, width, height) -> tuple | None:
    """Integer ``(left, top, right, bottom)`` of every cropped image, None for the others
    (floor/ceil of the box, clipped to the image); a box outside its image is a
    ``DataError`` naming the image, the box and the image's size."""
    if manifest.crop is None:
        return None
    out = []
    for i, box in enumerate(manifest.crop):
        if np.isnan(box).all():
            out.append(None)
            continue
        x1, y1, x2, y2 = (float(v) for v in box)
        w, h = int(width[i]), int(height[i])
        if not (x1 >= -_CROP_TOLERANCE and y1 >= -_CROP_TOLERANCE and x2 <= w + _CROP_TOLERANCE
                and y2 <= h + _CROP_TOLERANCE and x2 - x1 >= 1 and y2 - y1 >= 1):
            raise DataError(f"{manifest.filepath(i)}: crop box {[x1, y1, x2, y2]} of "
                            f"{manifest.image_id[i]} is not inside its {w}x{h} px image")
        out.append((max(0, math.floor(x1)), max(0, math.floor(y1)),
                    min(w, math.ceil(x2)), min(h, math.ceil(y2))))
    return tuple(out)


def load(ctx, entry) -> Dataset:
    """Apply ``data.on_bad_image`` (``error``: a ``DataError`` naming every bad image). The
    images are where ``data.root`` says now: the key holds the files' contents and relative
    paths, not their place, so an entry computed from a copy elsewhere is this data's."""
    audit = _audit(entry)
    stored = datasets.Manifest.from_dict(entry.json("manifest"))
    manifest, kept = datasets.apply_bad_image_policy(
        dataclasses.replace(stored, root=ctx.manifest.root), audit, ctx.cfg.data.on_bad_image)
    kept = np.asarray(kept)
    width, height = audit.width[kept], audit.height[kept]
    crops = crop_boxes(manifest, width, height)
    if crops is not None:
        width, height = width.copy(), height.copy()
        for i, c in enumerate(crops):
            if c is not None:
                width[i], height[i] = c[2] - c[0], c[3] - c[1]
    return Dataset(manifest, width, height, kept, audit.report, crops)


STAGE = Stage(
    name="dataset", version=1, inputs=(),
    fields=("data.format", "data.csv", "data.classes", "data.min_side",
            "data.min_train_per_class", "data.on_bad_image"),
    libs=("pillow",), compute=compute, load=load, derive=derive,
    write_run_files=write_run_files)
