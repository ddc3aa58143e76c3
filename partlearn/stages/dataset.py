"""``dataset``: the manifest and its audit (sizes, bad images, duplicates).

Its key hashes the dataset settings and every image's path, label, split, file
size and mtime (not where the folder is: the same files elsewhere are the same
data). Its value is the dataset after the bad-image policy: the kept images and
their sizes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import datasets
from ._base import Stage


@dataclass(frozen=True)
class Dataset:
    """The kept images: ``manifest`` (those images only), their ``width``/``height``,
    ``kept`` (their indices in the manifest as read) and the ``audit`` report."""

    manifest: datasets.Manifest
    width: np.ndarray
    height: np.ndarray
    kept: np.ndarray
    audit: dict

    @property
    def train(self) -> np.ndarray:
        return np.flatnonzero(self.manifest.split == "train")

    @property
    def test(self) -> np.ndarray:
        return np.flatnonzero(self.manifest.split == "test")


def fingerprint(manifest) -> str:
    """Hash of the manifest and of every image file's size and mtime (missing files too)."""
    described = manifest.to_dict()
    described.pop("root")  # the same files elsewhere are the same data
    h = hashlib.sha256(json.dumps(described, sort_keys=True).encode())
    root = Path(manifest.root)
    for rel in manifest.path:
        try:
            st = os.stat(root / rel)
            h.update(f"{st.st_size}:{st.st_mtime_ns};".encode())
        except OSError:
            h.update(b"missing;")
    return h.hexdigest()[:24]


def derive(ctx) -> dict:
    return {"files": fingerprint(ctx.manifest)}


def compute(ctx, w) -> None:
    d = ctx.cfg.data
    audit = datasets.audit_dataset(ctx.manifest, min_side=d.min_side,
                                   min_train_per_class=d.min_train_per_class,
                                   n_jobs=max(1, os.cpu_count() or 1))
    w.save_json("manifest", ctx.manifest.to_dict())
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
    (out / "audit.json").write_text(json.dumps(report, indent=1))
    (out / "audit.md").write_text(datasets.audit_markdown(report))


def load(ctx, entry) -> Dataset:
    """Apply ``data.on_bad_image`` (``error``: a ``DataError`` naming every bad image)."""
    audit = _audit(entry)
    manifest, kept = datasets.apply_bad_image_policy(
        datasets.Manifest.from_dict(entry.json("manifest")), audit, ctx.cfg.data.on_bad_image)
    kept = np.asarray(kept)
    return Dataset(manifest, audit.width[kept], audit.height[kept], kept, audit.report)


STAGE = Stage(
    name="dataset", version=1, inputs=(),
    fields=("data.format", "data.csv", "data.classes", "data.min_side",
            "data.min_train_per_class", "data.on_bad_image"),
    libs=("pillow",), compute=compute, load=load, derive=derive,
    write_run_files=write_run_files)
