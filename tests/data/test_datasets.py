"""Readers, Manifest, the audit and the bad-image policy, on tiny layouts made in tmp_path."""

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from partlearn._validation import ConfigError, DataError
from partlearn.data import (Audit, Manifest, apply_bad_image_policy, audit_dataset,
                            audit_markdown, read_csv, read_cub, read_dataset, read_folders,
                            read_mit67)


def _img(path, w=40, h=36, seed=0, mode="RGB", **save):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(a).convert(mode).save(path, **save)
    return path


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _csv(root, rows, header="path,label,split"):
    _write(root / "labels.csv", header + "\n" + "".join(",".join(r) + "\n" for r in rows))


# --------------------------------------------------------------------------- CUB

def _cub(root, *, parts=True, boxes=True):
    """Classes 1..4 in classes.txt; images only of classes 2 and 4 (a class subset)."""
    images = [(3, "002.Bee/b1.jpg", 2, 1), (5, "002.Bee/b2.jpg", 2, 0),
              (8, "004.Owl/o1.jpg", 4, 1), (9, "004.Owl/o2.jpg", 4, 0)]
    _write(root / "images.txt", "".join(f"{i} {n}\n" for i, n, _, _ in images))
    _write(root / "image_class_labels.txt", "".join(f"{i} {c}\n" for i, _, c, _ in images)
           + "42 1\n")  # an image filtered out of images.txt: ignored
    _write(root / "train_test_split.txt", "".join(f"{i} {t}\n" for i, _, _, t in images))
    _write(root / "classes.txt", "1 001.Ant\n2 002.Bee\n3 003.Cat\n4 004.Owl\n")
    if boxes:
        _write(root / "bounding_boxes.txt",
               "".join(f"{i} {10 + k}.0 {20 + k}.5 30.0 40.0\n"
                       for k, (i, *_) in enumerate(images)))
    if parts:
        _write(root / "parts" / "parts.txt", "1 back\n2 left eye\n3 tail\n")
        _write(root / "parts" / "part_locs.txt", "".join(
            f"{i} {p} {p * 10 + k}.0 {p * 5}.0 {int(p != 2)}\n"
            for k, (i, *_) in enumerate(images) for p in (1, 2, 3)))
    return root


def test_read_cub(tmp_path):
    m = read_cub(_cub(tmp_path / "CUB_200_2011"))
    assert m.root == str(tmp_path / "CUB_200_2011")
    assert m.classes == ("002.Bee", "004.Owl")
    assert m.image_id == ("3", "5", "8", "9")
    assert m.path == ("images/002.Bee/b1.jpg", "images/002.Bee/b2.jpg", "images/004.Owl/o1.jpg",
                      "images/004.Owl/o2.jpg")
    assert m.label.tolist() == [0, 0, 1, 1] and m.label.dtype == np.int64
    assert m.split.tolist() == ["train", "test", "train", "test"] and m.split.dtype == "<U5"
    assert m.bbox.dtype == np.float32
    np.testing.assert_array_equal(m.bbox[0], [10.0, 20.5, 40.0, 60.5])  # x, y, w, h -> x0..y1
    np.testing.assert_array_equal(m.bbox[3], [13.0, 23.5, 43.0, 63.5])
    assert m.keypoint_names == ("back", "left eye", "tail")
    assert m.keypoints.shape == (4, 3, 3) and m.keypoints.dtype == np.float32
    np.testing.assert_array_equal(m.keypoints[1], [[11, 5, 1], [21, 10, 0], [31, 15, 1]])
    assert len(m) == 4


def test_read_cub_without_boxes_and_parts(tmp_path):
    m = read_cub(_cub(tmp_path, parts=False, boxes=False))
    assert m.bbox is None and m.keypoints is None and m.keypoint_names == ()


@pytest.mark.parametrize("file,line,text,match", [
    ("train_test_split.txt", 2, "5 2", r"train_test_split.txt, line 2: is_training_image '2' "
                                       r"should be 0 \(test\) or 1 \(train\)"),
    ("image_class_labels.txt", 3, "8 x", r"image_class_labels.txt, line 3: class_id 'x' is not "
                                         r"an integer"),
    ("image_class_labels.txt", 1, "3 7", r"image_class_labels.txt, line 1: class_id 7 is not in"),
    ("images.txt", 2, "5", r"images.txt, line 2: expected 2 columns '<image_id> <image_name>', "
                           r"got 1: '5'"),
    ("images.txt", 2, "3 002.Bee/other.jpg", r"images.txt, line 2: image_id 3 repeats line 1"),
    ("bounding_boxes.txt", 4, "9 1 2 -3 4", r"bounding_boxes.txt, line 4: width -3 and height 4"),
    ("bounding_boxes.txt", 1, "3 1 2 nan 4", r"bounding_boxes.txt, line 1: width 'nan' is not a "
                                             r"finite number"),
    ("parts/part_locs.txt", 2, "3 2 1 1 2", r"part_locs.txt, line 2: visible '2' should be 0 or 1"),
    ("parts/part_locs.txt", 2, "3 7 1 1 1", r"part_locs.txt, line 2: part_id 7 is not in"),
])
def test_read_cub_malformed_line(tmp_path, file, line, text, match):
    root = _cub(tmp_path)
    lines = (root / file).read_text().splitlines()
    lines[line - 1] = text
    (root / file).write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=match) as e:
        read_cub(root)
    assert str(root / file) in str(e.value)


def test_read_cub_missing_lines_and_files(tmp_path):
    root = _cub(tmp_path)
    (root / "train_test_split.txt").write_text("3 1\n5 0\n8 1\n")
    with pytest.raises(DataError, match=r"train_test_split.txt has no line for image_id 9 "
                                        r"\(listed in .*images.txt, line 4\)"):
        read_cub(root)
    (root / "train_test_split.txt").unlink()
    with pytest.raises(DataError, match="train_test_split.txt is missing"):
        read_cub(root)
    root = _cub(tmp_path / "b")
    (root / "parts" / "part_locs.txt").write_text("3 1 1 1 1\n")
    with pytest.raises(DataError, match="part_locs.txt has no line for image_id 3 part_id 2"):
        read_cub(root)


def test_read_dataset_class_subset(tmp_path):
    root = _cub(tmp_path)
    m = read_dataset(root, classes=["owl"])  # case-insensitive, "004." prefix optional
    assert m.classes == ("004.Owl",) and m.label.tolist() == [0, 0]
    assert m.image_id == ("8", "9") and m.bbox.shape == (2, 4) and m.keypoints.shape == (2, 3, 3)
    m = read_dataset(root, format="cub", classes=("004.OWL", "002.bee"))
    assert m.classes == ("002.Bee", "004.Owl")  # the dataset's order, not the order asked
    assert m.label.tolist() == [0, 0, 1, 1]
    with pytest.raises(DataError, match=r"unknown class 'Bea' \(did you mean 'Bee'\?\)"):
        read_dataset(root, classes=["Bea"])
    with pytest.raises(DataError, match="unknown class 'Cat'"):  # in classes.txt, no images
        read_dataset(root, classes=["Cat"])


# --------------------------------------------------------------------------- MIT-67

def test_read_mit67(tmp_path):
    _write(tmp_path / "TrainImages.txt", "kitchen/k1.jpg\nbar/b 1.jpg\r\nkitchen/k2.jpg\n")
    _write(tmp_path / "TestImages.txt", "bar/b2.jpg\n\nkitchen/k3.jpg\n")
    m = read_dataset(tmp_path)
    assert m.classes == ("bar", "kitchen")
    assert m.path == ("Images/kitchen/k1.jpg", "Images/bar/b 1.jpg", "Images/kitchen/k2.jpg",
                      "Images/bar/b2.jpg", "Images/kitchen/k3.jpg")
    assert m.image_id == m.path
    assert m.label.tolist() == [1, 0, 1, 0, 1]
    assert m.split.tolist() == ["train"] * 3 + ["test"] * 2
    assert read_mit67(tmp_path) == m


def test_read_mit67_malformed(tmp_path):
    _write(tmp_path / "TrainImages.txt", "kitchen/k1.jpg\nk2.jpg\n")
    _write(tmp_path / "TestImages.txt", "bar/b2.jpg\n")
    with pytest.raises(DataError, match=r"TrainImages.txt, line 2: 'k2.jpg' is not of the form "
                                        r"'<class>/<file>'"):
        read_mit67(tmp_path)
    _write(tmp_path / "TrainImages.txt", "kitchen/k1.jpg\n")
    _write(tmp_path / "TestImages.txt", "bar/b2.jpg\nkitchen/k1.jpg\n")
    with pytest.raises(DataError, match=r"TestImages.txt, line 2: 'kitchen/k1.jpg' is already "
                                        r"listed in TrainImages.txt, line 1"):
        read_mit67(tmp_path)


# --------------------------------------------------------------------------- CSV

def test_read_csv(tmp_path):
    _csv(tmp_path, [("b/1.jpg", "cat", "train", "", "x"), ("./a/2.jpg", "Ant", "test", "", "y"),
                    ("b/3.jpg", "cat", "test", "", "z")], header="path,label,split,md5,note")
    m = read_dataset(tmp_path)
    assert m.classes == ("Ant", "cat")
    assert m.path == ("b/1.jpg", "a/2.jpg", "b/3.jpg") and m.image_id == m.path
    assert m.label.tolist() == [1, 0, 1]
    assert m.split.tolist() == ["train", "test", "test"]
    assert m.md5 == ("", "", "")
    assert read_csv(tmp_path) == m


def test_read_csv_other_name_integer_labels(tmp_path):
    _write(tmp_path / "my.csv", "split,label,path\ntrain,10,x.png\ntest,2,y.png\ntrain,2,z.png\n")
    m = read_dataset(tmp_path, csv="my.csv")
    assert m.classes == ("2", "10") and m.label.tolist() == [1, 0, 0] and m.md5 == ()


@pytest.mark.parametrize("body,match", [
    ("path,label,split\na.jpg,cat,train\nb.jpg,cat,validation\n",
     r"labels.csv, line 3: split 'validation' should be 'train' or 'test'"),
    ("path,label,split\na.jpg,cat,Train\n", r"line 2: split 'Train' .* \(did you mean 'train'\?\)"),
    ("path,lable,split\na.jpg,cat,train\n", r"labels.csv, line 1: .* lacks column\(s\) label.*"
                                            r"did you mean 'lable'"),
    ("path,label,split\na.jpg,cat,train\na.jpg,dog,test\n",
     r"line 3: path 'a.jpg' is already listed on line 2"),
    ("path,label,split\na.jpg,cat\n", r"line 2: 2 fields, expected 3"),
    ("path,label,split\n/abs/a.jpg,cat,train\n", r"line 2: path '/abs/a.jpg' is absolute"),
    ("path,label,split\na.jpg,,train\n", r"line 2: empty label"),
    ("path,label,split,md5\na.jpg,cat,train,abc\n", r"line 2: md5 'abc' is not 32 hex digits"),
])
def test_read_csv_malformed(tmp_path, body, match):
    _write(tmp_path / "labels.csv", body)
    with pytest.raises(DataError, match=match) as e:
        read_csv(tmp_path)
    assert str(tmp_path / "labels.csv") in str(e.value)


# --------------------------------------------------------------------------- folders

def test_read_folders_merges_case(tmp_path, caplog):
    for p in ["train/Coast/a.jpg", "train/coast/b.jpg", "train/bedroom/c.jpg",
              "test/COAST/d.jpg", "test/bedroom/e.JPG", "test/Zoo/f.png"]:
        _write(tmp_path / p, "")
    _write(tmp_path / "train/bedroom/notes.txt", "")
    _write(tmp_path / "train/bedroom/.DS_Store", "")
    with caplog.at_level(logging.WARNING, logger="partlearn.data"):
        m = read_dataset(tmp_path)
    assert m.classes == ("bedroom", "coast", "Zoo")
    assert m.path == ("train/bedroom/c.jpg", "train/Coast/a.jpg", "train/coast/b.jpg",
                      "test/bedroom/e.JPG", "test/COAST/d.jpg", "test/Zoo/f.png")
    assert m.label.tolist() == [0, 1, 1, 0, 1, 2]
    assert m.split.tolist() == ["train"] * 3 + ["test"] * 3
    merged = [r.getMessage() for r in caplog.records if "differ only in case" in r.getMessage()]
    assert len(merged) == 1
    assert "test/COAST + train/Coast + train/coast -> 'coast'" in merged[0]
    ignored = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(ignored) == 1 and "train/bedroom/notes.txt" in ignored[0]
    assert ".DS_Store" not in ignored[0]
    assert read_folders(tmp_path) == m


# --------------------------------------------------------------------------- the name rule

def test_every_reader_folds_case_the_same_way(tmp_path, caplog):
    """One rule: class names are case-insensitive; names that differ only in case are one
    class (lower case), with a warning; ``data.classes`` can then never pick the wrong one."""
    _csv(tmp_path / "csv", [("a.jpg", "Cat", "train"), ("b.jpg", "cat", "train"),
                            ("c.jpg", "dog", "test"), ("d.jpg", "CAT", "test")])
    with caplog.at_level(logging.WARNING, logger="partlearn.data"):
        m = read_csv(tmp_path / "csv")
    assert m.classes == ("cat", "dog") and m.label.tolist() == [0, 0, 1, 0]
    merged = [r.getMessage() for r in caplog.records if "differ only in case" in r.getMessage()]
    assert len(merged) == 1 and "'CAT' (1) + 'Cat' (1) + 'cat' (1) -> 'cat'" in merged[0]
    assert read_dataset(tmp_path / "csv", classes=["CAT"]).label.tolist() == [0, 0, 0]
    for split, name in (("TrainImages.txt", "Kitchen/a.jpg\nbar/b.jpg\n"),
                        ("TestImages.txt", "kitchen/c.jpg\nbar/d.jpg\n")):
        _write(tmp_path / "mit" / split, name)
    assert read_mit67(tmp_path / "mit").classes == ("bar", "kitchen")
    root = _cub(tmp_path / "cub")
    _write(root / "classes.txt", "1 001.Ant\n2 Bee\n3 003.Cat\n4 bee\n")
    m = read_cub(root)
    assert m.classes == ("bee",) and m.label.tolist() == [0, 0, 0, 0]


def test_a_short_name_matching_two_classes_is_an_error(tmp_path):
    root = _cub(tmp_path)
    _write(root / "classes.txt", "1 001.Ant\n2 002.Owl\n3 003.Cat\n4 004.Owl\n")
    with pytest.raises(DataError, match=r"'owl' matches 2 classes .*: 002.Owl, 004.Owl; "
                                        "class names are compared case-insensitively"):
        read_dataset(root, classes=["owl"])
    assert read_dataset(root, classes=["004.OWL"]).classes == ("004.Owl",)


# --------------------------------------------------------------------------- the box policy

def test_boxes_outside_their_image_are_clipped_and_empty_ones_rejected(tmp_path, caplog):
    from partlearn.data import clip_boxes

    root = _cub(tmp_path / "a")
    _write(root / "bounding_boxes.txt", "3 0 0 0 10\n5 1 1 5 5\n8 1 1 5 5\n9 1 1 5 5\n")
    with pytest.raises(DataError, match=r"bounding_boxes.txt, line 1: width 0 and height 10 "
                                        r"should be > 0 \(a box with no area\)"):
        read_cub(root)
    _write(root / "bounding_boxes.txt", "3 -5 2 50 10\n5 1 1 5 5\n8 1 1 5 5\n9 1 1 5 5\n")
    m = read_cub(root)
    size = np.array([40, 40, 40, 40]), np.array([36, 36, 36, 36])
    with caplog.at_level(logging.WARNING, logger="partlearn.data"):
        clipped = clip_boxes(m, *size)
    assert clipped.bbox[0].tolist() == [0, 2, 40, 12] and (clipped.bbox[1:] == m.bbox[1:]).all()
    assert any("1 annotation box(es) stick out" in r.getMessage() for r in caplog.records)
    assert clip_boxes(clipped, *size) is clipped  # nothing left to clip: no warning
    _write(root / "bounding_boxes.txt", "3 45 2 5 10\n5 1 1 5 5\n8 1 1 5 5\n9 1 1 5 5\n")
    with pytest.raises(DataError, match=r"b1.jpg: the box \[45.0, 2.0, 50.0, 12.0\] .* of "
                                        r"image 3 has no area inside its 40x36 px image"):
        clip_boxes(read_cub(root), *size)


def test_read_folders_needs_both_splits(tmp_path):
    _write(tmp_path / "train/a/x.jpg", "")
    with pytest.raises(DataError, match="test is missing"):
        read_folders(tmp_path)


# --------------------------------------------------------------------------- read_dataset

def test_read_dataset_detection_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_dataset(tmp_path / "nope")
    with pytest.raises(DataError, match=r"looked for images.txt \+ image_class_labels.txt "
                                        r"\(cub\), TrainImages.txt \(mit67\), jpg/ \+ gnd_\*.json "
                                            r"\(revisitop\), labels.csv \(csv\)"
                                        r", train/ and test/ folders \(folders\)"):
        read_dataset(tmp_path)
    _cub(tmp_path / "CUB_200_2011")
    with pytest.raises(DataError, match=r"CUB_200_2011 looks like a dataset: set data.root to it"):
        read_dataset(tmp_path)
    with pytest.raises(ConfigError, match="data.format='cubb'.*did you mean 'cub'"):
        read_dataset(tmp_path, format="cubb")


def test_detection_order_csv_before_folders(tmp_path):
    _write(tmp_path / "train/a/x.jpg", "")
    _write(tmp_path / "test/a/y.jpg", "")
    _csv(tmp_path, [("train/a/x.jpg", "a", "train")])
    assert len(read_dataset(tmp_path)) == 1
    assert len(read_dataset(tmp_path, format="folders")) == 2


# --------------------------------------------------------------------------- Manifest

def _manifest(tmp_path):
    return read_cub(_cub(tmp_path))


def test_manifest_round_trip(tmp_path):
    m = _manifest(tmp_path)
    d = json.loads(json.dumps(m.to_dict()))
    back = Manifest.from_dict(d)
    assert back == m
    assert back.bbox.dtype == np.float32 and back.split.dtype == "<U5"
    np.testing.assert_array_equal(back.keypoints, m.keypoints)
    m2 = Manifest(root="/r", classes=("a",), image_id=("x",), path=("x",), label=np.array([0]),
                  split=np.array(["test"]), md5=("0" * 32,))
    assert Manifest.from_dict(json.loads(json.dumps(m2.to_dict()))) == m2
    empty = m.subset(np.zeros(len(m), bool))
    assert Manifest.from_dict(json.loads(json.dumps(empty.to_dict()))) == empty
    with pytest.raises(DataError, match="missing keys"):
        Manifest.from_dict({"root": "/r"})


def test_manifest_subset(tmp_path):
    m = _manifest(tmp_path)
    s = m.subset(np.array([3, 0]))
    assert s.image_id == ("9", "3") and s.label.tolist() == [1, 0] and s.classes == m.classes
    np.testing.assert_array_equal(s.bbox, m.bbox[[3, 0]])
    np.testing.assert_array_equal(s.keypoints, m.keypoints[[3, 0]])
    t = m.subset(m.split == "train")
    assert t.image_id == ("3", "8") and len(t) == 2
    assert len(m.subset([])) == 0
    with pytest.raises(ValueError, match="boolean mask"):
        m.subset(np.ones(3, bool))
    with pytest.raises(ValueError, match="split"):
        Manifest(root="/r", classes=("a",), image_id=("x",), path=("x",), label=[0],
                 split=["valid"])
    with pytest.raises(ValueError, match="out of range"):
        Manifest(root="/r", classes=("a",), image_id=("x",), path=("x",), label=[1],
                 split=["test"])


# --------------------------------------------------------------------------- audit

def _exif6(path):
    exif = Image.Exif()
    exif[0x0112] = 6
    return _img(path, w=48, h=40, seed=7, exif=exif.tobytes())


@pytest.fixture
def messy(tmp_path):
    """A CSV dataset with good, converted, rotated and every kind of bad image."""
    root = tmp_path / "messy"
    _img(root / "a/good1.jpg", seed=1)
    _img(root / "a/good2.png", seed=2)
    _img(root / "b/good3.jpg", seed=3)
    _img(root / "b/gray.png", seed=4, mode="L")
    _img(root / "b/cmyk.jpg", seed=5, mode="CMYK")
    _img(root / "a/pal.png", seed=6, mode="P", transparency=0)
    _exif6(root / "a/rotated.jpg")
    _img(root / "a/small.png", w=7, h=5)
    (root / "b/empty.jpg").write_bytes(b"")
    (root / "b/junk.jpg").write_bytes(b"not an image at all" * 20)
    trunc = _img(root / "a/trunc.jpg", w=64, h=64, seed=8)
    trunc.write_bytes(trunc.read_bytes()[: trunc.stat().st_size // 2])
    good3_md5 = hashlib.md5((root / "b/good3.jpg").read_bytes()).hexdigest()
    _csv(root, [
        ("a/good1.jpg", "a", "train", ""), ("a/good2.png", "a", "train", ""),
        ("b/good3.jpg", "b", "train", good3_md5), ("b/gray.png", "b", "train", ""),
        ("b/cmyk.jpg", "b", "test", ""), ("a/pal.png", "a", "test", "0" * 32),  # md5 wrong
        ("a/rotated.jpg", "a", "test", ""), ("a/small.png", "a", "train", ""),
        ("b/empty.jpg", "b", "test", ""), ("b/junk.jpg", "b", "test", ""),
        ("a/trunc.jpg", "a", "test", ""), ("a/missing.jpg", "a", "test", ""),
    ], header="path,label,split,md5")
    return read_dataset(root)


BAD = {
    "a/pal.png": "md5 mismatch",
    "a/small.png": "7x5 px is smaller than data.min_side=32",
    "b/empty.jpg": "zero bytes",
    "b/junk.jpg": "truncated or corrupt: cannot identify image file",
    "a/trunc.jpg": "truncated or corrupt: image file is truncated",
    "a/missing.jpg": "missing",
}


def test_audit_finds_every_bad_image(messy):
    audit = audit_dataset(messy, min_side=32, min_train_per_class=1)
    r = audit.report
    assert {e["path"] for e in r["bad"]} == set(BAD)
    for e in r["bad"]:
        assert e["reason"].startswith(BAD[e["path"]]), e
    assert audit.bad.tolist() == [p in BAD for p in messy.path]
    assert [e["path"] for e in r["bad"]] == [p for p in messy.path if p in BAD]  # manifest order
    assert r["md5_mismatch"] == [{"path": "a/pal.png", "expected": "0" * 32,
                                  "actual": hashlib.md5(Path(messy.filepath(5)).read_bytes()
                                                        ).hexdigest()}]
    assert sorted((e["path"], e["from_mode"]) for e in r["converted"]) == [
        ("b/cmyk.jpg", "CMYK"), ("b/gray.png", "L")]
    assert r["exif_rotated"] == ["a/rotated.jpg"]
    i = messy.path.index("a/rotated.jpg")
    assert (audit.width[i], audit.height[i]) == (40, 48)  # after the transpose
    j = messy.path.index("a/good1.jpg")
    assert (audit.width[j], audit.height[j]) == (40, 36)
    assert (audit.width[audit.bad] == 0).all() and (audit.height[audit.bad] == 0).all()
    assert audit.width.dtype == np.int64 and audit.bad.dtype == bool
    assert r["n_images"] == 12 and r["n_classes"] == 2
    assert r["counts"] == {"a": {"train": 3, "test": 4}, "b": {"train": 2, "test": 3}}
    assert r["duplicates_across_splits"] == [] and r["conflicting_labels"] == []
    json.dumps(r)


def test_bad_image_policy_error_names_every_file(messy):
    audit = audit_dataset(messy)
    with pytest.raises(DataError) as e:
        apply_bad_image_policy(messy, audit, "error")
    msg = str(e.value)
    assert "\n" not in msg
    for path, reason in BAD.items():
        assert path in msg and reason in msg
    assert 'data.on_bad_image="skip"' in msg and msg.startswith("6 bad image(s)")
    with pytest.raises(ConfigError, match="data.on_bad_image"):
        apply_bad_image_policy(messy, audit, "ignore")


def test_bad_image_policy_skip(messy, caplog):
    audit = audit_dataset(messy)
    with caplog.at_level(logging.WARNING, logger="partlearn.data"):
        kept, index = apply_bad_image_policy(messy, audit, "skip")
    assert len(kept) == 6 and kept.path == tuple(p for p in messy.path if p not in BAD)
    np.testing.assert_array_equal(index, np.flatnonzero(~audit.bad))
    assert kept.classes == messy.classes and kept.md5 == tuple(messy.md5[i] for i in index)
    warned = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(warned) == 1 and all(p in warned[0] for p in BAD)
    assert {e["path"] for e in audit.report["skipped"]} == set(BAD)
    assert audit.report["n_images_kept"] == 6
    md = audit_markdown(audit.report)
    assert "## Skipped images (6)" in md and "a/missing.jpg" in md


def test_no_bad_images_leaves_manifest_unchanged(tmp_path):
    for k in range(3):
        _img(tmp_path / f"train/a/{k}.png", seed=k)
    _img(tmp_path / "test/a/t.png", seed=9)
    m = read_dataset(tmp_path)
    audit = audit_dataset(m, min_train_per_class=1)
    for policy in ("error", "skip"):
        kept, index = apply_bad_image_policy(m, audit, policy)
        assert kept is m and index.tolist() == [0, 1, 2, 3]
    assert "skipped" not in audit.report


def test_apply_policy_with_audit_built_by_hand(messy):
    full = audit_dataset(messy)
    audit = Audit(report=full.report, width=full.width, height=full.height, bad=full.bad)
    with pytest.raises(DataError, match="a/missing.jpg \\(missing\\)"):
        apply_bad_image_policy(messy, audit, "error")


def test_duplicates_and_conflicting_labels(tmp_path, caplog):
    root = tmp_path / "dups"
    a = _img(root / "train/x/a.png", seed=1)
    b = _img(root / "train/x/b.png", seed=2)
    _img(root / "train/y/c.png", seed=3)
    _img(root / "test/y/other.png", seed=4)
    for src, dst in [(a, "test/x/a_copy.png"),   # across splits, same label
                     (b, "test/y/b_copy.png"),   # across splits, different label
                     (b, "train/y/b_copy2.png"),  # same group: within train, different label
                     (a, "train/x/a_copy2.png")]:  # same group as a: within train
        (root / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / dst)
    _img(root / "test/y/d.png", seed=5)
    shutil.copy(root / "test/y/d.png", root / "test/y/d_copy.png")  # within test only
    m = read_dataset(root)
    with caplog.at_level(logging.WARNING, logger="partlearn.data"):
        r = audit_dataset(m, min_train_per_class=1, n_jobs=2).report
    md5 = lambda p: hashlib.md5(p.read_bytes()).hexdigest()  # noqa: E731
    across = {e["md5"]: e for e in r["duplicates_across_splits"]}
    assert set(across) == {md5(a), md5(b)}
    assert across[md5(a)] == {"md5": md5(a),
                              "paths": ["train/x/a.png", "train/x/a_copy2.png",
                                        "test/x/a_copy.png"],
                              "splits": ["train", "train", "test"], "labels": ["x", "x", "x"]}
    assert across[md5(b)]["labels"] == ["x", "y", "y"]
    assert r["conflicting_labels"] == [{"md5": md5(b), "paths": ["train/x/b.png",
                                        "train/y/b_copy2.png", "test/y/b_copy.png"],
                                        "labels": ["x", "y", "y"]}]
    assert r["duplicate_groups"] == 3
    assert r["duplicates_within_split"] == 3  # a (train), b (train), d (test)
    messages = " ".join(rec.getMessage() for rec in caplog.records)
    assert "2 groups of byte-identical images are in both train and test" in messages
    assert "1 groups of byte-identical images have different labels" in messages


def test_few_train_images_warned(tmp_path, caplog):
    for k in range(3):
        _img(tmp_path / f"train/many/{k}.png", seed=k)
    _img(tmp_path / "train/few/0.png", seed=10)
    (tmp_path / "train/few/1.png").write_bytes(b"")  # bad: does not count
    _img(tmp_path / "test/few/0.png", seed=11)
    _img(tmp_path / "test/none/0.png", seed=12)
    m = read_dataset(tmp_path)
    with caplog.at_level(logging.WARNING, logger="partlearn.data"):
        r = audit_dataset(m, min_train_per_class=3).report
    assert r["few_train"] == [{"class": "few", "n_train": 1}, {"class": "none", "n_train": 0}]
    assert r["counts"]["few"] == {"train": 2, "test": 1}
    assert any("fewer than data.min_train_per_class=3" in rec.getMessage() and "few (1)" in
               rec.getMessage() for rec in caplog.records)


def test_audit_threads_match_serial(messy):
    one, two = audit_dataset(messy, n_jobs=1), audit_dataset(messy, n_jobs=2)
    assert one.report == two.report
    np.testing.assert_array_equal(one.width, two.width)
    np.testing.assert_array_equal(one.bad, two.bad)


def test_audit_markdown(messy):
    md = audit_markdown(audit_dataset(messy).report)
    assert md.startswith("# Dataset audit: ")
    assert "| class | train | test |" in md and "| a | 3 | 4 |" in md and "| b | 2 | 3 |" in md
    assert "## Bad images (6)" in md
    assert "| a/small.png | 7x5 px is smaller than data.min_side=32 |" in md
    assert "## Converted to RGB (2)" in md and "| b/gray.png | L |" in md
    assert "## EXIF-rotated (1)" in md and "## MD5 mismatches (1)" in md
    assert "## Byte-identical images across train and test (0)" in md


# --------------------------------------------------------------------------- shared data

@pytest.mark.realdata
def test_scene15(shared_data):
    m = read_dataset(shared_data / "scene15")
    assert len(m) == 4485 and len(m.classes) == 15
    assert (m.split == "train").sum() == 1500 and (m.split == "test").sum() == 2985
    assert np.bincount(m.label[m.split == "train"]).tolist() == [100] * 15
    assert len(m.md5) == 4485 and all(m.md5)
    folders = read_dataset(shared_data / "scene15", format="folders")
    assert folders.classes == m.classes and sorted(folders.path) == sorted(m.path)
    csv_label = dict(zip(m.path, m.label.tolist()))
    assert [csv_label[p] for p in folders.path] == folders.label.tolist()
    audit = audit_dataset(m, n_jobs=2)
    r = audit.report
    assert r["bad"] == [] and r["md5_mismatch"] == []
    # the data README: 18 groups of byte-identical images, 11 across train and test,
    # one with two different labels
    assert r["duplicate_groups"] == 18
    assert len(r["duplicates_across_splits"]) == 11
    assert len(r["conflicting_labels"]) == 1
    assert len(set(r["conflicting_labels"][0]["labels"])) == 2
    assert r["duplicates_within_split"] == 7
    assert set(audit.width.tolist()) == {200} and set(audit.height.tolist()) == {200}


@pytest.mark.realdata
def test_cub_subset(shared_data):
    m = read_dataset(shared_data / "cub200_c001-020" / "CUB_200_2011")
    assert len(m) == 1115 and len(m.classes) == 20
    assert (m.split == "train").sum() == 600 and (m.split == "test").sum() == 515
    assert m.classes[0] == "001.Black_footed_Albatross" and m.image_id[0] == "1"
    assert m.bbox.shape == (1115, 4) and (m.bbox[:, 2:] > m.bbox[:, :2]).all()
    assert m.keypoints.shape == (1115, 15, 3) and len(m.keypoint_names) == 15
    assert set(np.unique(m.keypoints[..., 2]).tolist()) == {0.0, 1.0}
    audit = audit_dataset(m, n_jobs=2)
    assert audit.report["bad"] == [] and audit.report["duplicate_groups"] == 0
    # two official boxes overhang their image by a few pixels (annotation noise, kept as given)
    inside = (m.bbox[:, 2] <= audit.width + 8) & (m.bbox[:, 3] <= audit.height + 8)
    assert inside.all() and (m.bbox[:, :2] >= 0).all()
