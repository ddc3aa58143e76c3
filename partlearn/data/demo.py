"""The demo dataset: cluttered scenes whose class is one small local pattern.

Every image is a smooth random background covered with clutter objects, each a
shape x fill colour x texture x second colour. A class is one *conjunction*
``shape S_c filled with colour A_c`` (its texture and second colour fixed too);
the clutter uses every shape and every colour, but never a class's shape in
that class's colour. So no single ingredient tells the classes apart: only the
small conjunction does, at a random place, scale and angle. Past ``len(SHAPES)``
classes (up to ``MAX_CLASSES``, for benchmarks at scale) a class is a whole
(shape, colour, texture, second colour) and the clutter avoids exactly those; the
first ``len(SHAPES)`` classes are the same patterns whatever ``n_classes`` is. Mean pooling a CNN
feature over the whole image dilutes it among the clutter; a part model (max
over regions) finds it.

``make_demo(root, seed)`` writes ``images/*.png`` and ``labels.csv``
(``path,label,split,x0,y0,x1,y1``; the box is where the pattern was drawn, in
pixels) into ``root``. Generation is deterministic: every image draws from its
own ``numpy.random.Generator`` seeded by ``(seed, index)``; nothing touches
global random state. Every constant is in ``DemoSpec``; ``GENERATOR_VERSION``
changes whenever the same spec and seed would give different images.

``ensure_demo(root, seed)`` is what ``datasets.read_dataset(format="demo")``
calls: it generates the dataset once (into a temporary sibling, moved into
place with ``os.replace``) and reuses it after, never touching a folder it did
not make.
"""

from __future__ import annotations

import csv
import json
import logging
import functools
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .._validation import DataError

__all__ = ["DEFAULT_SPEC", "DEMO_SEED", "GENERATOR_VERSION", "MARKER", "MAX_CLASSES", "DemoSpec",
           "class_names", "class_pattern", "ensure_demo", "make_demo", "render_image"]

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
GENERATOR_NAME = "partlearn.demo"  # the marker's format name (kept when the module moved)
MARKER = "demo.json"
LABELS = "labels.csv"
DEMO_SEED = 0

SHAPES = ("circle", "square", "triangle", "cross", "star", "ring")
COLOURS = {  # saturated, far apart in RGB
    "red": (220, 30, 30), "green": (30, 170, 40), "blue": (35, 60, 220),
    "yellow": (240, 210, 20), "magenta": (200, 40, 200), "cyan": (20, 200, 210),
}
TEXTURES = ("stripes", "checker", "border")
#: distinct (shape, colour, texture) patterns ``class_pattern`` makes
MAX_CLASSES = len(SHAPES) * len(COLOURS) * len(TEXTURES)


@dataclass(frozen=True)
class DemoSpec:
    """Every generation constant. Sizes are fractions of the image side."""

    n_classes: int = 6  # <= MAX_CLASSES; class c < len(SHAPES) is SHAPES[c] in colour c
    n_train: int = 40  # images per class
    n_test: int = 20
    image_size: int = 224
    pattern_size: tuple[float, float] = (0.20, 0.26)  # pipelines/demo.toml's region scales
    clutter_size: tuple[float, float] = (0.10, 0.22)  # bracket it (0.2, 0.3)
    n_clutter: tuple[int, int] = (10, 16)  # inclusive range
    max_angle: float = 25.0  # degrees, patterns and clutter
    texture_period: float = 0.25  # stripe/checker period, fraction of the object side
    background_cells: int = 5  # the background's smooth noise: a grid this coarse
    background_jitter: int = 40  # +- per channel around the base colour

    def __post_init__(self):
        if not 2 <= self.n_classes <= MAX_CLASSES:
            raise ValueError(f"DemoSpec.n_classes={self.n_classes} must be in 2..{MAX_CLASSES}")
        if self.n_train < 1 or self.n_test < 1:
            raise ValueError(f"DemoSpec.n_train={self.n_train} and n_test={self.n_test} must "
                             "be >= 1")
        lo, hi = self.pattern_size
        if not 0 < lo <= hi < 1:
            raise ValueError(f"DemoSpec.pattern_size={self.pattern_size} must be 0 < lo <= hi "
                             "< 1")

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


DEFAULT_SPEC = DemoSpec()  # what read_dataset(format="demo") generates


def class_pattern(c: int) -> dict:
    """Class ``c``'s pattern: its shape, fill colour, texture and second colour (names).
    ``c = (a * len(COLOURS) + q) * len(SHAPES) + r``: shape ``r``, colour ``r + q``,
    texture ``r + a`` (cyclic), so the ``MAX_CLASSES`` patterns differ in (shape, colour,
    texture) and class ``c < len(SHAPES)`` is shape ``c`` in colour ``c``."""
    if not 0 <= c < MAX_CLASSES:
        raise ValueError(f"class {c}: the demo has classes 0..{MAX_CLASSES - 1}")
    names = list(COLOURS)
    r, q = c % len(SHAPES), c // len(SHAPES)
    a, q = divmod(q, len(names))
    colour = (r + q) % len(names)
    return {"shape": SHAPES[r], "colour": names[colour],
            "texture": TEXTURES[(r + a) % len(TEXTURES)],
            "colour2": names[(colour + 3) % len(names)]}


def class_names(spec: DemoSpec | None = None) -> list[str]:
    spec = DEFAULT_SPEC if spec is None else spec
    names = []
    for c, p in enumerate(map(class_pattern, range(spec.n_classes))):
        wide = c >= len(SHAPES) * len(COLOURS)  # (shape, colour) repeats: name the texture
        names.append(f"{p['colour']}_{p['shape']}" + (f"_{p['texture']}" if wide else ""))
    return names


# ------------------------------------------------------------------ drawing


def _polygon(shape: str, n_circle: int = 40) -> list[np.ndarray]:
    """Outline(s) of ``shape`` in unit coordinates (radius 1); a second one is a hole."""
    def ring(n, r, phase=0.0):
        t = phase + 2 * np.pi * np.arange(n) / n
        return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)

    if shape == "circle":
        return [ring(n_circle, 0.95)]
    if shape == "ring":
        return [ring(n_circle, 0.95), ring(n_circle, 0.5)]
    if shape == "square":
        return [ring(4, 1.0, np.pi / 4) * 0.95]
    if shape == "triangle":
        return [ring(3, 1.0, -np.pi / 2) + [0, 0.2]]
    if shape == "star":
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return [ring(10, 1.0, -np.pi / 2) * r[:, None]]
    if shape == "cross":
        a, b = 0.35, 0.95
        return [np.array([(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b),
                          (-a, a), (-b, a), (-b, -a), (-a, -a)])]
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _mask(shape: str, side: int, angle: float, scale: float = 1.0) -> np.ndarray:
    """``(side, side)`` bool: the shape, rotated by ``angle`` degrees, shrunk by ``scale``."""
    img = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(img)
    t = math.radians(angle)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    half = side / 2
    for k, poly in enumerate(_polygon(shape)):
        pts = (poly * scale) @ rot.T * half + half
        draw.polygon([tuple(p) for p in pts.tolist()], fill=0 if k else 255)
    return np.asarray(img) > 127


def _draw(canvas: np.ndarray, shape: str, colour, colour2, texture: str, cx: float, cy: float,
          side: int, angle: float, period: float) -> None:
    """Paint one object onto ``canvas`` ``(H, W, 3)`` uint8 in place (clipped at borders)."""
    mask = _mask(shape, side, angle)
    yy, xx = np.mgrid[0:side, 0:side] - (side - 1) / 2
    t = math.radians(angle)
    u = xx * math.cos(t) + yy * math.sin(t)
    v = -xx * math.sin(t) + yy * math.cos(t)
    p = max(2.0, period * side)
    if texture == "stripes":
        second = np.floor(u / (p / 2)) % 2 == 1
    elif texture == "checker":
        second = (np.floor(u / (p / 2)) + np.floor(v / (p / 2))) % 2 == 1
    elif texture == "border":
        second = ~_mask(shape, side, angle, 0.6)
    else:
        raise ValueError(f"unknown texture {texture!r}; expected one of {TEXTURES}")
    rgb = np.where(second[..., None], np.asarray(colour2, np.uint8), np.asarray(colour, np.uint8))
    h, w = canvas.shape[:2]
    x0, y0 = round(float(cx - side / 2)), round(float(cy - side / 2))
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + side, w), min(y0 + side, h)
    if cx0 >= cx1 or cy0 >= cy1:
        return
    sub = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
    region = canvas[cy0:cy1, cx0:cx1]
    m = mask[sub]
    region[m] = rgb[sub][m]


def _background(rng: np.random.Generator, spec: DemoSpec) -> np.ndarray:
    n = spec.image_size
    base = rng.integers(90, 200, size=3)
    cells = rng.integers(-spec.background_jitter, spec.background_jitter + 1,
                         size=(spec.background_cells, spec.background_cells, 3))
    small = np.clip(base + cells, 0, 255).astype(np.uint8)
    return np.array(Image.fromarray(small).resize((n, n), Image.Resampling.BILINEAR))


@functools.lru_cache(maxsize=None)
def _class_items(n_classes: int) -> frozenset:
    """The (shape, colour, texture, colour2) of classes ``0..n_classes-1``."""
    return frozenset(tuple(class_pattern(c).values()) for c in range(n_classes))


def _clutter_item(rng: np.random.Generator, spec: DemoSpec) -> tuple[str, str, str, str]:
    """A random (shape, colour, texture, colour2) that is no class's (shape, colour) pair
    (up to ``len(SHAPES)`` classes), or no class's whole pattern (past them)."""
    names = list(COLOURS)
    wide = spec.n_classes > len(SHAPES)
    while True:
        s = int(rng.integers(len(SHAPES)))
        c = int(rng.integers(len(names)))
        if not wide and s == c and s < spec.n_classes:  # class s's conjunction: never in clutter
            continue
        c2 = int(rng.integers(len(names) - 1))
        c2 += c2 >= c
        item = SHAPES[s], names[c], TEXTURES[int(rng.integers(len(TEXTURES)))], names[c2]
        if wide and item in _class_items(spec.n_classes):
            continue
        return item


def render_image(seed: int, index: int, label: int, spec: DemoSpec | None = None):
    """Image ``index`` of the demo of ``seed``: ``(uint8 (S, S, 3), box (x0, y0, x1, y1))``."""
    spec = DEFAULT_SPEC if spec is None else spec
    rng = np.random.default_rng([seed, index])
    n = spec.image_size
    canvas = _background(rng, spec)
    period = spec.texture_period
    for _ in range(int(rng.integers(spec.n_clutter[0], spec.n_clutter[1] + 1))):
        shape, colour, texture, colour2 = _clutter_item(rng, spec)
        side = round(float(n * rng.uniform(*spec.clutter_size)))
        cx, cy = rng.uniform(0, n, size=2)
        _draw(canvas, shape, COLOURS[colour], COLOURS[colour2], texture, cx, cy, side,
              rng.uniform(-spec.max_angle, spec.max_angle), period)
    p = class_pattern(label)
    side = round(float(n * rng.uniform(*spec.pattern_size)))
    x0, y0 = (int(v) for v in rng.integers(0, n - side + 1, size=2))
    _draw(canvas, p["shape"], COLOURS[p["colour"]], COLOURS[p["colour2"]], p["texture"],
          x0 + side / 2, y0 + side / 2, side, rng.uniform(-spec.max_angle, spec.max_angle),
          period)
    return canvas, (x0, y0, x0 + side, y0 + side)


def _listing(spec: DemoSpec) -> list[tuple[str, int, str]]:
    """``(path, label, split)`` of every image, in generation order."""
    rows, k = [], 0
    for split, count in (("train", spec.n_train), ("test", spec.n_test)):
        for c in range(spec.n_classes):
            for _ in range(count):
                rows.append((f"images/{k:04d}.png", c, split))
                k += 1
    return rows


def make_demo(root, seed: int = DEMO_SEED, spec: DemoSpec | None = None) -> Path:
    """Write the demo dataset into ``root`` (created; must not hold a ``labels.csv``).

    Writes ``images/NNNN.png``, ``labels.csv`` and the marker ``demo.json``
    (generator, version, seed, spec, files). Returns ``root``.
    """
    spec = DEFAULT_SPEC if spec is None else spec
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    if (root / LABELS).exists():
        raise DataError(f"{root / LABELS} already exists; make_demo writes into a new folder")
    names = class_names(spec)
    rows = []
    for k, (path, label, split) in enumerate(_listing(spec)):
        pixels, box = render_image(seed, k, label, spec)
        Image.fromarray(pixels).save(root / path, format="PNG", compress_level=6)
        rows.append((path, names[label], split, *box))
    with open(root / LABELS, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(("path", "label", "split", "x0", "y0", "x1", "y1"))
        w.writerows(rows)
    marker = _marker(seed, spec)
    marker["files"] = [LABELS] + [r[0] for r in rows]
    (root / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
    return root


def _marker(seed: int, spec: DemoSpec) -> dict:
    return {"generator": GENERATOR_NAME, "version": GENERATOR_VERSION, "seed": int(seed),
            "spec": spec.to_dict()}


# ------------------------------------------------------------------ generate once


def _read_marker(root: Path) -> dict | None:
    try:
        marker = json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return marker if isinstance(marker, dict) else None


def _foreign(root: Path, marker: dict | None) -> str | None:
    """Why ``root`` is not a demo this generator made (``None`` when it is one)."""
    if not marker:
        return f"it has no readable {MARKER}"
    if marker.get("generator") != GENERATOR_NAME or not isinstance(marker.get("files"), list):
        return (f"its {MARKER} is from {marker.get('generator')!r}, not {GENERATOR_NAME!r} "
                "with a list of files")
    allowed = {MARKER, *map(str, marker["files"])}
    allowed_dirs = {Path(f).parent.as_posix() for f in allowed} - {"."}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root).as_posix()
        for name, known in [(d, allowed_dirs) for d in dirnames] + \
                [(f, allowed) for f in filenames]:
            path = name if rel == "." else f"{rel}/{name}"
            if path not in known:
                return f"it holds {path}, which the generator did not write"
    return None


def _is_current(marker: dict | None, seed: int, spec: DemoSpec) -> bool:
    return bool(marker) and all(marker.get(k) == v for k, v in _marker(seed, spec).items())


def ensure_demo(root, seed: int = DEMO_SEED, spec: DemoSpec | None = None) -> bool:
    """Make sure ``root`` holds the demo of ``seed`` and ``spec``; ``True`` if generated now.

    Reuses ``root`` when its marker matches. Generates it when ``root`` is missing or an
    empty folder, or when it is a demo this generator made with another version, seed or
    spec (nothing else in it). Raises ``DataError`` for any other non-empty folder.
    ``spec``: ``DEFAULT_SPEC`` when ``None``.
    """
    spec = DEFAULT_SPEC if spec is None else spec
    root = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    old = None
    if root.exists():
        if not root.is_dir():
            raise DataError(f"demo dataset root {root} is a file; expected a folder for the "
                            "generated demo (or nothing there)")
        marker = _read_marker(root)
        if _is_current(marker, seed, spec):
            logger.info("demo dataset: reusing %s (generator version %d, seed %d)", root,
                        GENERATOR_VERSION, seed)
            return False
        if any(root.iterdir()):
            why = _foreign(root, marker)
            if why:
                raise DataError(
                    f"{root} is not empty and is not a demo dataset this generator made "
                    f"({why}); expected a missing or empty folder, or one holding {MARKER} "
                    f"with generator {GENERATOR_NAME!r} version {GENERATOR_VERSION}, seed "
                    f"{seed}. Nothing was changed; set data.root to another folder")
            old = marker
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".partial", dir=root.parent))
    try:
        make_demo(tmp, seed, spec)
        if not _move_into_place(tmp, root, old, seed, spec):
            return False
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("demo dataset: generated %s (generator version %d, seed %d)", root,
                GENERATOR_VERSION, seed)
    return True


def _move_into_place(tmp: Path, root: Path, old: dict | None, seed: int,
                     spec: DemoSpec) -> bool:
    """Move the freshly made ``tmp`` to ``root``: swapped with the outdated demo there
    (``old``: its marker), or else onto a missing or empty folder. ``False`` when another
    process made the same demo there meanwhile (``tmp`` is left to the caller)."""
    if old is not None:
        logger.warning("demo dataset: %s was made with version %s, seed %s (or another "
                       "spec); regenerating it for version %d, seed %d", root,
                       old.get("version"), old.get("seed"), GENERATOR_VERSION, seed)
        trash = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".old",
                                      dir=root.parent))
        os.replace(root, trash)
        try:
            os.replace(tmp, root)
        except OSError:
            os.replace(trash, root)
            raise
        shutil.rmtree(trash, ignore_errors=True)
        return True
    try:
        os.replace(tmp, root)  # onto a missing or empty folder
    except OSError:
        if _is_current(_read_marker(root), seed, spec):  # made meanwhile elsewhere
            logger.info("demo dataset: %s was generated concurrently; reusing it", root)
            return False
        raise
    return True
