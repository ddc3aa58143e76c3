"""The readers behind ``datasets.read_dataset`` (CUB's is in ``_cub``), and their helpers.

Each reader parses annotation files only (it never opens an image) and returns a
``Manifest``; a malformed file raises ``DataError`` naming the file, the line, the value
and what was expected. Import them from ``partlearn.data``.
"""

from __future__ import annotations

import csv as _csv
import logging
import math
import os
import re
from collections import defaultdict
from pathlib import Path, PurePosixPath

import numpy as np

from ._manifest import SPLITS, Manifest
from .._validation import DataError, did_you_mean

# the public module's name, as before the split: what callers filter and capture on
logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"})


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


def fold_case(labels, who: str, what: str = "labels") -> list[str]:
    """The name rule, shared by every reader: class names are case-insensitive. Labels
    that differ only in case are one class, named by the lower-cased first of its
    spellings (``Coast``, ``coast`` -> ``coast``), and one warning names the spellings
    merged; a name spelt one way only is kept as it is. Returns each label's class."""
    spellings: dict[str, dict[str, int]] = defaultdict(dict)
    for label in labels:
        spelled = spellings[label.casefold()]
        spelled[label] = spelled.get(label, 0) + 1
    names = {}
    merged = []
    for spelled in spellings.values():
        name = next(iter(spelled)) if len(spelled) == 1 else min(spelled).lower()
        names.update((s, name) for s in spelled)
        if len(spelled) > 1:
            merged.append(" + ".join(f"{s!r} ({n})" for s, n in sorted(spelled.items()))
                          + f" -> {name!r}")
    if merged:
        logger.warning("%s: merged %d class %s whose names differ only in case: %s", who,
                       len(merged), what, "; ".join(merged))
    return [names[label] for label in labels]


def _check_relative(where: str, value: str) -> str:
    if not value:
        raise DataError(f"{where}: empty path")
    if value.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", value):
        raise DataError(f"{where}: path {value!r} is absolute; expected a path relative to the "
                        "dataset root")
    return PurePosixPath(value).as_posix()


# --------------------------------------------------------------------------- readers

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
    labels = fold_case([c for _, c, _ in rows], f"read_mit67({root})", "folders")
    classes = _sort_classes(labels)
    index = {c: i for i, c in enumerate(classes)}
    paths = tuple("Images/" + rel for rel, _, _ in rows)
    return Manifest(
        root=str(root), classes=tuple(classes), image_id=paths, path=paths,
        label=np.asarray([index[c] for c in labels], dtype=np.int64),
        split=np.asarray([s for _, _, s in rows], dtype="<U5"),
    )


_MD5 = re.compile(r"[0-9a-f]{32}")


def read_csv(root, csv: str = "labels.csv") -> Manifest:
    """``<root>/<csv>`` with columns ``path,label,split`` (others allowed; ``md5`` is kept).

    Paths are relative to ``root``; labels are class names (classes sorted, numerically when
    all are integers; labels that differ only in case are one class, see ``fold_case``);
    split is ``train`` or ``test``.
    """
    root = _abs_root(root)
    file = root / csv
    header, rows = _csv_rows(file)
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
    labels = fold_case(labels, f"read_csv({file})")
    classes = _sort_classes(labels)
    index = {c: i for i, c in enumerate(classes)}
    return Manifest(
        root=str(root), classes=tuple(classes), image_id=tuple(paths), path=tuple(paths),
        label=np.asarray([index[c] for c in labels], dtype=np.int64),
        split=np.asarray(splits, dtype="<U5"), md5=tuple(md5s),
    )


def _csv_rows(file: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The stripped header and the ``(line number, stripped fields)`` of every non-blank row."""
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
    return header, rows


def read_folders(root) -> Manifest:
    """``train/<class>/*`` and ``test/<class>/*``; class folders matched case-insensitively.

    Folder names that differ only in case are one class (named in lower case) and a warning
    names the spellings merged (the rule of ``fold_case``, here with each folder named). Only files with an image extension are listed; anything else
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
