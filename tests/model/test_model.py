"""A finished run as a portable model: exported, the cache deleted, loaded, and applied to
the run's own test images, it gives the run's predictions (scores bit for bit); the
``predict`` command on folders, CSV lists and bad images."""

import csv
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import partlearn
from partlearn.cli import main
from partlearn.model import PartlearnModel
from partlearn.model._run import run_pipeline
from partlearn.model._files import read_model, write_model

METHODS = ["global", "parts", "parts+global"]


@pytest.fixture(scope="module")
def tiny_run(tiny, tmp_path_factory):
    """A full run (no DP-Net) on the tiny dataset, its test scores and codes read from the
    cache, then its model exported and the cache deleted."""
    top = tmp_path_factory.mktemp("model")
    (tiny / "p.toml").write_text('name = "tiny"\n')
    pairs = [f"data.root={tiny / 'data'}", "data.format=folders", "data.min_train_per_class=1",
             "backbone.name=resnet18", f"backbone.weights={tiny / 'r18.pth'}",
             "features.short_side=64", "features.workers=0", "features.shard_size=3",
             "features.device=cpu", "regions.scales=[0.5, 0.8]", "parts.n_parts=2",
             "parts.min_images=2", "encoding.device=cpu", "classifier.n_bootstrap=100",
             f"classifier.methods={json.dumps(METHODS)}", "n_jobs=2"]
    argv = ["run", str(tiny / "p.toml"), *[x for p in pairs for x in ("--set", p)],
            "--cache-dir", str(top / "cache"), "--out", str(top / "run")]
    assert main(argv) == 0
    pipe = run_pipeline(top / "run")
    clf, data = pipe.load("classifier"), pipe.dataset
    scores = {m: np.array(clf.models[m]["test_scores"]) for m in METHODS}
    codes = np.array(pipe.load("encoding").codes)[data.test]
    stored = pipe.load("features")
    features = [(np.array(stored.image(i)), np.array(stored.global_[i])) for i in data.test]
    assert main(["export", str(top / "run"), str(top / "model")]) == 0
    shutil.rmtree(top / "cache")
    rows = list(csv.DictReader((top / "run" / "predictions.csv").open()))
    return {"top": top, "model": top / "model", "run": top / "run", "scores": scores,
            "codes": codes, "features": features, "rows": rows,
            "paths": [str(tiny / "data" / r["path"]) for r in rows]}


def test_exported_model_without_the_cache_predicts_the_runs_test_images(tiny_run):
    model = partlearn.load_model(tiny_run["model"], n_jobs=1)
    feats = model.features(tiny_run["paths"])
    assert len(tiny_run["rows"]) == 4
    for x, (regions, glob) in zip(feats, tiny_run["features"]):
        # the run's stored float16 rows, bit for bit, though the run extracted its images
        # in other batches (shards of 3 images, with the training images)
        np.testing.assert_array_equal(x.regions, regions)
        np.testing.assert_array_equal(x.global_, glob)
    for method in METHODS:
        # the run's scores, to float rounding: the encoder's products ran over the regions
        # of all 10 images there, of 4 here (BLAS may round another way, ~1e-11 here)
        np.testing.assert_allclose(model.scores_of(feats, method), tiny_run["scores"][method],
                                   rtol=1e-4, atol=1e-10)
        assert list(model.predict(tiny_run["paths"], method)) == \
            [r[method] for r in tiny_run["rows"]]
    np.testing.assert_allclose(model.transform(tiny_run["paths"]), tiny_run["codes"],
                               rtol=1e-4, atol=1e-5)  # signed square roots: ~2e-6 here
    assert model.method == "parts+global"  # the run's last method is the default


def test_pil_images_give_what_their_files_give(tiny_run):
    from PIL import Image

    model = partlearn.load_model(tiny_run["model"])
    assert isinstance(model, PartlearnModel)
    images = [Image.open(p) for p in tiny_run["paths"]]
    np.testing.assert_array_equal(model.decision_function(images),
                                  model.decision_function(tiny_run["paths"]))


def test_the_model_folder_holds_arrays_and_json_only(tiny_run):
    names = {p.suffix for p in tiny_run["model"].iterdir()}
    assert names == {".npy", ".json"}
    meta = json.loads((tiny_run["model"] / "model.json").read_text())
    assert meta["classes"] == ["Cat", "dog"]
    assert set(meta["methods"]) == set(METHODS)
    assert meta["backbone"]["sha256"].startswith("sha256:")
    assert {"partlearn", "numpy", "torch"} <= set(meta["versions"])
    assert meta["settings"]["features"]["short_side"] == 64


def test_predict_command_on_a_folder_a_csv_and_the_run_dir(tiny_run, tiny, capsys):
    out = tiny_run["top"] / "pred.csv"
    # the test folder (recursive), to a file, by the exported model
    assert main(["predict", str(tiny_run["model"]), str(tiny / "data" / "test"), "--out",
                 str(out), "--method", "parts", "--top-k", "2", "--boxes", "2"]) == 0
    rows = {Path(r["path"]).relative_to(tiny / "data").as_posix(): r
            for r in csv.DictReader(out.open())}
    assert {p: r["predicted"] for p, r in rows.items()} == \
        {r["path"]: r["parts"] for r in tiny_run["rows"]}
    for r in rows.values():
        assert r["top2"] != r["predicted"] and float(r["score2"]) <= float(r["score"])
        x0, y0, x1, y1 = map(float, r["part1_box"].split())
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64  # a region of the image
        assert r["part1"].startswith(r["predicted"] + "/part")  # the predicted class's part
    # a CSV list of paths (relative to the CSV) to stdout
    listing = tiny_run["top"] / "list.csv"
    listing.write_text("path\n" + "".join(f"{os.path.relpath(p, listing.parent)}\n"
                                          for p in tiny_run["paths"]))
    capsys.readouterr()
    assert main(["-q", "predict", str(tiny_run["model"]), str(listing)]) == 0
    got = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["predicted"] for r in got] == [r["parts+global"] for r in tiny_run["rows"]]


def test_bad_images_stop_or_are_skipped(tiny_run, capsys):
    bad = tiny_run["top"] / "bad.png"
    bad.write_bytes(b"not an image")
    args = ["-q", "predict", str(tiny_run["model"]), tiny_run["paths"][0], str(bad)]
    assert main(args) == 1
    assert "bad.png: truncated or corrupt" in capsys.readouterr().err
    assert main(args + ["--on-bad-image", "skip"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["predicted"] == tiny_run["rows"][0]["parts+global"] and not rows[0]["error"]
    assert rows[1]["predicted"] == "" and "truncated or corrupt" in rows[1]["error"]


def test_export_replaces_a_model_folder_whole(tiny_run, tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(tiny_run["model"], copy)
    (copy / "stale.npy").write_bytes(b"x")
    meta, arrays = read_model(tiny_run["model"])
    write_model(copy, {k: v for k, v in meta.items()
                                              if k not in ("files", "format")}, arrays)
    assert not (copy / "stale.npy").exists()
    assert not list(tmp_path.glob(".*"))  # no temporary folder left
