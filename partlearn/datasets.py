"""Datasets: readers for four layouts -> one ``Manifest``; image loading; the audit.

Readers parse annotation files only; they never open images (``audit_dataset`` does, once per
image, and ``apply_bad_image_policy`` decides what happens to the bad ones). A malformed
annotation file raises ``DataError`` naming the file, the line, the value and what was expected.

Layouts (``read_dataset(root, format="auto")`` detects them in this order):

- ``cub``: the official CUB_200_2011 files (``images.txt``, ``image_class_labels.txt``,
  ``train_test_split.txt``, ``classes.txt``; optional ``bounding_boxes.txt`` and
  ``parts/parts.txt`` + ``parts/part_locs.txt``), possibly filtered to a subset of classes;
- ``mit67``: ``Images/<class>/<file>`` listed in ``TrainImages.txt`` / ``TestImages.txt``;
- ``csv``: ``<root>/labels.csv`` with columns ``path,label,split`` (+ optional ``md5``);
- ``folders``: ``train/<class>/*`` and ``test/<class>/*``;
- ``demo`` (never detected): the dataset ``partlearn.demo`` generates, made in ``root`` on
  first use (``demo.ensure_demo``), then read as ``csv``.
"""

from __future__ import annotations

import csv as _csv
import logging
import math
import os
import posixpath
import re
from collections import defaultdict
from dataclasses import dataclass, field, fields, replace
from pathlib import Path, PurePosixPath

import numpy as np
from joblib import Parallel, delayed

from . import demo as _demo
from ._images import BadImageError, ImageInfo, load_image, probe_image
from ._progress import progress
from ._validation import DataError, check_choice, did_you_mean
from .config import BAD_IMAGE_POLICIES, DATASET_FORMATS, DataConfig

__all__ = [
    "Audit", "BadImageError", "Manifest", "apply_bad_image_policy", "audit_dataset",
    "audit_markdown", "load_image", "read_cub", "read_csv", "read_dataset", "read_folders",
    "read_mit67",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"})


# --------------------------------------------------------------------------- manifest

@dataclass(frozen=True, eq=False)
class Manifest:
    """Every image of a dataset: where it is, its label and split, optional boxes and keypoints.

    Row ``i`` is image ``i`` in every field. ``md5`` (an addition to the fields the pipeline
    reads) holds the checksums a CSV's ``md5`` column gave, ``""`` where it gave none, and is
    ``()`` when there was no such column; the audit verifies them.
    """

    root: str
    classes: tuple[str, ...]
    image_id: tuple[str, ...]
    path: tuple[str, ...]
    label: np.ndarray
    split: np.ndarray
    bbox: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    keypoint_names: tuple[str, ...] = ()
    md5: tuple[str, ...] = ()

    def __post_init__(self):
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        put("root", os.fspath(self.root))
        for name in ("classes", "image_id", "path", "keypoint_names", "md5"):
            put(name, tuple(str(v) for v in getattr(self, name)))
        n = len(self.path)
        if len(self.image_id) != n:
            raise ValueError(f"Manifest: {len(self.image_id)} image_id for {n} paths")
        if self.md5 and len(self.md5) != n:
            raise ValueError(f"Manifest: {len(self.md5)} md5 for {n} paths")
        label = np.asarray(self.label)
        if label.shape != (n,) or (n and not np.issubdtype(label.dtype, np.integer)):
            raise ValueError(f"Manifest: label should be ({n},) integers, got {label.shape} "
                             f"{label.dtype}")
        label = label.astype(np.int64)
        if n and (label.min() < 0 or label.max() >= len(self.classes)):
            raise ValueError(f"Manifest: labels {label.min()}..{label.max()} out of range for "
                             f"{len(self.classes)} classes")
        put("label", label)
        split = np.asarray(self.split, dtype=str)
        if split.shape != (n,) or not np.isin(split, SPLITS).all():
            raise ValueError(f"Manifest: split should be ({n},) of 'train'/'test', got "
                             f"{split.shape} {sorted(set(split.ravel().tolist()))[:5]}")
        put("split", split.astype("<U5"))
        if self.bbox is not None:
            bbox = np.asarray(self.bbox, dtype=np.float32).reshape(-1, 4) if n == 0 else \
                np.asarray(self.bbox, dtype=np.float32)
            if bbox.shape != (n, 4):
                raise ValueError(f"Manifest: bbox should be ({n}, 4), got {bbox.shape}")
            put("bbox", bbox)
        if self.keypoints is not None:
            kp = np.asarray(self.keypoints, dtype=np.float32)
            k = len(self.keypoint_names)
            if n == 0:
                kp = kp.reshape(0, k, 3)
            if kp.shape != (n, k, 3):
                raise ValueError(f"Manifest: keypoints should be ({n}, {k}, 3) for "
                                 f"{k} keypoint_names, got {kp.shape}")
            put("keypoints", kp)

    def __len__(self) -> int:
        return len(self.path)

    def __eq__(self, other):
        if not isinstance(other, Manifest):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if a is None or b is None or not np.array_equal(a, b):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None

    def __repr__(self):
        n_train = int((self.split == "train").sum())
        extras = [name for name in ("bbox", "keypoints") if getattr(self, name) is not None]
        return (f"Manifest({self.root!r}, {len(self)} images ({n_train} train, "
                f"{len(self) - n_train} test), {len(self.classes)} classes"
                + "".join(f", {e}" for e in extras) + ")")

    def filepath(self, i: int) -> str:
        """Absolute path of image ``i``."""
        return os.path.join(self.root, self.path[i])

    def subset(self, index) -> Manifest:
        """The rows ``index`` selects (integer indices or a boolean mask); classes unchanged."""
        index = np.asarray(index)
        if index.dtype == bool:
            if index.shape != (len(self),):
                raise ValueError(f"boolean mask of shape {index.shape} for a manifest of "
                                 f"{len(self)} images")
            index = np.flatnonzero(index)
        elif index.size == 0:
            index = np.zeros(0, dtype=np.intp)
        elif not np.issubdtype(index.dtype, np.integer):
            raise ValueError(f"index should be integers or a boolean mask, got {index.dtype}")
        index = np.atleast_1d(index).astype(np.intp)
        pick = lambda seq: tuple(seq[i] for i in index)  # noqa: E731
        return replace(
            self,
            image_id=pick(self.image_id), path=pick(self.path),
            label=self.label[index], split=self.split[index],
            bbox=None if self.bbox is None else self.bbox[index],
            keypoints=None if self.keypoints is None else self.keypoints[index],
            md5=pick(self.md5) if self.md5 else (),
        )

    def to_dict(self) -> dict:
        """JSON-able (lists and scalars); ``Manifest.from_dict(m.to_dict()) == m`` exactly."""
        return {
            "root": self.root,
            "classes": list(self.classes),
            "image_id": list(self.image_id),
            "path": list(self.path),
            "label": self.label.tolist(),
            "split": self.split.tolist(),
            "bbox": None if self.bbox is None else self.bbox.tolist(),
            "keypoints": None if self.keypoints is None else self.keypoints.tolist(),
            "keypoint_names": list(self.keypoint_names),
            "md5": list(self.md5),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Manifest:
        names = {f.name for f in fields(cls)}
        required = {"root", "classes", "image_id", "path", "label", "split"}
        missing = sorted(required - set(d))
        unknown = sorted(set(d) - names)
        if missing or unknown:
            raise DataError(f"not a Manifest dict: missing keys {missing}, unknown keys {unknown}")
        d = dict(d)
        d["label"] = np.asarray(d["label"], dtype=np.int64)
        d["split"] = np.asarray(d["split"], dtype=str)
        if d.get("bbox") is not None:
            d["bbox"] = np.asarray(d["bbox"], dtype=np.float32)
        if d.get("keypoints") is not None:
            d["keypoints"] = np.asarray(d["keypoints"], dtype=np.float32)
        return cls(**d)


# --------------------------------------------------------------------------- helpers

class _Lines:
    """Numbered non-blank lines of a whitespace-separated annotation file, and its errors."""

    def __init__(self, path: Path, columns: str):
        self.path, self.columns = path, columns  # columns: e.g. "<image_id> <class_id>"
        self.n_columns = len(columns.split())
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise DataError(f"{path} is missing; expected lines '{columns}'") from None
        except UnicodeDecodeError as e:
            raise DataError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
        self.lines = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]

    def error(self, lineno: int, message: str) -> DataError:
        return DataError(f"{self.path}, line {lineno}: {message}")

    def rows(self, rest: bool = False):
        """Yield ``(lineno, fields)``; with ``rest`` the last column takes the rest of the line."""
        n = self.n_columns
        for lineno, line in self.lines:
            parts = line.split(maxsplit=n - 1) if rest else line.split()
            if len(parts) != n:
                raise self.error(lineno, f"expected {n} columns '{self.columns}', got "
                                 f"{len(parts)}: {line.strip()!r}")
            if rest:
                parts[-1] = parts[-1].strip()
            yield lineno, parts

    def int(self, lineno: int, what: str, value: str) -> int:
        try:
            return int(value)
        except ValueError:
            raise self.error(lineno, f"{what} {value!r} is not an integer") from None

    def float(self, lineno: int, what: str, value: str) -> float:
        try:
            x = float(value)
        except ValueError:
            x = math.nan
        if not math.isfinite(x):
            raise self.error(lineno, f"{what} {value!r} is not a finite number")
        return x

    def keyed(self, what: str, parse, *, rest: bool = False) -> dict:
        """``{first column as int: parse(lineno, other columns)}``; a repeated key is an error."""
        out, seen = {}, {}
        for lineno, parts in self.rows(rest):
            key = self.int(lineno, what, parts[0])
            if key in seen:
                raise self.error(lineno, f"{what} {key} repeats line {seen[key]}")
            seen[key] = lineno
            out[key] = parse(lineno, parts[1:])
        return out


def _abs_root(root) -> Path:
    root = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    if not root.exists():
        raise DataError(f"dataset root {root} does not exist")
    if not root.is_dir():
        raise DataError(f"dataset root {root} is not a folder")
    return root


def _sort_classes(names) -> list[str]:
    """Integer-like names numerically, others alphabetically (case-insensitive, then exact)."""
    names = set(names)
    if names and all(re.fullmatch(r"[+-]?\d+", n) for n in names):
        return sorted(names, key=lambda n: (int(n), n))
    return sorted(names, key=lambda n: (n.casefold(), n))


def _check_relative(where: str, value: str) -> str:
    if not value:
        raise DataError(f"{where}: empty path")
    if value.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", value):
        raise DataError(f"{where}: path {value!r} is absolute; expected a path relative to the "
                        "dataset root")
    return PurePosixPath(value).as_posix()


# --------------------------------------------------------------------------- readers

def read_cub(root) -> Manifest:
    """The official CUB_200_2011 layout, possibly filtered to a subset of its classes.

    ``image_id`` is the official id; classes are those present, ordered by class id, labels
    re-indexed 0..C-1; ``bbox`` is x0, y0, x1, y1 (from x, y, w, h); ``keypoints`` (N, 15, 3).
    """
    root = _abs_root(root)
    images = _Lines(root / "images.txt", "<image_id> <image_name>")
    names = images.keyed(
        "image_id", lambda n, p: _check_relative(f"{images.path}, line {n}", p[0]), rest=True)
    seen_names: dict[str, int] = {}
    for lineno, parts in images.rows(rest=True):
        if parts[1] in seen_names:
            raise images.error(lineno, f"image_name {parts[1]!r} repeats line "
                               f"{seen_names[parts[1]]}")
        seen_names[parts[1]] = lineno
    ids = list(names)

    def per_image(lines: _Lines, table: dict) -> list:
        missing = [i for i in ids if i not in table]
        if missing:
            raise DataError(f"{lines.path} has no line for image_id {missing[0]} (listed in "
                            f"{images.path}, line {images.lines[ids.index(missing[0])][0]})"
                            + (f" nor for {len(missing) - 1} other images" if len(missing) > 1
                               else "") + f"; expected lines '{lines.columns}'")
        return [table[i] for i in ids]

    labels_file = _Lines(root / "image_class_labels.txt", "<image_id> <class_id>")
    labels = labels_file.keyed(
        "image_id", lambda n, p: (labels_file.int(n, "class_id", p[0]), n))
    split_file = _Lines(root / "train_test_split.txt", "<image_id> <is_training_image>")

    def parse_split(lineno, p):
        if p[0] not in ("0", "1"):
            raise split_file.error(lineno, f"is_training_image {p[0]!r} should be 0 (test) or "
                                   "1 (train)")
        return "train" if p[0] == "1" else "test"

    split = per_image(split_file, split_file.keyed("image_id", parse_split))
    classes_file = _Lines(root / "classes.txt", "<class_id> <class_name>")
    class_names = classes_file.keyed("class_id", lambda n, p: p[0], rest=True)

    class_ids = []
    for class_id, lineno in per_image(labels_file, labels):
        if class_id not in class_names:
            raise labels_file.error(lineno, f"class_id {class_id} is not in {classes_file.path}"
                                    f" (which has ids {min(class_names, default=None)}.."
                                    f"{max(class_names, default=None)})")
        class_ids.append(class_id)
    present = sorted(set(class_ids))
    index = {c: i for i, c in enumerate(present)}

    bbox = None
    if (root / "bounding_boxes.txt").exists():
        boxes = _Lines(root / "bounding_boxes.txt", "<image_id> <x> <y> <width> <height>")

        def parse_box(lineno, p):
            x, y, w, h = (boxes.float(lineno, k, v) for k, v in zip("x y width height".split(), p))
            if w < 0 or h < 0:
                raise boxes.error(lineno, f"width {w:g} and height {h:g} should be >= 0")
            return (x, y, x + w, y + h)

        bbox = np.asarray(per_image(boxes, boxes.keyed("image_id", parse_box)),
                          dtype=np.float32).reshape(-1, 4)

    keypoints, keypoint_names = None, ()
    parts_txt, locs_txt = root / "parts" / "parts.txt", root / "parts" / "part_locs.txt"
    if parts_txt.exists() or locs_txt.exists():
        parts_file = _Lines(parts_txt, "<part_id> <part_name>")
        part_names = parts_file.keyed("part_id", lambda n, p: p[0], rest=True)
        part_ids = sorted(part_names)
        keypoint_names = tuple(part_names[i] for i in part_ids)
        part_index = {p: k for k, p in enumerate(part_ids)}
        image_index = {i: n for n, i in enumerate(ids)}
        locs = _Lines(locs_txt, "<image_id> <part_id> <x> <y> <visible>")
        keypoints = np.zeros((len(ids), len(part_ids), 3), dtype=np.float32)
        filled = np.zeros(keypoints.shape[:2], dtype=np.int64)  # line number that filled it
        for lineno, p in locs.rows():
            row = image_index.get(locs.int(lineno, "image_id", p[0]))
            if row is None:
                continue  # an image filtered out of images.txt
            part = locs.int(lineno, "part_id", p[1])
            if part not in part_index:
                raise locs.error(lineno, f"part_id {part} is not in {parts_file.path}")
            k = part_index[part]
            if filled[row, k]:
                raise locs.error(lineno, f"image_id {p[0]} part_id {part} repeats line "
                                 f"{filled[row, k]}")
            x, y = locs.float(lineno, "x", p[2]), locs.float(lineno, "y", p[3])
            v = locs.float(lineno, "visible", p[4])
            if v not in (0.0, 1.0):
                raise locs.error(lineno, f"visible {p[4]!r} should be 0 or 1")
            keypoints[row, k] = (x, y, v)
            filled[row, k] = lineno
        if not filled.all():
            row, k = np.argwhere(filled == 0)[0]
            raise DataError(f"{locs.path} has no line for image_id {ids[row]} part_id "
                            f"{part_ids[k]} ({int((filled == 0).sum())} (image, part) pairs "
                            f"missing); expected lines '{locs.columns}'")

    return Manifest(
        root=str(root),
        classes=tuple(class_names[c] for c in present),
        image_id=tuple(str(i) for i in ids),
        path=tuple(posixpath.join("images", names[i]) for i in ids),
        label=np.asarray([index[c] for c in class_ids], dtype=np.int64),
        split=np.asarray(split, dtype="<U5"),
        bbox=bbox, keypoints=keypoints, keypoint_names=keypoint_names,
    )


def read_mit67(root) -> Manifest:
    """MIT Indoor-67: ``Images/<class>/<file>``, split by ``TrainImages.txt``/``TestImages.txt``."""
    root = _abs_root(root)
    rows: list[tuple[str, str, str]] = []  # (path under Images/, class, split)
    seen: dict[str, str] = {}
    for split, name in (("train", "TrainImages.txt"), ("test", "TestImages.txt")):
        lines = _Lines(root / name, "<class>/<file>")
        for lineno, line in lines.lines:
            rel = line.strip()
            parts = rel.split("/")
            if len(parts) != 2 or not all(parts):
                raise lines.error(lineno, f"{rel!r} is not of the form '<class>/<file>'")
            where = f"{name}, line {lineno}"
            if rel in seen:
                raise lines.error(lineno, f"{rel!r} is already listed in {seen[rel]}")
            seen[rel] = where
            rows.append((rel, parts[0], split))
    classes = _sort_classes(c for _, c, _ in rows)
    index = {c: i for i, c in enumerate(classes)}
    paths = tuple("Images/" + rel for rel, _, _ in rows)
    return Manifest(
        root=str(root), classes=tuple(classes), image_id=paths, path=paths,
        label=np.asarray([index[c] for _, c, _ in rows], dtype=np.int64),
        split=np.asarray([s for _, _, s in rows], dtype="<U5"),
    )


_MD5 = re.compile(r"[0-9a-f]{32}")


def read_csv(root, csv: str = "labels.csv") -> Manifest:
    """``<root>/<csv>`` with columns ``path,label,split`` (others allowed; ``md5`` is kept).

    Paths are relative to ``root``; labels are class names (classes sorted, numerically when
    all are integers); split is ``train`` or ``test``.
    """
    root = _abs_root(root)
    file = root / csv
    try:
        f = open(file, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{file} is missing; expected a CSV with columns path,label,split") \
            from None
    with f:
        reader = _csv.reader(f)
        try:
            header = [h.strip() for h in next(reader, [])]
            rows = []
            for row in reader:
                if any(v.strip() for v in row):
                    rows.append((reader.line_num, [v.strip() for v in row]))
        except (_csv.Error, UnicodeDecodeError) as e:
            raise DataError(f"{file}, line {reader.line_num}: not readable as CSV ({e})") \
                from None
    missing = [c for c in ("path", "label", "split") if c not in header]
    if missing:
        hints = "".join(did_you_mean(c, header) for c in missing)
        raise DataError(f"{file}, line 1: header {','.join(header)!r} lacks column(s) "
                        f"{', '.join(missing)}; expected columns path,label,split{hints}")
    col = {name: header.index(name) for name in ("path", "label", "split", "md5")
           if name in header}
    paths, labels, splits, md5s, seen = [], [], [], [], {}
    for lineno, row in rows:
        if len(row) != len(header):
            raise DataError(f"{file}, line {lineno}: {len(row)} fields, expected {len(header)} "
                            f"({','.join(header)})")
        path = _check_relative(f"{file}, line {lineno}", row[col["path"]])
        if path in seen:
            raise DataError(f"{file}, line {lineno}: path {path!r} is already listed on line "
                            f"{seen[path]}")
        seen[path] = lineno
        label, split = row[col["label"]], row[col["split"]]
        if not label:
            raise DataError(f"{file}, line {lineno}: empty label for {path!r}")
        if split not in SPLITS:
            raise DataError(f"{file}, line {lineno}: split {split!r} should be 'train' or "
                            f"'test'{did_you_mean(split.lower(), SPLITS)}")
        if "md5" in col:
            md5 = row[col["md5"]].lower()
            if md5 and not _MD5.fullmatch(md5):
                raise DataError(f"{file}, line {lineno}: md5 {row[col['md5']]!r} is not 32 hex "
                                "digits (leave it empty when unknown)")
            md5s.append(md5)
        paths.append(path)
        labels.append(label)
        splits.append(split)
    classes = _sort_classes(labels)
    index = {c: i for i, c in enumerate(classes)}
    return Manifest(
        root=str(root), classes=tuple(classes), image_id=tuple(paths), path=tuple(paths),
        label=np.asarray([index[c] for c in labels], dtype=np.int64),
        split=np.asarray(splits, dtype="<U5"), md5=tuple(md5s),
    )


def read_folders(root) -> Manifest:
    """``train/<class>/*`` and ``test/<class>/*``; class folders matched case-insensitively.

    Folder names that differ only in case are one class (named in lower case) and a warning
    names the spellings merged. Only files with an image extension are listed; anything else
    in the class folders (not hidden) is named in a warning.
    """
    root = _abs_root(root)
    for split in SPLITS:
        if not (root / split).is_dir():
            raise DataError(f"{root / split} is missing; the folders layout is "
                            "train/<class>/<image> and test/<class>/<image>")
    spellings: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    files: list[tuple[str, str, str]] = []  # (path, class key, split)
    ignored = []
    for split in SPLITS:
        for entry in sorted(os.scandir(root / split), key=lambda e: (e.name.casefold(), e.name)):
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                ignored.append(f"{split}/{entry.name}")
                continue
            key = entry.name.casefold()
            spellings[key][entry.name].append(split)
            for sub in sorted(os.scandir(entry.path), key=lambda e: (e.name.casefold(), e.name)):
                rel = f"{split}/{entry.name}/{sub.name}"
                if sub.name.startswith("."):
                    continue
                if sub.is_file() and os.path.splitext(sub.name)[1].lower() in IMAGE_EXTENSIONS:
                    files.append((rel, key, split))
                else:
                    ignored.append(rel + ("/" if sub.is_dir() else ""))
    if ignored:
        logger.warning("read_folders(%s): ignored %d entries that are not image files in "
                       "train/<class>/ or test/<class>/: %s", root, len(ignored),
                       ", ".join(ignored))
    names = {}  # casefolded folder name -> class name
    merged = []
    for key, spelled in spellings.items():
        if len(spelled) == 1:
            names[key] = next(iter(spelled))
        else:
            names[key] = min(spelled).lower()
            where = [f"{s}/{n}" for n, splits in sorted(spelled.items()) for s in splits]
            merged.append(f"{' + '.join(where)} -> {names[key]!r}")
    if merged:
        logger.warning("read_folders(%s): merged %d class folders whose names differ only in "
                       "case: %s", root, len(merged), "; ".join(merged))
    classes = _sort_classes(names.values())
    index = {c: i for i, c in enumerate(classes)}
    paths = tuple(p for p, _, _ in files)
    return Manifest(
        root=str(root), classes=tuple(classes), image_id=paths, path=paths,
        label=np.asarray([index[names[k]] for _, k, _ in files], dtype=np.int64),
        split=np.asarray([s for _, _, s in files], dtype="<U5"),
    )


_READERS = {"cub": read_cub, "mit67": read_mit67, "folders": read_folders}
_MARKERS = (("cub", ("images.txt", "image_class_labels.txt")), ("mit67", ("TrainImages.txt",)))


def _detect(root: Path, csv: str) -> str | None:
    for fmt, markers in _MARKERS:
        if all((root / m).is_file() for m in markers):
            return fmt
    if (root / csv).is_file():
        return "csv"
    if (root / "train").is_dir() and (root / "test").is_dir():
        return "folders"
    return None


def read_dataset(root, format: str = "auto", csv: str = "labels.csv", classes=()) -> Manifest:
    """Read the dataset at ``root`` in ``format`` ("auto" detects it), keeping ``classes``.

    ``classes``: names of the classes to keep (case-insensitive; CUB names may omit their
    ``001.`` prefix), empty for all. Labels are re-indexed 0..C-1 in the dataset's class order.
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
                f"image_class_labels.txt (cub), TrainImages.txt (mit67), {csv} (csv), train/ and "
                f"test/ folders (folders) and found none{hint}")
        logger.info("read_dataset: %s detected as %s", root, format)
    manifest = read_csv(root, csv) if format == "csv" else _READERS[format](root)
    return _select_classes(manifest, classes)


def _select_classes(manifest: Manifest, classes) -> Manifest:
    if isinstance(classes, str):
        classes = (classes,)
    if not classes:
        return manifest
    lookup: dict[str, int] = {}
    for i, name in enumerate(manifest.classes):  # exact names win over prefix-less ones
        short = re.sub(r"^\d+\.", "", name).casefold()
        lookup.setdefault(short, i)
    for i, name in enumerate(manifest.classes):
        lookup[name.casefold()] = i
    keep = set()
    for name in classes:
        i = lookup.get(str(name).strip().casefold())
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


# --------------------------------------------------------------------------- audit

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


def audit_dataset(manifest: Manifest, *, min_side: int = DataConfig.min_side,
                  min_train_per_class: int = DataConfig.min_train_per_class,
                  n_jobs: int = 1) -> Audit:
    """Decode every image once (threads), then report bad, converted, rotated, duplicate images.

    An image is bad when it cannot be read or decoded, is smaller than ``min_side`` on its
    short side, or disagrees with the md5 the manifest gives. Nothing is dropped here:
    ``apply_bad_image_policy`` does that.
    """
    n = len(manifest)
    paths = [manifest.filepath(i) for i in range(n)]
    chunk = 32
    results: list = []
    with progress(total=n, desc="audit images", unit="img") as bar:
        jobs = (delayed(_probe_chunk)(paths[i:i + chunk]) for i in range(0, n, chunk))
        for out in Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")(jobs):
            results.extend(out)
            bar.update(len(out))

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
    is_bad = np.asarray([bool(r) for r in reason], dtype=bool)

    classes, label, split = manifest.classes, manifest.label, manifest.split
    counts = {c: {"train": 0, "test": 0} for c in classes}
    for c, s in zip(label.tolist(), split.tolist()):
        counts[classes[c]][s] += 1
    good_train = np.bincount(label[(split == "train") & ~is_bad], minlength=len(classes))
    few = [{"class": classes[c], "n_train": int(good_train[c])} for c in range(len(classes))
           if good_train[c] < min_train_per_class]

    groups = defaultdict(list)  # byte-identical good images
    for i in range(n):
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

    report = {
        "root": manifest.root,
        "n_images": n,
        "n_classes": len(classes),
        "n_train": int((split == "train").sum()),
        "n_test": int((split == "test").sum()),
        "min_side": min_side,
        "min_train_per_class": min_train_per_class,
        "counts": counts,
        "bad": bad,
        "converted": converted,
        "exif_rotated": rotated,
        "duplicate_groups": len(groups),
        "duplicates_across_splits": across,
        "conflicting_labels": conflicting,
        "duplicates_within_split": within,
        "md5_mismatch": mismatch,
        "few_train": few,
    }
    logger.info("audit of %s: %d images, %d bad, %d converted, %d EXIF-rotated, %d groups of "
                "byte-identical images", manifest.root, n, len(bad), len(converted),
                len(rotated), len(groups))
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
                       "training images: %s", len(few), min_train_per_class,
                       ", ".join(f"{e['class']} ({e['n_train']})" for e in few))
    return Audit(report=report, width=width, height=height, bad=is_bad, reason=reason)


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
