"""The generated demo dataset: determinism, balance, patterns where said, generate-once."""

import csv
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from partlearn.data import demo
from partlearn._validation import DataError
from partlearn.data import read_csv, read_dataset

SMALL = demo.DemoSpec(n_classes=3, n_train=3, n_test=2, image_size=96, n_clutter=(4, 6))


def _md5s(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(root: Path) -> list[dict]:
    with open(root / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def small(monkeypatch):
    """``read_dataset(format="demo")`` generates ``SMALL`` instead of the full demo."""
    monkeypatch.setattr(demo, "DEFAULT_SPEC", SMALL)
    return SMALL


def test_same_seed_same_bytes(tmp_path):
    a = _md5s(demo.make_demo(tmp_path / "a", seed=3, spec=SMALL))
    b = _md5s(demo.make_demo(tmp_path / "b", seed=3, spec=SMALL))
    n = SMALL.n_classes * (SMALL.n_train + SMALL.n_test)
    assert len(a) == n + 2  # images, labels.csv, demo.json
    assert a == b


def test_different_seeds_differ(tmp_path):
    a = _md5s(demo.make_demo(tmp_path / "a", seed=0, spec=SMALL))
    b = _md5s(demo.make_demo(tmp_path / "b", seed=1, spec=SMALL))
    images = [k for k in a if k.startswith("images/")]
    assert all(a[k] != b[k] for k in images)
    assert a["labels.csv"] != b["labels.csv"]  # the pattern boxes moved


def test_balance_splits_and_marker(tmp_path):
    root = demo.make_demo(tmp_path / "d", seed=0, spec=SMALL)
    m = read_csv(root)
    assert sorted(m.classes) == sorted(demo.class_names(SMALL))
    for c in range(SMALL.n_classes):
        assert ((m.label == c) & (m.split == "train")).sum() == SMALL.n_train
        assert ((m.label == c) & (m.split == "test")).sum() == SMALL.n_test
    for i in range(len(m)):
        with Image.open(m.filepath(i)) as im:
            assert im.size == (SMALL.image_size, SMALL.image_size) and im.mode == "RGB"
    marker = json.loads((root / demo.MARKER).read_text())
    assert marker["version"] == demo.GENERATOR_VERSION and marker["seed"] == 0
    assert marker["spec"] == SMALL.to_dict()


def test_pattern_where_the_labels_say(tmp_path):
    root = demo.make_demo(tmp_path / "d", seed=0, spec=SMALL)
    names = demo.class_names(SMALL)
    n = SMALL.image_size
    for row in _rows(root):
        x0, y0, x1, y1 = (int(row[k]) for k in ("x0", "y0", "x1", "y1"))
        side = x1 - x0
        assert 0 <= x0 < x1 <= n and 0 <= y0 < y1 <= n and y1 - y0 == side
        lo, hi = SMALL.pattern_size
        assert round(lo * n) <= side <= round(hi * n)
        p = demo.class_pattern(names.index(row["label"]))
        crop = np.asarray(Image.open(root / row["path"]))[y0:y1, x0:x1].reshape(-1, 3)
        is_colour = (crop == demo.COLOURS[p["colour"]]).all(1)
        is_colour2 = (crop == demo.COLOURS[p["colour2"]]).all(1)
        assert is_colour.mean() >= 0.08, row
        assert (is_colour | is_colour2).mean() >= 0.25, row


def test_clutter_never_draws_a_class_conjunction():
    rng = np.random.default_rng(0)
    patterns = {(p["shape"], p["colour"]) for p in map(demo.class_pattern, range(6))}
    drawn = {demo._clutter_item(rng, demo.DemoSpec())[:2] for _ in range(3000)}
    assert not drawn & patterns
    # every ingredient still appears in the clutter
    assert {s for s, _ in drawn} == set(demo.SHAPES)
    assert {c for _, c in drawn} == set(demo.COLOURS)


def test_read_dataset_generates_once(tmp_path, small, caplog):
    root = tmp_path / "data" / "demo"
    with caplog.at_level(logging.INFO, logger="partlearn.data.demo"):
        m = read_dataset(root, format="demo")
    assert "generated" in caplog.text
    assert len(m) == small.n_classes * (small.n_train + small.n_test)
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert not [p for p in root.parent.iterdir() if p.name != "demo"]  # no temporaries left
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="partlearn.data.demo"):
        again = read_dataset(root, format="demo", classes=demo.class_names(small)[:2])
    assert "reusing" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == mtimes
    assert len(again.classes) == 2


def test_read_dataset_fills_an_empty_folder(tmp_path, small):
    (tmp_path / "d").mkdir()
    assert len(read_dataset(tmp_path / "d", format="demo")) > 0


def test_refuses_a_foreign_folder(tmp_path, small):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"mine is not empty.*demo\.json"):
        read_dataset(root, format="demo")
    assert [p.name for p in root.iterdir()] == ["notes.txt"]
    (root / demo.MARKER).write_text(json.dumps({"generator": "someone else", "version": 1}))
    with pytest.raises(DataError, match="someone else"):
        read_dataset(root, format="demo")
    assert (root / "notes.txt").read_text() == "mine"


def test_old_version_regenerated_only_when_untouched(tmp_path, small):
    root = tmp_path / "d"
    read_dataset(root, format="demo")
    marker = json.loads((root / demo.MARKER).read_text())
    marker["version"] = demo.GENERATOR_VERSION - 1
    (root / demo.MARKER).write_text(json.dumps(marker))
    (root / "images" / "extra.png").write_bytes(b"user data")  # not the generator's
    with pytest.raises(DataError, match="not a demo dataset this generator made"):
        read_dataset(root, format="demo")
    assert (root / "images" / "extra.png").exists()
    (root / "images" / "extra.png").unlink()
    read_dataset(root, format="demo")  # now only generator files: regenerated
    assert json.loads((root / demo.MARKER).read_text())["version"] == demo.GENERATOR_VERSION
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_spec_checks():
    with pytest.raises(ValueError, match="n_classes"):
        demo.DemoSpec(n_classes=1)


def test_more_classes_than_shapes(tmp_path):
    """Past len(SHAPES) classes (benchmarks at scale): distinct names and patterns, the first
    classes unchanged, and the clutter never draws a class's whole pattern."""
    wide = demo.DemoSpec(n_classes=demo.MAX_CLASSES, n_train=1, n_test=1, image_size=64)
    names = demo.class_names(wide)
    assert len(set(names)) == demo.MAX_CLASSES
    assert names[:len(demo.SHAPES)] == demo.class_names(demo.DemoSpec())
    patterns = {tuple(demo.class_pattern(c).values()) for c in range(demo.MAX_CLASSES)}
    assert len({p[:3] for p in patterns}) == demo.MAX_CLASSES
    rng = np.random.default_rng(0)
    drawn = {demo._clutter_item(rng, wide) for _ in range(2000)}
    assert not drawn & patterns
    with pytest.raises(ValueError, match="n_classes"):
        demo.DemoSpec(n_classes=demo.MAX_CLASSES + 1)
    m = read_csv(demo.make_demo(tmp_path / "w", spec=demo.DemoSpec(
        n_classes=20, n_train=1, n_test=1, image_size=48, n_clutter=(1, 2))))
    assert len(m.classes) == 20 and len(m) == 40
