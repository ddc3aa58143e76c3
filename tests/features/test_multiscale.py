"""Region features from an image pyramid: the scale rule, and the ``multiscale`` stage whose
extra scales are the ``features`` stage at other short sides, each its own cache entry."""

import numpy as np
import pytest

from partlearn import Pipeline
from partlearn.features import multiscale
from partlearn._validation import ConfigError
from partlearn.cli import main
from partlearn.config import load_config


def test_each_window_from_the_scale_that_shows_it_nearest_the_target():
    short = 400.0  # an 600 x 400 image; windows as fractions of its short side
    boxes = np.array([[0, 0, 100, 100],    # 0.25: 112 px at 448, 168 at 672 -> 672
                      [0, 0, 140, 140],    # 0.35: 157 / 235 -> 672
                      [0, 0, 200, 200],    # 0.5: 224 / 336 -> 448
                      [0, 0, 600, 400]], np.float32)  # the image: 549 / 823 -> 448
    assert multiscale.nearest_scale(boxes, short, [448, 672], 224).tolist() == [1, 1, 0, 0]
    # the order of the scales is the caller's; a larger target moves windows up
    assert multiscale.nearest_scale(boxes, short, [672, 448], 224).tolist() == [0, 0, 1, 1]
    assert multiscale.nearest_scale(boxes, short, [448, 672], 400).tolist() == [1, 1, 1, 0]
    np.testing.assert_allclose(multiscale.window_px(boxes[:1], short, 448), [112])


def test_combine_takes_the_chosen_rows_or_the_renormalised_mean():
    rng = np.random.default_rng(0)
    rows = [rng.normal(size=(5, 8)).astype(np.float16) for _ in range(3)]
    choice = np.array([0, 2, 1, 1, 0])
    out = multiscale.combine(rows, choice)
    for r, k in enumerate(choice):
        np.testing.assert_array_equal(out[r], rows[k][r].astype(np.float32))
    mean = multiscale.combine(rows, None)
    np.testing.assert_allclose(np.linalg.norm(mean, axis=1), 1, rtol=1e-6)
    direction = np.mean([r.astype(np.float32) for r in rows], axis=0)
    np.testing.assert_allclose(mean * np.linalg.norm(direction, axis=1, keepdims=True),
                               direction, rtol=1e-5)


def sets(tiny, *extra):
    return [f"data.root={tiny / 'data'}", "data.format=folders", "data.min_train_per_class=1",
            "backbone.name=resnet18", f"backbone.weights={tiny / 'r18.pth'}",
            "features.short_side=64", "features.workers=0", "features.shard_size=3",
            "regions.scales=[0.3, 0.8]", "regions.min_size=8",
            "features.pyramid_target=48", *extra]  # windows of 14-51 px at 64 and 128


def test_pyramid_stage_reuses_each_scale_and_picks_rows_from_it(tiny):
    cache = tiny / "cache-pyramid"
    single = Pipeline(load_config(None, sets(tiny, "features.short_side=128")), cache)
    single.run(until="features", out=tiny / "run-128", report=False)

    pipe = Pipeline(load_config(None, sets(tiny, "features.pyramid=[128]")), cache)
    assert pipe.stages[:5] == ("dataset", "regions", "features", "features@128", "multiscale")
    assert pipe.resolve("features", "parts") == "multiscale"
    assert pipe.key("features@128") == single.key("features")  # the same entry
    summary = pipe.run(until="multiscale", out=tiny / "run-pyr", report=False)
    cached = {s: v["cached"] for s, v in summary["stages"].items()}
    assert cached == {"dataset": True, "regions": True, "features": False,
                      "features@128": True, "multiscale": False}

    base, big, out = pipe.load("features"), single.load("features"), pipe.load("multiscale")
    data, regions = pipe.dataset, pipe.load("regions")
    picked = np.zeros(2, int)
    for i in range(len(out)):
        choice = multiscale.nearest_scale(regions.boxes[regions.of(i)],
                                          min(data.width[i], data.height[i]), [64, 128], 48)
        picked += np.bincount(choice, minlength=2)
        expect = np.where(choice[:, None] == 1, big.image(i), base.image(i))
        np.testing.assert_array_equal(out.image(i), expect)
    assert picked.min() > 0  # both scales serve some regions here
    np.testing.assert_array_equal(out.global_, base.global_)  # global is short_side's

    # a second pyramid with one more scale computes only that scale
    more = Pipeline(load_config(None, sets(tiny, "features.pyramid=[128, 96]")), cache)
    s = more.run(until="multiscale", out=tiny / "run-pyr2", report=False)["stages"]
    assert s["features"]["cached"] and s["features@128"]["cached"]
    assert not s["features@96"]["cached"] and not s["multiscale"]["cached"]
    # the mean over the scales is a different entry; --force features redoes every scale
    mean = Pipeline(load_config(None, sets(tiny, "features.pyramid=[128]",
                                           "features.pyramid_select=mean")), cache)
    s = mean.run(until="multiscale", force=["features"], out=tiny / "run-pyr3",
                 report=False)["stages"]
    assert not s["features"]["cached"] and not s["features@128"]["cached"]
    assert mean.key("multiscale") != pipe.key("multiscale")
    x = np.asarray(mean.load("multiscale").image(0), np.float32)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=2e-3)


def test_an_interrupted_multiscale_stage_resumes_from_its_shards(tiny, monkeypatch, caplog):
    """A crash after the first shard keeps it; the re-run writes only the others (it used
    to write the first again and fail on its folder) and gives the uninterrupted rows
    and per-scale counts."""
    import logging

    from partlearn.cache import Writer

    full = Pipeline(load_config(None, sets(tiny, "features.pyramid=[128]")), tiny / "ms-full")
    full.run(until="multiscale", out=tiny / "ms-full-run", report=False)
    pipe = Pipeline(load_config(None, sets(tiny, "features.pyramid=[128]")), tiny / "ms-crash")
    pipe.run(until="features@128", out=tiny / "ms-crash-0", report=False)
    real, written = Writer.save_shard, []

    def crash_after_one(self, shard, arrays):
        if written:
            raise KeyboardInterrupt
        real(self, shard, arrays)
        written.append(shard)

    monkeypatch.setattr(Writer, "save_shard", crash_after_one)
    with pytest.raises(KeyboardInterrupt):
        pipe.run(until="multiscale", out=tiny / "ms-crash-1", report=False)
    monkeypatch.setattr(Writer, "save_shard", real)
    with caplog.at_level(logging.INFO, logger="partlearn"):
        pipe.run(until="multiscale", out=tiny / "ms-crash-2", report=False)
    assert "multiscale: 1 of" in caplog.text and "shards already done, resuming" in caplog.text
    a, b = full.load("multiscale"), pipe.load("multiscale")
    assert len(b.shards) > 1
    for i in range(len(a)):
        np.testing.assert_array_equal(a.image(i), b.image(i))
    counts = [p.entry("multiscale").meta["regions_per_scale"] for p in (full, pipe)]
    assert counts[0] == counts[1] and min(counts[0].values()) > 0


def test_pyramid_runs_through_to_the_classifier_status_and_gc_keep_each_scale(tiny, capsys):
    import json

    from partlearn.config import dump_toml

    config = tiny / "pyr.toml"  # every setting in the file: `cache gc --keep` reads it alone
    cache = tiny / "cache-pyramid-run"
    config.write_text(dump_toml(load_config(None, sets(tiny, "features.pyramid=[96]",
                                                       f"cache_dir={cache}"))))
    out = tiny / "run-pyr-all"
    assert main(["run", str(config), "--out", str(out)]) == 0
    summary = json.loads((out / "results.json").read_text())
    assert {"features@96", "multiscale", "parts", "classifier"} <= set(summary["stages"])
    assert "parts" in summary["methods"]
    other = Pipeline(load_config(None, sets(tiny, "features.short_side=80")), cache)
    other.run(until="features", out=tiny / "run-80", report=False)  # not the config's
    capsys.readouterr()
    assert main(["status", str(config)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert any(r.startswith("features@96") and r.endswith("cached") for r in rows)
    assert all(r.endswith("cached") for r in rows)
    assert main(["cache", "--cache-dir", str(cache), "gc", "--keep", str(config)]) == 0
    assert "removed features " + other.key("features") in capsys.readouterr().out
    assert main(["status", str(config)]) == 0
    assert all(r.endswith("cached") for r in capsys.readouterr().out.splitlines())


@pytest.mark.parametrize("value, text", [
    ("features.pyramid=[64]", "other than features.short_side=64"),
    ("features.pyramid=[128, 128]", "distinct"),
    ("features.pyramid=[16]", ">= 32 px"),
    ("features.pyramid_select=max", "features.pyramid_select"),
])
def test_bad_pyramids_are_config_errors(tiny, value, text):
    with pytest.raises(ConfigError, match=text):
        load_config(None, sets(tiny, value))
    with pytest.raises(ConfigError, match="features.mode = 'roi'"):
        load_config(None, sets(tiny, "features.pyramid=[128]", "features.mode=crop"))
