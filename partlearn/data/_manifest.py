"""``Manifest``: every image of a dataset, its label and split, optional boxes and keypoints,
and for instance retrieval the query crops and ground truth.

Shared by the readers (``_readers``), the audit (``_audit``) and ``datasets``, which
re-exports it: import it from ``partlearn.data``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

import numpy as np

from .._validation import DataError

SPLITS = ("train", "test")
GND_LISTS = ("easy", "hard", "junk")


@dataclass(frozen=True, eq=False)
class Manifest:
    """Every image of a dataset: where it is, its label and split, optional boxes and keypoints.

    Row ``i`` is image ``i`` in every field. ``md5`` (an addition to the fields the pipeline
    reads) holds the checksums a CSV's ``md5`` column gave, ``""`` where it gave none, and is
    ``()`` when there was no such column; the audit verifies them.

    Instance retrieval (the revisited-Oxford layout): ``crop`` ``(N, 4)`` ``x1, y1, x2, y2``
    in pixels, the part of the image the pipeline sees (a query's box), NaN rows for whole
    images; ``gnd`` ``{query image_id: {"easy"|"hard"|"junk": database image_ids}}``, by id
    so that it survives ``subset`` (ids of dropped images simply no longer match).
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
    crop: np.ndarray | None = None
    gnd: dict | None = None

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

        if self.crop is not None:
            crop = np.asarray(self.crop, dtype=np.float32).reshape(-1, 4)
            if crop.shape != (n, 4):
                raise ValueError(f"Manifest: crop should be ({n}, 4), got {crop.shape}")
            put("crop", crop)
        if self.gnd is not None:
            put("gnd", {str(q): {k: tuple(str(i) for i in g[k]) for k in GND_LISTS}
                        for q, g in self.gnd.items()})

    def __len__(self) -> int:
        return len(self.path)

    def __eq__(self, other):
        if not isinstance(other, Manifest):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if a is None or b is None or not np.array_equal(
                        a, b, equal_nan=a.dtype.kind == "f" and b.dtype.kind == "f"):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None

    def __repr__(self):
        n_train = int((self.split == "train").sum())
        extras = [name for name in ("bbox", "keypoints", "crop", "gnd")
                  if getattr(self, name) is not None]
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
        kept_ids = set(pick(self.image_id))
        return replace(
            self,
            image_id=pick(self.image_id), path=pick(self.path),
            label=self.label[index], split=self.split[index],
            bbox=None if self.bbox is None else self.bbox[index],
            keypoints=None if self.keypoints is None else self.keypoints[index],
            md5=pick(self.md5) if self.md5 else (),
            crop=None if self.crop is None else self.crop[index],
            gnd=None if self.gnd is None else
            {q: g for q, g in self.gnd.items() if q in kept_ids},
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
            "crop": None if self.crop is None else
            [[None if np.isnan(v) else float(v) for v in row] for row in self.crop],
            "gnd": None if self.gnd is None else
            {q: {k: list(v) for k, v in g.items()} for q, g in self.gnd.items()},
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
        if d.get("crop") is not None:
            d["crop"] = np.asarray([[np.nan if v is None else v for v in row]
                                    for row in d["crop"]], dtype=np.float32)
        return cls(**d)
