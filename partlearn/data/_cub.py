"""The CUB_200_2011 reader behind ``datasets.read_dataset`` (import it from there).

One ``_Lines`` parse per official file (``images.txt``, ``image_class_labels.txt``,
``train_test_split.txt``, ``classes.txt``; optional ``bounding_boxes.txt`` and
``parts/parts.txt`` + ``parts/part_locs.txt``), every image of ``images.txt`` checked to
have its line in each.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

import numpy as np

from ._manifest import Manifest
from ._readers import _abs_root, _check_relative, _Lines, fold_case
from .._validation import DataError


def read_cub(root) -> Manifest:
    """The official CUB_200_2011 layout, possibly filtered to a subset of its classes.

    ``image_id`` is the official id; classes are those present, ordered by class id, labels
    re-indexed 0..C-1; ``bbox`` is x0, y0, x1, y1 (from x, y, w, h); ``keypoints`` (N, 15, 3).
    """
    root = _abs_root(root)
    images, names = _cub_images(root)
    ids = list(names)
    split, class_names, class_ids = _cub_labels(root, images, ids)
    present = sorted(set(class_ids))
    # the name rule of every reader (``fold_case``): names that differ only in case are one
    # class, at its first id
    folded = dict(zip(present, fold_case([class_names[c] for c in present],
                                         f"read_cub({root})", "names")))
    first = {}
    for c in present:
        first.setdefault(folded[c], c)
    class_names = {c: folded[c] for c in present}
    present = sorted(set(first.values()))
    index = {c: i for i, c in enumerate(present)}
    index.update({c: index[first[folded[c]]] for c in folded})
    bbox = _cub_boxes(root, images, ids)
    keypoints, keypoint_names = _cub_keypoints(root, ids)
    return Manifest(
        root=str(root),
        classes=tuple(class_names[c] for c in present),
        image_id=tuple(str(i) for i in ids),
        path=tuple(posixpath.join("images", names[i]) for i in ids),
        label=np.asarray([index[c] for c in class_ids], dtype=np.int64),
        split=np.asarray(split, dtype="<U5"),
        bbox=bbox, keypoints=keypoints, keypoint_names=keypoint_names,
    )


def _cub_images(root: Path) -> tuple[_Lines, dict[int, str]]:
    """``images.txt`` and ``{image_id: image_name}``; a repeated id or name is an error."""
    images = _Lines(root / "images.txt", "<image_id> <image_name>")
    names = images.keyed(
        "image_id", lambda n, p: _check_relative(f"{images.path}, line {n}", p[0]), rest=True)
    seen_names: dict[str, int] = {}
    for lineno, parts in images.rows(rest=True):
        if parts[1] in seen_names:
            raise images.error(lineno, f"image_name {parts[1]!r} repeats line "
                               f"{seen_names[parts[1]]}")
        seen_names[parts[1]] = lineno
    return images, names


def _per_image(images: _Lines, ids: list[int], lines: _Lines, table: dict) -> list:
    """``table``'s entry for every image ``ids`` (``images.txt`` order); one missing is an error."""
    missing = [i for i in ids if i not in table]
    if missing:
        raise DataError(f"{lines.path} has no line for image_id {missing[0]} (listed in "
                        f"{images.path}, line {images.lines[ids.index(missing[0])][0]})"
                        + (f" nor for {len(missing) - 1} other images" if len(missing) > 1
                           else "") + f"; expected lines '{lines.columns}'")
    return [table[i] for i in ids]


def _cub_labels(root: Path, images: _Lines, ids: list[int]
                ) -> tuple[list[str], dict[int, str], list[int]]:
    """Each image's split and class id, and ``{class_id: class_name}`` from ``classes.txt``."""
    labels_file = _Lines(root / "image_class_labels.txt", "<image_id> <class_id>")
    labels = labels_file.keyed(
        "image_id", lambda n, p: (labels_file.int(n, "class_id", p[0]), n))
    split_file = _Lines(root / "train_test_split.txt", "<image_id> <is_training_image>")

    def parse_split(lineno, p):
        if p[0] not in ("0", "1"):
            raise split_file.error(lineno, f"is_training_image {p[0]!r} should be 0 (test) or "
                                   "1 (train)")
        return "train" if p[0] == "1" else "test"

    split = _per_image(images, ids, split_file, split_file.keyed("image_id", parse_split))
    classes_file = _Lines(root / "classes.txt", "<class_id> <class_name>")
    class_names = classes_file.keyed("class_id", lambda n, p: p[0], rest=True)

    class_ids = []
    for class_id, lineno in _per_image(images, ids, labels_file, labels):
        if class_id not in class_names:
            raise labels_file.error(lineno, f"class_id {class_id} is not in {classes_file.path}"
                                    f" (which has ids {min(class_names, default=None)}.."
                                    f"{max(class_names, default=None)})")
        class_ids.append(class_id)
    return split, class_names, class_ids


def _cub_boxes(root: Path, images: _Lines, ids: list[int]) -> np.ndarray | None:
    """``(N, 4)`` x0, y0, x1, y1 from ``bounding_boxes.txt``; None without that file."""
    if not (root / "bounding_boxes.txt").exists():
        return None
    boxes = _Lines(root / "bounding_boxes.txt", "<image_id> <x> <y> <width> <height>")

    def parse_box(lineno, p):
        x, y, w, h = (boxes.float(lineno, k, v) for k, v in zip("x y width height".split(), p))
        if w <= 0 or h <= 0:  # the box policy (``clip_boxes``): no area is an error
            raise boxes.error(lineno, f"width {w:g} and height {h:g} should be > 0 (a box "
                              "with no area)")
        return (x, y, x + w, y + h)

    return np.asarray(_per_image(images, ids, boxes, boxes.keyed("image_id", parse_box)),
                      dtype=np.float32).reshape(-1, 4)


def _cub_keypoints(root: Path, ids: list[int]) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """``(N, K, 3)`` x, y, visible from ``parts/part_locs.txt`` and the K part names from
    ``parts/parts.txt``; ``(None, ())`` when neither file is there."""
    parts_txt, locs_txt = root / "parts" / "parts.txt", root / "parts" / "part_locs.txt"
    if not (parts_txt.exists() or locs_txt.exists()):
        return None, ()
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
    return keypoints, keypoint_names
