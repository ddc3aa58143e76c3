"""Datasets: readers for four layouts -> one ``Manifest``; image loading; the audit.

Readers parse annotation files only; they never open images (``audit_dataset`` does, once per
image, and ``apply_bad_image_policy`` decides what happens to the bad ones). A malformed
annotation file raises ``DataError`` naming the file, the line, the value and what was expected.

Layouts (``read_dataset(root, format="auto")`` detects them in this order):

- ``cub``: the official CUB_200_2011 files (``images.txt``, ``image_class_labels.txt``,
  ``train_test_split.txt``, ``classes.txt``; optional ``bounding_boxes.txt`` and
  ``parts/parts.txt`` + ``parts/part_locs.txt``), possibly filtered to a subset of classes;
- ``mit67``: ``Images/<class>/<file>`` listed in ``TrainImages.txt`` / ``TestImages.txt``;
- ``revisitop``: the revisited Oxford/Paris layout for instance retrieval, ``jpg/`` plus one
  ``gnd_<dataset>.json`` (database images as ``train``, queries cropped to their box as
  ``test``; see ``_revisitop``);
- ``csv``: ``<root>/labels.csv`` with columns ``path,label,split`` (+ optional ``md5``);
- ``folders``: ``train/<class>/*`` and ``test/<class>/*``;
- ``demo`` (never detected): the dataset ``partlearn.data.demo`` generates, made in ``root`` on
  first use (``demo.ensure_demo``), then read as ``csv``.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import demo as _demo
from ._cub import read_cub
from ._manifest import Manifest
from ._readers import _abs_root, read_csv, read_folders, read_mit67
from ._revisitop import ground_truth_file, read_revisitop
from .._validation import ConfigError, DataError, check_choice, did_you_mean
from ..config import DATASET_FORMATS

logger = logging.getLogger(__name__)

_READERS = {"cub": read_cub, "mit67": read_mit67, "revisitop": read_revisitop,
            "folders": read_folders}
_MARKERS = (("cub", ("images.txt", "image_class_labels.txt")), ("mit67", ("TrainImages.txt",)))


def _detect(root: Path, csv: str) -> str | None:
    for fmt, markers in _MARKERS:
        if all((root / m).is_file() for m in markers):
            return fmt
    if ground_truth_file(root) is not None:
        return "revisitop"
    if (root / csv).is_file():
        return "csv"
    if (root / "train").is_dir() and (root / "test").is_dir():
        return "folders"
    return None


def read_dataset(root, format: str = "auto", csv: str = "labels.csv", classes=()) -> Manifest:
    """Read the dataset at ``root`` in ``format`` ("auto" detects it), keeping ``classes``.

    ``classes``: names of the classes to keep (case-insensitive, like every reader's class
    names; CUB names may omit their ``001.`` prefix, unless two classes then match), empty
    for all. Labels are re-indexed 0..C-1 in the dataset's class order.
    """
    check_choice("data.format", format, DATASET_FORMATS)
    if format == "demo":  # generated into root once, then read as a CSV dataset
        _demo.ensure_demo(root)
        return _select_classes(read_csv(root, _demo.LABELS), classes)
    root = _abs_root(root)
    if format == "auto":
        format = _detect(root, csv)
        if format is None:
            hint = ""
            for sub in sorted(p for p in root.iterdir() if p.is_dir()):
                if _detect(sub, csv):
                    hint = f"; {sub} looks like a dataset: set data.root to it"
                    break
            raise DataError(
                f"cannot tell the format of the dataset at {root}: looked for images.txt + "
                f"image_class_labels.txt (cub), TrainImages.txt (mit67), jpg/ + gnd_*.json "
                f"(revisitop), {csv} (csv), train/ and "
                f"test/ folders (folders) and found none{hint}")
        logger.info("read_dataset: %s detected as %s", root, format)
    manifest = read_csv(root, csv) if format == "csv" else _READERS[format](root)
    return _select_classes(manifest, classes)


def _select_classes(manifest: Manifest, classes) -> Manifest:
    if isinstance(classes, str):
        classes = (classes,)
    if not classes:
        return manifest
    full: dict[str, list[int]] = defaultdict(list)  # case-folded name: classes
    short: dict[str, list[int]] = defaultdict(list)  # the same without a "001." prefix
    for i, name in enumerate(manifest.classes):
        full[name.casefold()].append(i)
        short[re.sub(r"^\d+\.", "", name).casefold()].append(i)
    keep = set()
    for name in classes:
        key = str(name).strip().casefold()
        found = full.get(key) or short.get(key) or []  # a full name wins over a short one
        if len(found) > 1:  # the readers fold case, so only a prefix-less name gets here
            raise DataError(f"data.classes: {name!r} matches {len(found)} classes of the "
                            f"dataset at {manifest.root}: "
                            f"{', '.join(manifest.classes[j] for j in found)}; class names "
                            "are compared case-insensitively: give the full name")
        i = found[0] if found else None
        if i is None:
            short = [re.sub(r"^\d+\.", "", c) for c in manifest.classes]
            hint = did_you_mean(str(name), list(manifest.classes) + short)
            shown = ", ".join(manifest.classes[:30]) + (", ..." if len(manifest.classes) > 30
                                                        else "")
            raise DataError(f"data.classes: unknown class {name!r}{hint}; the dataset at "
                            f"{manifest.root} has {len(manifest.classes)} classes: {shown}")
        keep.add(i)
    keep = sorted(keep)
    sub = manifest.subset(np.isin(manifest.label, keep))
    remap = np.full(len(manifest.classes), -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    return replace(sub, classes=tuple(manifest.classes[i] for i in keep), label=remap[sub.label])


def split_classes(manifest: Manifest, novel_classes=(), n_novel: int = 0, ways: int = 1
                  ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The base and the novel classes of ``manifest`` (full names, in its class order):
    ``novel_classes`` by name (as ``data.classes`` names them), or the last ``n_novel``
    classes. Both sides need at least ``ways`` classes (a few-shot episode's); a
    ``ConfigError``/``DataError`` names what is wrong."""
    classes = tuple(manifest.classes)
    if novel_classes:
        novel = set(_select_classes(manifest, tuple(novel_classes)).classes)
        where = "transfer.novel_classes"
    else:
        novel = set(classes[len(classes) - n_novel:]) if n_novel else set()
        where = f"transfer.n_novel={n_novel}"
    base = tuple(c for c in classes if c not in novel)
    novel = tuple(c for c in classes if c in novel)
    if len(novel) < ways or len(base) < ways:
        raise ConfigError(f"{where}: {len(base)} base and {len(novel)} novel classes of the "
                          f"{len(classes)} in {manifest.root}; transfer.ways={ways} needs at "
                          f"least {ways} on each side")
    return base, novel
