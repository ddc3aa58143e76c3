"""The dataset audit behind ``datasets``: decode every image once, report what is wrong.

``audit_dataset`` opens every image of a ``Manifest`` (threads) and reports bad,
converted, EXIF-rotated and byte-identical images and classes with few training images;
``apply_bad_image_policy`` decides what happens to the bad ones; ``audit_markdown``
renders the report. Import them from ``partlearn.data``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from joblib import Parallel, delayed

from ._images import BadImageError, ImageInfo, probe_image
from ._manifest import SPLITS, Manifest
from .._progress import progress
from .._validation import DataError, check_choice
from ..config import BAD_IMAGE_POLICIES, DataConfig

# the public module's name, as before the split: what callers filter and capture on
logger = logging.getLogger(__name__)


@dataclass
class Audit:
    """The audit of a manifest: ``report`` (JSON-able) and per-image arrays aligned with it."""

    report: dict
    width: np.ndarray  # (N,) int64, after EXIF transpose; 0 for bad images
    height: np.ndarray  # (N,) int64
    bad: np.ndarray  # (N,) bool
    reason: list = field(default_factory=list, repr=False)  # (N,) str, "" for good images


def _probe_chunk(paths: list[str]):
    out = []
    for p in paths:
        try:
            out.append(probe_image(p))
        except BadImageError as e:
            out.append(e.reason)
    return out


def _probe_all(paths: list[str], n_jobs: int) -> list:
    """``probe_image`` of every path (an ``ImageInfo``, or the reason it is bad), in order."""
    n = len(paths)
    chunk = 32
    results: list = []
    with progress(total=n, desc="audit images", unit="img") as bar:
        jobs = (delayed(_probe_chunk)(paths[i:i + chunk]) for i in range(0, n, chunk))
        for out in Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")(jobs):
            results.extend(out)
            bar.update(len(out))
    return results


def audit_dataset(manifest: Manifest, *, min_side: int = DataConfig.min_side,
                  min_train_per_class: int = DataConfig.min_train_per_class,
                  n_jobs: int = 1) -> Audit:
    """Decode every image once (threads), then report bad, converted, rotated, duplicate images.

    An image is bad when it cannot be read or decoded, is smaller than ``min_side`` on its
    short side, or disagrees with the md5 the manifest gives. Nothing is dropped here:
    ``apply_bad_image_policy`` does that.
    """
    n = len(manifest)
    results = _probe_all([manifest.filepath(i) for i in range(n)], n_jobs)
    images = _check_images(manifest, results, min_side)
    is_bad = np.asarray([bool(r) for r in images["reason"]], dtype=bool)

    classes, label, split = manifest.classes, manifest.label, manifest.split
    counts = {c: {"train": 0, "test": 0} for c in classes}
    for c, s in zip(label.tolist(), split.tolist()):
        counts[classes[c]][s] += 1
    good_train = np.bincount(label[(split == "train") & ~is_bad], minlength=len(classes))
    few = [{"class": classes[c], "n_train": int(good_train[c])} for c in range(len(classes))
           if good_train[c] < min_train_per_class]
    groups, across, conflicting, within = _duplicates(manifest, images["md5"], is_bad)

    report = {
        "root": manifest.root,
        "n_images": n,
        "n_classes": len(classes),
        "n_train": int((split == "train").sum()),
        "n_test": int((split == "test").sum()),
        "min_side": min_side,
        "min_train_per_class": min_train_per_class,
        "counts": counts,
        "bad": images["bad"],
        "converted": images["converted"],
        "exif_rotated": images["rotated"],
        "duplicate_groups": groups,
        "duplicates_across_splits": across,
        "conflicting_labels": conflicting,
        "duplicates_within_split": within,
        "md5_mismatch": images["mismatch"],
        "few_train": few,
    }
    _log_audit(report)
    return Audit(report=report, width=images["width"], height=images["height"], bad=is_bad,
                 reason=images["reason"])


def _check_images(manifest: Manifest, results: list, min_side: int) -> dict:
    """Per image (``width``, ``height``: 0 for bad ones; ``reason``: "" for good ones;
    ``md5``) and the report's lists ``bad``, ``converted``, ``rotated``, ``mismatch``."""
    n = len(manifest)
    width = np.zeros(n, dtype=np.int64)
    height = np.zeros(n, dtype=np.int64)
    reason = [""] * n
    md5 = [""] * n
    bad, converted, rotated, mismatch = [], [], [], []
    for i, r in enumerate(results):
        rel = manifest.path[i]
        if isinstance(r, ImageInfo):
            md5[i] = r.md5
            expected = manifest.md5[i] if manifest.md5 else ""
            if expected and expected != r.md5:
                mismatch.append({"path": rel, "expected": expected, "actual": r.md5})
                reason[i] = f"md5 mismatch: the file's md5 is {r.md5}, the manifest says {expected}"
            elif min(r.width, r.height) < min_side:
                reason[i] = (f"{r.width}x{r.height} px is smaller than data.min_side={min_side}")
            else:
                width[i], height[i] = r.width, r.height
                if r.converted:
                    converted.append({"path": rel, "from_mode": r.mode})
                if r.rotated:
                    rotated.append(rel)
        else:
            reason[i] = r
        if reason[i]:
            bad.append({"path": rel, "reason": reason[i]})
    return {"width": width, "height": height, "reason": reason, "md5": md5, "bad": bad,
            "converted": converted, "rotated": rotated, "mismatch": mismatch}


def _duplicates(manifest: Manifest, md5: list[str], is_bad: np.ndarray
                ) -> tuple[int, list[dict], list[dict], int]:
    """Groups of byte-identical good images: how many, those across train and test, those
    with different labels, and how many hold several copies within one split."""
    classes, label, split = manifest.classes, manifest.label, manifest.split
    groups = defaultdict(list)
    for i in range(len(manifest)):
        if not is_bad[i]:
            groups[md5[i]].append(i)
    groups = [g for g in groups.values() if len(g) > 1]
    across, conflicting, within = [], [], 0
    for g in groups:
        entry = {"md5": md5[g[0]], "paths": [manifest.path[i] for i in g],
                 "splits": [str(split[i]) for i in g], "labels": [classes[label[i]] for i in g]}
        if len(set(entry["splits"])) > 1:
            across.append(entry)
        if len(set(entry["labels"])) > 1:
            conflicting.append({k: entry[k] for k in ("md5", "paths", "labels")})
        if max(entry["splits"].count(s) for s in SPLITS) > 1:
            within += 1
    return len(groups), across, conflicting, within


def _log_audit(report: dict) -> None:
    """The audit's summary (info) and its warnings: leaks across splits, conflicting labels,
    classes with few good training images."""
    across, conflicting, few = (report["duplicates_across_splits"], report["conflicting_labels"],
                                report["few_train"])
    logger.info("audit of %s: %d images, %d bad, %d converted, %d EXIF-rotated, %d groups of "
                "byte-identical images", report["root"], report["n_images"], len(report["bad"]),
                len(report["converted"]), len(report["exif_rotated"]),
                report["duplicate_groups"])
    if across:
        logger.warning("audit: %d groups of byte-identical images are in both train and test: %s",
                       len(across), "; ".join(", ".join(e["paths"]) for e in across))
    if conflicting:
        logger.warning("audit: %d groups of byte-identical images have different labels: %s",
                       len(conflicting), "; ".join(
                           ", ".join(f"{p} ({lab})" for p, lab in zip(e["paths"], e["labels"]))
                           for e in conflicting))
    if few:
        logger.warning("audit: %d classes have fewer than data.min_train_per_class=%d good "
                       "training images: %s", len(few), report["min_train_per_class"],
                       ", ".join(f"{e['class']} ({e['n_train']})" for e in few))


def apply_bad_image_policy(manifest: Manifest, audit: Audit, policy: str
                           ) -> tuple[Manifest, np.ndarray]:
    """``"error"``: raise ``DataError`` naming every bad image; ``"skip"``: drop them, loudly.

    Returns ``(kept manifest, kept index into manifest)``; ``skip`` adds ``skipped`` (and
    ``n_images_kept``) to ``audit.report``.
    """
    check_choice("data.on_bad_image", policy, BAD_IMAGE_POLICIES)
    if len(audit.bad) != len(manifest):
        raise ValueError(f"audit of {len(audit.bad)} images for a manifest of {len(manifest)}")
    bad = np.flatnonzero(audit.bad)
    if not len(bad):
        return manifest, np.arange(len(manifest))
    if audit.reason:
        entries = [{"path": manifest.path[i], "reason": audit.reason[i]} for i in bad]
    else:  # an Audit built without per-image reasons: report["bad"] is in manifest order
        entries = [dict(e) for e in audit.report["bad"]]
        if len(entries) != len(bad):
            raise ValueError(f"audit.report['bad'] lists {len(entries)} images, audit.bad "
                             f"{len(bad)}")
    listing = "; ".join(f"{e['path']} ({e['reason']})" for e in entries)
    if policy == "error":
        raise DataError(f"{len(bad)} bad image(s) in {manifest.root}: {listing}. Fix or remove "
                        f"them, or set data.on_bad_image=\"skip\" to skip them")
    kept = np.flatnonzero(~audit.bad)
    logger.warning("skipping %d bad image(s) in %s (data.on_bad_image=\"skip\"): %s",
                   len(bad), manifest.root, listing)
    audit.report["skipped"] = entries
    audit.report["n_images_kept"] = int(len(kept))
    return manifest.subset(kept), kept


def _md_cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def audit_markdown(report: dict) -> str:
    """A readable markdown version of an audit report."""
    out = [f"# Dataset audit: {report.get('root', '')}", ""]
    out += [f"- images: {report['n_images']} ({report.get('n_train', '?')} train, "
            f"{report.get('n_test', '?')} test)",
            f"- classes: {report['n_classes']}",
            f"- bad images: {len(report['bad'])}",
            f"- converted to RGB: {len(report['converted'])}",
            f"- EXIF-rotated: {len(report['exif_rotated'])}",
            f"- groups of byte-identical images: {report.get('duplicate_groups', '?')} "
            f"({len(report['duplicates_across_splits'])} across train and test, "
            f"{report['duplicates_within_split']} with copies within one split, "
            f"{len(report['conflicting_labels'])} with conflicting labels)"]
    if "skipped" in report:
        out.append(f"- skipped (data.on_bad_image=\"skip\"): {len(report['skipped'])}")
    out += ["", "## Images per class", "", "| class | train | test |", "|---|---:|---:|"]
    for name, c in report["counts"].items():
        out.append(f"| {_md_cell(name)} | {c['train']} | {c['test']} |")
    total_train = sum(c["train"] for c in report["counts"].values())
    total_test = sum(c["test"] for c in report["counts"].values())
    out.append(f"| **total** | {total_train} | {total_test} |")

    def section(title, rows, header, cells):
        out.extend(["", f"## {title} ({len(rows)})", ""])
        if not rows:
            out.append("None.")
            return
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for r in rows:
            out.append("| " + " | ".join(_md_cell(c) for c in cells(r)) + " |")

    section("Bad images", report["bad"], ["path", "reason"], lambda r: (r["path"], r["reason"]))
    if "skipped" in report:
        section("Skipped images", report["skipped"], ["path", "reason"],
                lambda r: (r["path"], r["reason"]))
    section("MD5 mismatches", report["md5_mismatch"], ["path", "expected", "actual"],
            lambda r: (r["path"], r["expected"], r["actual"]))
    section("Classes with few training images", report["few_train"],
            ["class", f"good train images (< {report.get('min_train_per_class', '?')})"],
            lambda r: (r["class"], r["n_train"]))
    section("Byte-identical images across train and test", report["duplicates_across_splits"],
            ["md5", "paths", "splits", "labels"],
            lambda r: (r["md5"], ", ".join(r["paths"]), ", ".join(r["splits"]),
                       ", ".join(r["labels"])))
    section("Byte-identical images with conflicting labels", report["conflicting_labels"],
            ["md5", "paths", "labels"],
            lambda r: (r["md5"], ", ".join(r["paths"]), ", ".join(r["labels"])))
    section("Converted to RGB", report["converted"], ["path", "from mode"],
            lambda r: (r["path"], r["from_mode"]))
    section("EXIF-rotated", report["exif_rotated"], ["path"], lambda r: (r,))
    return "\n".join(out) + "\n"


def clip_boxes(manifest: Manifest, width, height) -> Manifest:
    """The policy for annotation boxes (``manifest.bbox``, x0, y0, x1, y1) against the
    image sizes the audit found: a box that sticks out of its image is clipped to it,
    and one warning says how many were and names the first; a box left with no area
    (zero width or height, or wholly outside its image) is a ``DataError`` naming the
    image, the box and the image's size. Bad images (size 0) are left to
    ``apply_bad_image_policy``. Both ``run`` and ``datasets audit`` apply it."""
    if manifest.bbox is None or not len(manifest):
        return manifest
    width, height = np.asarray(width, np.float32), np.asarray(height, np.float32)
    box = np.asarray(manifest.bbox, np.float32)
    good = width > 0
    clipped = box.copy()
    clipped[:, [0, 2]] = np.clip(box[:, [0, 2]], 0, width[:, None])
    clipped[:, [1, 3]] = np.clip(box[:, [1, 3]], 0, height[:, None])
    clipped[~good] = box[~good]
    empty = good & ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
    if empty.any():
        i = int(np.flatnonzero(empty)[0])
        raise DataError(f"{manifest.filepath(i)}: the box {box[i].tolist()} (x0, y0, x1, y1) of "
                        f"image {manifest.image_id[i]} has no area inside its "
                        f"{int(width[i])}x{int(height[i])} px image ({int(empty.sum())} such "
                        "box(es)); fix bounding_boxes.txt or leave the image out")
    moved = np.flatnonzero((clipped != box).any(axis=1))
    if len(moved):
        i = int(moved[0])
        logger.warning("%d annotation box(es) stick out of their image and were clipped to it, "
                       "e.g. image %s: %s -> %s in %dx%d px", len(moved), manifest.image_id[i],
                       box[i].tolist(), clipped[i].tolist(), int(width[i]), int(height[i]))
        return dataclasses.replace(manifest, bbox=clipped)
    return manifest
