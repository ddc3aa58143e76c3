"""Bulk prediction: the image files named by files, folders (recursive) and CSV lists,
predicted by blocks of images with a progress bar, one CSV row per image."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np

from .._progress import progress
from .._validation import ConfigError, DataError

logger = logging.getLogger(__name__)

CHUNK = 64  # images decoded and predicted together (the CPU tasks split them)


def image_inputs(inputs) -> list[str]:
    """The image paths of ``inputs``: an image file, a folder (its image files, recursive,
    sorted) or a ``.csv`` list (its ``path`` column, else its first; relative paths are
    relative to the CSV's folder). A name that does not exist is a ``ConfigError``."""
    from ..data import IMAGE_EXTENSIONS

    out = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*")
                           if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
            if not found:
                logger.warning("%s: no image files (%s) in this folder", p,
                               ", ".join(sorted(IMAGE_EXTENSIONS)))
            out += found
        elif p.suffix.lower() == ".csv" and p.is_file():
            out += _csv_paths(p)
        elif p.exists():
            out.append(str(p))
        else:
            raise ConfigError(f"input {p} does not exist (give image files, folders or a CSV "
                              "of paths)")
    return out


def _csv_paths(file: Path) -> list[str]:
    from ..data import IMAGE_EXTENSIONS

    try:
        rows = list(csv.reader(io.StringIO(file.read_text(encoding="utf-8"))))
    except UnicodeDecodeError as e:
        raise DataError(f"{file}: not UTF-8 text ({e.reason} at byte {e.start}); expected a "
                        "CSV of image paths") from None
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    column = 0
    if rows and "path" in [c.strip().lower() for c in rows[0]]:
        column = [c.strip().lower() for c in rows[0]].index("path")
        rows = rows[1:]
    elif rows and Path(rows[0][0]).suffix.lower() not in IMAGE_EXTENSIONS:
        rows = rows[1:]  # a header without a path column: the first column is the paths
    out = []
    for k, r in enumerate(rows):
        if column >= len(r) or not r[column].strip():
            raise DataError(f"{file}: row {k + 2}: no path in column {column + 1}")
        out.append(str(file.parent / r[column].strip()))
    return out


def predict_files(model, paths, *, method=None, top_k: int = 5, boxes: int = 0,
                  on_bad_image: str | None = None):
    """Yield one row per path (``dict``: ``path``, ``predicted``, ``score``, ``top``
    ``[(class, score), ...]`` of the ``top_k`` best, and with ``boxes`` the ``parts``:
    the ``boxes`` parts that count most for the predicted class, each with its best box
    and response), in input order. Unreadable images follow ``on_bad_image`` (default:
    the run's ``data.on_bad_image``): ``error`` stops at the first with a ``DataError``
    naming it, ``skip`` logs it and yields ``{"path", "error"}``."""
    from ..config import BAD_IMAGE_POLICIES
    from ..data import BadImageError
    from ._model import open_image

    method = model.resolve_method(method)
    policy = on_bad_image or model.cfg.data.on_bad_image
    if policy not in BAD_IMAGE_POLICIES:
        raise ConfigError(f"on_bad_image {policy!r}: expected one of "
                          f"{', '.join(BAD_IMAGE_POLICIES)}")
    if top_k < 1:
        raise ConfigError(f"--top-k {top_k}: expected 1 or more classes")
    if boxes and "parts" not in model.blocks:
        raise ConfigError(f"--boxes needs the model's 'parts' codes; it has "
                          f"{sorted(model.blocks) or 'none'}")
    classes = np.asarray(model.classes, dtype=object)
    k = min(top_k, len(classes))
    with progress(total=len(paths), desc="predict", unit="img") as bar:
        for start in range(0, len(paths), CHUNK):
            chunk = paths[start:start + CHUNK]
            pils, good, bad = [], [], {}
            for i, path in enumerate(chunk):
                try:
                    pils.append(open_image(path))
                    good.append(i)
                except BadImageError as e:
                    if policy == "error":
                        raise DataError(f"{e}; set --on-bad-image skip to skip such images"
                                        ) from None
                    logger.warning("skipping %s", e)
                    bad[i] = e.reason
            feats = model.features_of(pils)
            scores = model.class_scores(model.scores_of(feats, method), method)
            parts = _top_parts(model, feats, scores.argmax(axis=1), boxes) if boxes else None
            rows = {}
            for j, i in enumerate(good):
                best = np.argsort(-scores[j], kind="stable")[:k]
                row = {"path": chunk[i], "predicted": classes[best[0]],
                       "score": float(scores[j, best[0]]),
                       "top": [(classes[c], float(scores[j, c])) for c in best]}
                if parts is not None:
                    row["parts"] = parts[j]
                rows[i] = row
            for i in range(len(chunk)):
                yield rows[i] if i in rows else {"path": chunk[i], "error": bad[i]}
            bar.update(len(chunk))


def _top_parts(model, feats, predicted, top: int) -> list[list[dict]]:
    """Per image, the ``top`` parts that count most for its predicted class by the
    ``parts`` classifier's weights (as ``partlearn explain`` draws them), on the image's
    own regions (not the mirrored ones)."""
    from ..explain import top_parts

    (parts, names), = model.blocks["parts"]
    svm = model.methods.get("parts")
    if svm is None:
        raise ConfigError("--boxes needs the run's 'parts' method (its weights rank the parts)")
    row_of = {int(c): r for r, c in enumerate(np.asarray(svm.classes))}
    out = []
    for x, c in zip(feats, predicted):
        own = ~np.asarray(x.flips, bool)
        responses = parts.responses(np.asarray(x.regions, np.float32)[own])
        out.append(top_parts(x.boxes[own], responses, svm.coef[row_of[int(c)]],
                             parts.part_class, names, top))
    return out


def write_csv(rows, file, top_k: int, boxes: int) -> dict:
    """Write ``predict_files``' rows as CSV to ``file`` (an open text file): ``path,
    predicted, score``, then ``top2, score2, ...`` to ``top_k``, then with ``boxes`` per
    part ``part1, part1_score, part1_box`` (``x0 y0 x1 y1`` px), then ``error`` (why an
    image was skipped). Returns counts ``{"images", "skipped"}``."""
    header = ["path", "predicted", "score"]
    for j in range(2, top_k + 1):
        header += [f"top{j}", f"score{j}"]
    for j in range(1, boxes + 1):
        header += [f"part{j}", f"part{j}_score", f"part{j}_box"]
    header.append("error")
    w = csv.writer(file, lineterminator="\n")
    w.writerow(header)
    counts = {"images": 0, "skipped": 0}
    for row in rows:
        if "error" in row:
            w.writerow([row["path"]] + [""] * (len(header) - 2) + [row["error"]])
            counts["skipped"] += 1
            continue
        cells = [row["path"], row["predicted"], f"{row['score']:.6g}"]
        top = row["top"][1:]
        for j in range(top_k - 1):
            cells += [top[j][0], f"{top[j][1]:.6g}"] if j < len(top) else ["", ""]
        for j in range(boxes):
            parts = row.get("parts", [])
            if j < len(parts):
                p = parts[j]
                cells += [p["part"], f"{p['score']:.4g}", " ".join(f"{v:.1f}" for v in p["box"])]
            else:
                cells += ["", "", ""]
        w.writerow(cells + [""])
        counts["images"] += 1
    return counts
