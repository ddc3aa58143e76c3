"""The revisited Oxford/Paris layout (Radenović et al., CVPR 2018; ``revisitop``), for
instance retrieval: ``jpg/<name>.jpg`` and a ground-truth file ``gnd_<dataset>.json``
holding ``imlist`` (database names, no extension), ``qimlist`` (query names) and, per
query, ``gnd[q]`` with ``bbx`` (``x1, y1, x2, y2`` in the image's pixels) and the
``easy``, ``hard`` and ``junk`` lists of indices into ``imlist``.

``read_revisitop`` returns a ``Manifest`` with the database images as the ``train``
split and the queries as ``test``, one class (the layout has no labels), each query's
box as its ``crop`` (the pipeline sees the query cropped, as the protocol asks) and the
ground truth as ``gnd``, by image id. A query may also be a database image (it is then
listed twice: whole in the database, cropped as the query).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ._manifest import GND_LISTS, Manifest
from ._readers import _abs_root
from .._validation import DataError

MARKER = "gnd_*.json"


def ground_truth_file(root: Path) -> Path | None:
    """The layout's one ``gnd_*.json`` next to ``jpg/`` (None when it is not this layout)."""
    found = sorted(root.glob(MARKER))
    if not found or not (root / "jpg").is_dir():
        return None
    if len(found) > 1:
        raise DataError(f"{root}: several ground-truth files ({', '.join(p.name for p in found)});"
                        " expected one gnd_<dataset>.json")
    return found[0]


def _names(file: Path, g: dict, key: str) -> list[str]:
    names = g.get(key)
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise DataError(f"{file}: {key!r} should be a list of image names (no extension)")
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen:
            raise DataError(f"{file}: {key}[{i}] {n!r} repeats {key}[{seen[n]}]")
        if "/" in n or "\\" in n or n.startswith("."):
            raise DataError(f"{file}: {key}[{i}] {n!r} should be a file name under jpg/")
        seen[n] = i
    return names


def _box(file: Path, q: int, name: str, value) -> list[float]:
    where = f"{file}: gnd[{q}] ({name}) bbx"
    if not (isinstance(value, list) and len(value) == 4):
        raise DataError(f"{where} should be [x1, y1, x2, y2], got {value!r}")
    try:
        box = [float(v) for v in value]
    except (TypeError, ValueError):
        raise DataError(f"{where} should be 4 numbers, got {value!r}") from None
    if not all(math.isfinite(v) for v in box) or min(box) < 0 \
            or box[2] <= box[0] or box[3] <= box[1]:
        raise DataError(f"{where} {value!r} should have 0 <= x1 < x2 and 0 <= y1 < y2")
    return box


def _indices(file: Path, q: int, name: str, key: str, value, n_db: int) -> list[int]:
    where = f"{file}: gnd[{q}] ({name}) {key!r}"
    if not isinstance(value, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise DataError(f"{where} should be a list of integer indices into imlist")
    bad = [i for i in value if not 0 <= i < n_db]
    if bad:
        raise DataError(f"{where}: index {bad[0]} is out of range; imlist has {n_db} images "
                        f"(indices 0..{n_db - 1})")
    return value


def read_revisitop(root) -> Manifest:
    """The revisited-Oxford layout at ``root`` (see the module). Checks every name, index
    and box of the ground truth; boxes against the image sizes at the dataset stage."""
    root = _abs_root(root)
    file = ground_truth_file(root)
    if file is None:
        raise DataError(f"{root}: the revisitop layout is jpg/ plus one gnd_<dataset>.json; "
                        "found " + ("no jpg/ folder" if not (root / "jpg").is_dir()
                                    else "no gnd_*.json"))
    try:
        g = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{file} is not a JSON file ({e})") from None
    if not isinstance(g, dict):
        raise DataError(f"{file} should hold an object with imlist, qimlist and gnd")
    missing = [k for k in ("imlist", "qimlist", "gnd") if k not in g]
    if missing:
        raise DataError(f"{file} lacks {', '.join(map(repr, missing))}; expected imlist, "
                        "qimlist and gnd")
    imlist, qimlist = _names(file, g, "imlist"), _names(file, g, "qimlist")
    gnd = g["gnd"]
    if not isinstance(gnd, list) or len(gnd) != len(qimlist):
        raise DataError(f"{file}: gnd should be a list with one entry per query of qimlist "
                        f"({len(qimlist)}), got "
                        f"{len(gnd) if isinstance(gnd, list) else type(gnd).__name__}")
    n = len(imlist)
    crops, truth = [], {}
    for q, (name, entry) in enumerate(zip(qimlist, gnd)):
        if not isinstance(entry, dict) or "bbx" not in entry:
            raise DataError(f"{file}: gnd[{q}] ({name}) should be an object with bbx, easy, "
                            "hard and junk")
        crops.append(_box(file, q, name, entry["bbx"]))
        lists = {k: _indices(file, q, name, k, entry.get(k, []), n) for k in GND_LISTS}
        every = sum(lists.values(), [])
        if len(set(every)) != len(every):
            twice = next(i for i in every if every.count(i) > 1)
            raise DataError(f"{file}: gnd[{q}] ({name}) lists database image {twice} "
                            f"({imlist[twice]}) more than once across easy, hard and junk")
        truth[f"q:{name}"] = {k: [imlist[i] for i in v] for k, v in lists.items()}
    for name in imlist + qimlist:
        if not (root / "jpg" / f"{name}.jpg").is_file():
            raise DataError(f"{root / 'jpg' / (name + '.jpg')} is missing; {file.name} lists it")
    ids = tuple(imlist) + tuple(f"q:{name}" for name in qimlist)
    paths = tuple(f"jpg/{name}.jpg" for name in imlist + qimlist)
    crop = np.full((len(ids), 4), np.nan, np.float32)
    if crops:
        crop[n:] = crops
    return Manifest(root=str(root), classes=(file.stem.removeprefix("gnd_"),), image_id=ids,
                    path=paths, label=np.zeros(len(ids), np.int64),
                    split=np.asarray(["train"] * n + ["test"] * len(qimlist), "<U5"),
                    crop=crop, gnd=truth)
