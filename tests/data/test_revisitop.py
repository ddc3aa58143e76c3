"""The revisited-Oxford layout: its reader, its bad inputs, and a retrieval-only run
whose queries are cropped to their box and scored by the instance protocols."""

import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from partlearn import Pipeline
from partlearn.cli import main
from partlearn.config import dump_toml, load_config
from partlearn.data import read_dataset
from partlearn.retrieval import instance_map
from partlearn._validation import DataError

BOX = [16, 12, 80, 60]  # the first query's box in its 96x72 image: a 64x48 crop


def _layout(root, gnd=None, qbox=BOX):
    """8 database images (``db0`` is the first query's crop, saved as its own file), 2
    queries; ``gnd`` overrides the ground truth."""
    rng = np.random.default_rng(0)
    (root / "jpg").mkdir(parents=True, exist_ok=True)
    big = rng.integers(0, 255, (72, 96, 3), dtype=np.uint8)
    x1, y1, x2, y2 = BOX
    images = {"q0": big, "db0": big[y1:y2, x1:x2]}
    for i in range(1, 8):
        images[f"db{i}"] = rng.integers(0, 255, (48, 64, 3) if i % 2 else (64, 48, 3),
                                        dtype=np.uint8)
    images["q1"] = images["db3"][::-1].copy()
    for name, pixels in images.items():  # PNG bytes under .jpg: the reader asks for .jpg
        Image.fromarray(pixels).save(root / "jpg" / f"{name}.jpg", format="PNG")
    truth = gnd or [{"bbx": qbox, "easy": [0], "hard": [5], "junk": [6]},
                    {"bbx": [0, 0, 64, 48], "easy": [], "hard": [3], "junk": []}]
    (root / "gnd_tiny.json").write_text(json.dumps(
        {"imlist": [f"db{i}" for i in range(8)], "qimlist": ["q0", "q1"], "gnd": truth}))
    return root


def test_reader_splits_crops_and_ground_truth(tmp_path):
    m = read_dataset(_layout(tmp_path))  # detected
    assert m.split.tolist() == ["train"] * 8 + ["test"] * 2
    assert m.classes == ("tiny",) and m.label.tolist() == [0] * 10
    assert np.isnan(m.crop[:8]).all() and m.crop[8].tolist() == BOX
    assert m.gnd["q:q0"] == {"easy": ("db0",), "hard": ("db5",), "junk": ("db6",)}
    assert m.subset([0, 5, 8]).gnd == {"q:q0": m.gnd["q:q0"]}  # kept queries only


@pytest.mark.parametrize("gnd, message", [
    ([{"bbx": BOX, "easy": [8], "hard": [], "junk": []}, {"bbx": BOX}],
     "index 8 is out of range; imlist has 8 images"),
    ([{"bbx": BOX, "easy": [0]}], "one entry per query of qimlist (2), got 1"),
    ([{"bbx": BOX, "easy": [0]}, {"bbx": BOX}, {"bbx": BOX}], "of qimlist (2), got 3"),
    ([{"bbx": [5, 5, 2, 9], "easy": [0]}, {"bbx": BOX}], "should have 0 <= x1 < x2"),
    ([{"bbx": BOX, "easy": [0], "junk": [0]}, {"bbx": BOX}], "more than once"),
    ([{"easy": [0]}, {"bbx": BOX}], "should be an object with bbx"),
])
def test_bad_ground_truth_is_a_clear_error(tmp_path, gnd, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_dataset(_layout(tmp_path, gnd), format="revisitop")


def test_missing_query_image_is_named(tmp_path):
    _layout(tmp_path)
    (tmp_path / "jpg" / "q1.jpg").unlink()
    with pytest.raises(DataError, match=r"q1\.jpg is missing; gnd_tiny\.json lists it"):
        read_dataset(tmp_path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rox")
    _layout(root / "data")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), root / "r18.pth")
    base = [f"data.root={root / 'data'}", "data.format=revisitop", "data.min_train_per_class=1",
            "backbone.name=resnet18", f"backbone.weights={root / 'r18.pth'}",
            "features.short_side=64", "features.workers=0", "regions.scales=[0.5, 0.8]",
            'features.pools=["mac", "gem"]', "classifier.methods=[]", "parts.n_parts=2",
            "parts.min_images=1", "groups.n_groups=2", "groups.min_images=1",
            'retrieval.descriptors=["mac", "global", "parts[unsup]+w", "parts[unsup]+mac"]',
            'retrieval.ks=[1, 2]', 'retrieval.rerank=["none", "aqe", "diffusion"]',
            "retrieval.diffusion_k=3", "retrieval.qe_neighbours=2"]
    return root, base


def test_retrieval_only_run_crops_queries_and_scores_both_protocols(run):
    root, base = run
    cfg = load_config(None, base)
    pipe = Pipeline(cfg, cache_dir=root / "cache")
    summary = pipe.run(out=root / "out")
    assert "classifier" not in summary["stages"] and summary["methods"] == {}
    assert {"groups", "parts_unsup", "encoding_unsup", "descriptors"} <= set(summary["stages"])
    data, desc = pipe.load("dataset"), pipe.load("descriptors")
    assert (data.width[8], data.height[8]) == (64, 48)  # the crop's size, not the image's
    # the query saw exactly its box: its map is that of db0, the same pixels in a file
    np.testing.assert_array_equal(np.asarray(desc["mac"][8]), np.asarray(desc["mac"][0]))
    r = summary["retrieval"]
    assert r["protocol"] == "instance level" and r["queries"] == ["q:q0", "q:q1"]
    rows = {(x["descriptor"], x["rerank"]): x for x in r["rows"]}
    assert set(rows) == {(d, k) for d in cfg.retrieval.descriptors for k in cfg.retrieval.rerank}
    mac = np.asarray(desc["mac"], np.float32)
    ranks = np.argsort(-(mac[8:] @ mac[:8].T), axis=1, kind="stable")
    gnd = [{"easy": [0], "hard": [5], "junk": [6]}, {"easy": [], "hard": [3], "junk": []}]
    for p in ("medium", "hard"):
        want = instance_map(ranks, gnd, p, kappas=(1, 2))
        assert rows[("mac", "none")]["ap"][p] == want["ap"] and \
            rows[("mac", "none")]["map"][p] == want["map"]
    assert ranks[0, 0] == 0  # db0, the same pixels, comes first
    text = (root / "out" / "results.md").read_text()
    assert "| q:q0 |" in text and "mAP Hard" in text
    assert r["examples"]["figure"] in summary["figures"]
    assert (root / "out" / r["examples"]["figure"]).is_file()


def test_query_box_outside_its_image_stops_at_the_dataset_stage(run, tmp_path, capsys):
    root, base = run
    _layout(tmp_path / "data", qbox=[16, 12, 120, 60])  # the image is 96 wide
    (tmp_path / "p.toml").write_text(dump_toml(load_config(None, base)))
    code = main(["run", str(tmp_path / "p.toml"), "--cache-dir", str(tmp_path / "cache"),
                 "--out", str(tmp_path / "o"), "--set", f"data.root={tmp_path / 'data'}"])
    err = capsys.readouterr().err
    assert code == 1 and "crop box [16.0, 12.0, 120.0, 60.0] of q:q0 is not inside its 96x72" \
        in err and "Traceback" not in err
    assert not (tmp_path / "cache" / "features").exists()  # nothing expensive ran
