"""The pipeline and CLI end to end on a tiny dataset the test draws, with a tiny backbone."""

import json
from pathlib import Path

import numpy as np
import pytest

from partlearn.cli import main
from partlearn.config import load_config
from partlearn import Pipeline
from partlearn._validation import ConfigError, DataError


def args(tiny, *extra):
    return ["--set", f"data.root={tiny / 'data'}", "--set", "data.format=folders",
            "--set", "data.min_train_per_class=1", "--set", "backbone.name=resnet18",
            "--set", f"backbone.weights={tiny / 'r18.pth'}", "--set", "features.short_side=64",
            "--set", "features.workers=0", "--set", "features.shard_size=3",
            "--set", "regions.scales=[0.5, 0.8]", "--cache-dir", str(tiny / "cache"), *extra]


def results(path):
    return json.loads((path / "results.json").read_text())


def test_run_status_cache_and_rerun(tiny, capsys):
    out1, out2, out3 = tiny / "run1", tiny / "run2", tiny / "run3"
    assert main(["run", "x.toml", *args(tiny, "--out", str(out1))]) == 2  # missing config
    assert "x.toml does not exist" in capsys.readouterr().err

    config = tiny / "p.toml"
    config.write_text('name = "tiny"\n')
    assert main(["run", str(config), *args(tiny, "--until", "features", "--out", str(out1))]) == 0
    r1 = results(out1)
    assert {s: v["cached"] for s, v in r1["stages"].items()} == {
        "dataset": False, "regions": False, "features": False}
    for name in ("config.toml", "audit.json", "audit.md", "results.json"):
        assert (out1 / name).is_file()
    recorded = load_config(out1 / "config.toml")
    assert recorded.features.short_side == 64  # resolved config
    # the store and the data it ran on, absolute: `explain RUN_DIR` finds them from anywhere
    assert recorded.cache_dir == str((tiny / "cache").resolve())
    assert recorded.data.root == str((tiny / "data").resolve())

    capsys.readouterr()
    assert main(["status", str(config), *args(tiny)]) == 0
    assert capsys.readouterr().out.count("cached") == 3

    # warm: all cached; a features-only change recomputes features only
    assert main(["run", str(config), *args(tiny, "--until", "features", "--out", str(out2))]) == 0
    assert all(v["cached"] for v in results(out2)["stages"].values())
    assert main(["run", str(config), *args(tiny, "--set", "features.roi_size=2",
                                           "--until", "features", "--out", str(out3))]) == 0
    r3 = results(out3)["stages"]
    assert r3["dataset"]["cached"] and r3["regions"]["cached"] and not r3["features"]["cached"]
    assert r3["features"]["key"] != r1["stages"]["features"]["key"]

    # --force recomputes the stage and those after it
    assert main(["run", str(config), *args(tiny, "--force", "regions", "--until", "features",
                                           "--out", str(out2))]) == 0
    r = results(out2)["stages"]
    assert r["dataset"]["cached"] and not r["regions"]["cached"] and not r["features"]["cached"]

    capsys.readouterr()
    assert main(["cache", "--cache-dir", str(tiny / "cache"), "ls"]) == 0
    listing = capsys.readouterr().out
    assert "features" in listing and "dataset" in listing
    # the summary last, its line ended: the next log line starts on a line of its own
    assert " entries, " in listing.splitlines()[-1] and listing.endswith("\n")


def test_features_read_back_in_order(tiny):
    cfg = load_config(None, [a for a in args(tiny)[1::2] if "=" in a])
    pipe = Pipeline(cfg, cache_dir=str(tiny / "cache2"))
    pipe.run(until="features", out=tiny / "run-order")
    feats = pipe.load("features")
    m = pipe.kept_manifest
    assert len(feats) == len(m) == 10
    assert feats.global_.shape == (10, 512) and feats.global_.dtype == np.float16
    for i in range(len(m)):
        x = np.asarray(feats.image(i), np.float32)
        assert x.shape == (feats.offsets[i + 1] - feats.offsets[i], 512)
        np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=2e-3)
        # the full-image region and the global descriptor come from the same pass
        assert float(x[0] @ np.asarray(feats.global_[i], np.float32)) > 0.95


def test_feature_shards_run_two_at_a_time_on_the_cpu(tiny, monkeypatch):
    """With n_jobs=2 on the CPU two shards are extracted at once, n_jobs=1 one at a time,
    each on one torch thread whatever torch's count was: the rows are the same bit for bit,
    and torch's thread count is put back after."""
    import threading

    import torch

    import partlearn.features as features

    real, running, most, lock = features.extract_features, [0], [0], threading.Lock()

    def overlapping(*a, **k):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            assert torch.get_num_threads() == 1
            yield from real(*a, **k)
            threading.Event().wait(0.2)  # long enough for the other shard's task to start
        finally:
            with lock:
                running[0] -= 1

    def run(n_jobs, name):
        cfg = load_config(None, [a for a in args(tiny)[1::2] if "=" in a] + [f"n_jobs={n_jobs}"])
        pipe = Pipeline(cfg, cache_dir=str(tiny / name))
        pipe.run(until="features", out=tiny / f"r-{name}")
        return pipe.load("features")

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(features, "extract_features", overlapping)
        two = run(2, "cache-two")
        assert most[0] == 2 and torch.get_num_threads() == 2
        most[0] = 0
        one = run(1, "cache-one")
        assert most[0] == 1 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(np.asarray(two.global_), np.asarray(one.global_))
    for i in range(len(one)):
        np.testing.assert_array_equal(np.asarray(two.image(i)), np.asarray(one.image(i)))


@pytest.mark.parametrize("resume_shard_size", [3, 4])
def test_interrupted_extraction_resumes(tiny, monkeypatch, resume_shard_size):
    """An interrupted extraction keeps its finished shard; the resumed one (also with
    another features.shard_size, which keys nothing) gives every image its own rows."""
    import partlearn.features as features

    # one shard at a time (n_jobs=1), so that the crash finds shard 0 finished
    cfg = load_config(None, [a for a in args(tiny)[1::2] if "=" in a] + ["n_jobs=1"])
    cache = str(tiny / f"cache-int{resume_shard_size}")
    real = features.extract_features
    seen = []

    def crash_after_four(*a, **k):  # on the fifth image, in the second shard's task
        for item in real(*a, **k):
            if len(seen) == 4:
                raise KeyboardInterrupt
            seen.append(item)
            yield item

    monkeypatch.setattr(features, "extract_features", crash_after_four)
    with pytest.raises(KeyboardInterrupt):
        Pipeline(cfg, cache_dir=cache).run(until="features", out=tiny / "r-int")
    calls = []

    def counting(paths, *a, **k):
        calls.append(len(paths))
        return real(paths, *a, **k)

    monkeypatch.setattr(features, "extract_features", counting)
    resumed = load_config(None, [a for a in args(tiny)[1::2] if "=" in a]
                          + [f"features.shard_size={resume_shard_size}", "n_jobs=1"])
    pipe = Pipeline(resumed, cache_dir=cache)
    pipe.run(until="features", out=tiny / "r-res")
    assert calls == [3, 3, 1]  # shard 0 (3 images) survived; each other shard is one task
    monkeypatch.setattr(features, "extract_features", real)
    ref = Pipeline(cfg, cache_dir=str(tiny / f"cache-ref{resume_shard_size}"))  # uninterrupted
    ref.run(until="features", out=tiny / "r-ref")
    ref, got = ref.load("features"), pipe.load("features")
    np.testing.assert_array_equal(np.asarray(got.global_), np.asarray(ref.global_))
    for i in range(len(ref)):
        np.testing.assert_array_equal(np.asarray(got.image(i)), np.asarray(ref.image(i)))


def test_user_errors_are_one_line(tiny, capsys):
    config = tiny / "p.toml"
    config.write_text('name = "tiny"\n')
    cases = [
        (["run", str(config), *args(tiny, "--set", "features.mdoe=roi")], 2, "did you mean 'mode'"),
        (["run", str(config), *args(tiny, "--set", "backbone.name=resnet5O")], 2, "resnet50"),
        # found after the dataset stage, so once the run directory exists: not in the cwd
        (["run", str(config), *args(tiny, "--set", "features.pca_dim=100000", "--out",
                                    str(tiny / "bad-pca"))], 2,
         "features.pca_dim=100000 exceeds the 512 channels"),
        (["run", str(config), *args(tiny, "--set", "regions.min_size=100000", "--out",
                                    str(tiny / "bad-min-size"))], 2,
         "regions.min_size=100000 px exceeds every window"),
        (["run", str(config), "--set", "data.root=/nonexistent/x", "--cache-dir",
          str(tiny / "c")], 1, "/nonexistent/x"),
    ]
    for argv, code, text in cases:
        capsys.readouterr()
        assert main(argv) == code
        err = capsys.readouterr().err
        assert text in err and "Traceback" not in err
        assert len([l for l in err.splitlines() if l.startswith("partlearn: error")]) == 1


_TRAIN4 = "".join(f"train/{c}/{i}.png,{c},train\n" for c in ("Cat", "dog") for i in (0, 1))


@pytest.mark.parametrize("rows, text", [
    ("", "lists no images"),  # a header-only CSV
    ("test/Cat/0.png,Cat,test\ntrain/dog/0.png,dog,train\ntrain/dog/1.png,dog,train\n",
     "1 class(es) have no training images: Cat (0)"),
    ("train/Cat/0.png,Cat,train\ntrain/dog/0.png,dog,train\n",
     "fewer training images than parts.min_images=2: Cat (1), dog (1)"),
    ("train/Cat/0.png,Cat,train\ntrain/Cat/1.png,Cat,train\n", "has 1 class"),
    # exactly parts.min_images=2 per class: enough for the parts, not for a CV fold's parts
    (_TRAIN4 + "test/Cat/0.png,Cat,test\ntest/dog/0.png,dog,test\n",
     "class 'Cat' has 2 training images, and with classifier.cv_parts each of the 2 CV folds "
     "learns parts without its own images: fold 1 leaves 1, fewer than parts.min_images=2"),
    (_TRAIN4, "has no test images"),
    (_TRAIN4 + "test/Cat/0.png,Cat,test\n", "1 class(es) have no test images: dog"),
    ("train/Cat/0.png,Cat,train\n../outside.png,Cat,test\n", "leads outside data.root"),
    ("train/Cat/0.png,Cat,train\nlink.png,Cat,test\n", "leads outside data.root"),
])
def test_bad_manifests_stop_before_the_features(tiny, tmp_path, capsys, rows, text):
    """Each is one line naming the problem, exit 1, and no features stage ran."""
    import shutil

    data = tmp_path / "d"
    shutil.copytree(tiny / "data", data)
    shutil.copy(tiny / "data" / "test" / "Cat" / "0.png", tmp_path / "outside.png")
    (data / "link.png").symlink_to(tmp_path / "outside.png")
    (data / "labels.csv").write_text("path,label,split\n" + rows)
    config = tmp_path / "p.toml"
    config.write_text('name = "tiny"\n')
    settings = [a for a in args(tiny)[1::2] if "=" in a and not a.startswith(
        ("data.root=", "data.format="))] + [f"data.root={data}", "data.format=csv"]
    base = [x for a in settings for x in ("--set", a)] + ["--cache-dir", str(tmp_path / "cache")]
    capsys.readouterr()
    assert main(["run", str(config), *base, "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert text in err and "Traceback" not in err, err
    assert not (tmp_path / "cache" / "features").exists()


def test_bad_image_policy_end_to_end(tiny, capsys):
    import shutil

    data = tiny / "baddata"
    shutil.copytree(tiny / "data", data)
    (data / "train" / "Cat" / "0.png").write_bytes(b"")
    (data / "test" / "dog" / "1.png").write_bytes(b"not an image at all")
    config = tiny / "p.toml"
    config.write_text('name = "tiny"\n')
    base = [a if not a.startswith("data.root=") else f"data.root={data}" for a in args(tiny)]
    capsys.readouterr()
    assert main(["run", str(config), *base, "--until", "regions", "--out", str(tiny / "b1")]) == 1
    err = capsys.readouterr().err
    assert "0.png" in err and "1.png" in err and "on_bad_image" in err
    assert (tiny / "b1" / "audit.md").is_file()  # the audit lands even when the run stops
    assert main(["run", str(config), *base, "--set", "data.on_bad_image=skip",
                 "--until", "regions", "--out", str(tiny / "b2")]) == 0
    audit = json.loads((tiny / "b2" / "audit.json").read_text())
    assert len(audit["skipped"]) == 2


def test_pca_stage_fits_on_training_regions(tiny):
    cfg = load_config(None, [a for a in args(tiny)[1::2] if "=" in a]
                      + ["features.pca_dim=16", "features.whiten=true"])
    pipe = Pipeline(cfg, cache_dir=str(tiny / "cache2"))
    assert pipe.stages == ("dataset", "regions", "features", "pca", "parts", "encoding",
                           "encoding_cv", "classifier")
    Pipeline(load_config(None, [a for a in args(tiny)[1::2] if "=" in a]),
             cache_dir=str(tiny / "cache2")).run(until="features", out=tiny / "run-pca0")
    summary = pipe.run(until="pca", out=tiny / "run-pca")
    assert summary["stages"]["features"]["cached"] and not summary["stages"]["pca"]["cached"]
    feats = pipe.load("pca")
    assert feats.global_.shape == (10, 16)
    x = np.asarray(feats.image(0), np.float32)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=2e-3)
    # fitted on every region of the training split and on nothing else
    entry = pipe.cache.get("pca", pipe.key("pca"))
    assert entry.array("pca_components").shape == (16, 512)
    raw = pipe.load("features")
    train = np.flatnonzero(pipe.kept_manifest.split == "train")
    x_train = np.concatenate([np.asarray(raw.image(i), np.float32) for i in train])
    np.testing.assert_allclose(entry.array("pca_mean"), x_train.mean(0), atol=1e-4)


def test_flipped_regions_and_global(tiny):
    cfg = load_config(None, [a for a in args(tiny)[1::2] if "=" in a] + ["regions.flips=true"])
    pipe = Pipeline(cfg, cache_dir=str(tiny / "cache-flip"))
    pipe.run(until="features", out=tiny / "run-flip")
    feats = pipe.load("features")
    assert feats.global_flip is not None and feats.global_flip.shape == feats.global_.shape
    r = feats.offsets[1] - feats.offsets[0]
    assert r % 2 == 0 and feats.flips[:r].sum() == r // 2
    x = np.asarray(feats.image(0), np.float32)
    # the flipped full image region is the mirrored image's global descriptor
    assert float(x[r // 2] @ np.asarray(feats.global_flip[0], np.float32)) > 0.95


def test_parts_stage_caches_every_class_and_resumes(tiny, monkeypatch):
    import partlearn.parts._learner as parts_module

    cfg = load_config(None, [a for a in args(tiny)[1::2] if "=" in a]
                      + ["parts.n_parts=3", "parts.min_images=2", "n_jobs=1"])
    real = parts_module.learn_class_parts
    learnt = []

    def fail_on_dog(*a, **k):
        if k["name"] == "dog":
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(parts_module, "learn_class_parts", fail_on_dog)
    with pytest.raises(KeyboardInterrupt):
        Pipeline(cfg, cache_dir=str(tiny / "cache2")).run(until="parts", out=tiny / "p1")
    monkeypatch.setattr(parts_module, "learn_class_parts",
                        lambda *a, **k: learnt.append(k["name"]) or real(*a, **k))
    pipe = Pipeline(cfg, cache_dir=str(tiny / "cache2"))
    summary = pipe.run(until="parts", out=tiny / "p2")
    assert learnt == ["dog"]  # the class learnt before the interruption was kept
    assert not summary["stages"]["parts"]["cached"]
    learner = pipe.load("parts")
    assert learner.parts_.shape == (6, 512) and list(learner.part_class_) == [0, 0, 0, 1, 1, 1]
    assert ((learner.discriminativeness_ >= 0) & (learner.discriminativeness_ <= 1)).all()
    assert Pipeline(cfg, cache_dir=str(tiny / "cache2")).run(
        until="parts", out=tiny / "p3")["stages"]["parts"]["cached"]
    too_few = load_config(None, [a for a in args(tiny)[1::2] if "=" in a]
                          + ["parts.n_parts=3", "parts.min_images=4"])
    with pytest.raises(DataError, match=r"fewer training images than parts.min_images=4: "
                                        r"Cat \(3\), dog \(3\)"):
        Pipeline(too_few, cache_dir=str(tiny / "cache2")).run(until="parts", out=tiny / "p4")
    assert list(results(tiny / "p4")["stages"]) == ["dataset"]  # said before the features


def test_full_run_methods_report_and_what_recomputes(tiny, capsys):
    base = [a for a in args(tiny)[1::2] if "=" in a] + ["parts.n_parts=3", "parts.min_images=2",
                                                        "classifier.n_bootstrap=200"]
    cache = str(tiny / "cache-full")
    cold = Pipeline(load_config(None, base), cache_dir=cache).run(out=tiny / "full1")
    assert list(cold["stages"]) == ["dataset", "regions", "features", "parts", "encoding",
                                    "encoding_cv", "classifier"]
    assert set(cold["methods"]) == {"global", "parts", "parts+global"}
    for m in cold["methods"].values():
        assert 0 <= m["top1"] <= 1 and 0 <= m["mean_class_accuracy"] <= 1
        assert m["n_test"] == 4 and m["C"] > 0 and 0 <= m["cv_accuracy"] <= 1
        assert np.sum(m["confusion"]) == 4
    assert cold["methods"]["parts"]["dim"] == 6 * 5  # 6 parts x (1 + 4) pyramid cells
    assert {(c["a"], c["b"]) for c in cold["comparisons"]} == {
        ("parts", "global"), ("parts+global", "global"), ("parts+global", "parts")}
    for c in cold["comparisons"]:
        assert c["ci95"][0] <= c["diff"] <= c["ci95"][1] and 0 <= c["mcnemar_p"] <= 1
    for p in cold["participation"]:  # per class: its top parts and the borrowed share
        assert 0 <= p["borrowed"] <= 1 and len(p["parts"]) == 6
        assert p["participation"] == sorted(p["participation"], reverse=True)
    assert [p["class"] for p in cold["participation"]] == ["Cat", "dog"]
    assert cold["figures"] == ["figures/gallery_000.png", "figures/gallery_001.png",
                               "figures/heatmap_0.png"]  # the first test image explained
    for name in cold["figures"]:  # region crops of each class's top parts, as PNG files
        assert (tiny / "full1" / name).read_bytes()[:4] == b"\x89PNG"
    assert (tiny / "full1" / "report.html").read_text().count("<figcaption>Part gallery") == 2
    plots = sorted(p.name for p in (tiny / "full1" / "figures").glob("plot_*.png"))
    assert len(plots) >= 5  # the report's plots as PNG files as well
    text = (tiny / "full1" / "results.md").read_text()
    assert "| parts+global − global |" in text and "| Cat |" in text
    lines = (tiny / "full1" / "predictions.csv").read_text().splitlines()
    assert lines[0] == "path,label,global,parts,parts+global" and len(lines) == 5

    image = tiny / "data" / "test" / "dog" / "0.png"  # explain: any image, with this run
    assert main(["explain", str(tiny / "full1"), str(image), "--cache-dir", cache,
                 "--out", str(tiny / "explain")]) == 0
    assert (tiny / "explain" / "0_explain.png").read_bytes()[:4] == b"\x89PNG"
    (tiny / "broken.png").write_bytes(b"not a png")
    capsys.readouterr()
    assert main(["explain", str(tiny / "full1"), str(tiny / "broken.png"), "--cache-dir",
                 cache]) == 1
    assert "broken.png: cannot read this image" in capsys.readouterr().err

    warm = Pipeline(load_config(None, base), cache_dir=cache).run(out=tiny / "full2")
    assert all(s["cached"] for s in warm["stages"].values())
    assert (tiny / "full2" / "figures" / "gallery_001.png").read_bytes() == \
        (tiny / "full1" / "figures" / "gallery_001.png").read_bytes()  # from the memo
    assert warm["methods"] == cold["methods"]
    changed = Pipeline(load_config(None, base + ["classifier.C=[0.5, 5.0]"]),
                       cache_dir=cache).run(out=tiny / "full3")
    assert [s for s, v in changed["stages"].items() if not v["cached"]] == ["classifier"]

    # leave-one-out encoding changes the training images' codes only
    pipe = Pipeline(load_config(None, base), cache_dir=cache)
    pipe.run(out=tiny / "full4")
    plain = Pipeline(load_config(None, base + ["encoding.leave_one_out=false"]), cache_dir=cache)
    plain.run(out=tiny / "full5")
    loo, full = pipe.load("encoding").codes, plain.load("encoding").codes
    train = pipe.kept_manifest.split == "train"
    np.testing.assert_array_equal(loo[~train], full[~train])
    assert not np.allclose(loo[train], full[train])

    only_global = Pipeline(load_config(None, base + ['classifier.methods=["global"]']),
                           cache_dir=cache).run(out=tiny / "full6")
    assert "parts" not in only_global["stages"] and list(only_global["methods"]) == ["global"]


def test_dpnet_stage_variants_seeds_and_rows(tiny):
    base = [a for a in args(tiny)[1::2] if "=" in a] + [
        "parts.n_parts=2", "parts.min_images=2", "classifier.n_bootstrap=100",
        'dpnet.variants=["wo", "cs+orth+assign"]', "dpnet.seeds=[0, 1]", "dpnet.epochs=2",
        "dpnet.parts_per_class=2", "dpnet.batch_size=2", "dpnet.init_from_parts=true"]
    cache = str(tiny / "cache-dpnet")
    summary = Pipeline(load_config(None, base), cache_dir=cache).run(out=tiny / "dp1")
    assert list(summary["stages"])[-1] == "dpnet"
    for name in ("dpnet", "dpnet[cs+orth+assign]"):
        m = summary["methods"][name]
        assert m["seeds"] == [0, 1] and len(m["top1_per_seed"]) == 2
        assert m["top1"] == pytest.approx(np.mean(m["top1_per_seed"]))
        assert m["top1_std"] == pytest.approx(np.std(m["top1_per_seed"]))
        assert m["dim"] == 4 and m["n_test"] == 4
    pairs = {(c["a"], c["b"]) for c in summary["comparisons"]}
    assert ("dpnet", "global") in pairs and ("dpnet[cs+orth+assign]", "dpnet") in pairs
    assert ("dpnet[cs+orth+assign]", "parts") in pairs
    by = {(c["a"], c["b"]): c for c in summary["comparisons"]}
    # every seed enters DP-Net's comparisons: the difference of the means over seeds
    dp, glob = summary["methods"]["dpnet"], summary["methods"]["global"]
    assert by[("dpnet", "global")]["seeds_a"] == 2
    assert by[("dpnet", "global")]["diff"] == pytest.approx(dp["top1"] - glob["top1"])
    assert all(c["p"] <= c["p_holm"] <= 1 for c in summary["comparisons"])
    text = (tiny / "dp1" / "results.md").read_text()
    assert "| dpnet[cs+orth+assign] |" in text and "p (Holm)" in text
    assert "dpnet: seed 0 of 2" in text
    image = tiny / "data" / "test" / "Cat" / "1.png"
    assert main(["explain", str(tiny / "dp1"), str(image), "--model", "dpnet", "--cache-dir",
                 cache, "--out", str(tiny / "dp-explain")]) == 0
    assert (tiny / "dp-explain" / "1_explain_dpnet.png").is_file()
    assert [p["class"] for p in summary["participation_dpnet"]] == ["Cat", "dog"]
    assert "figures/gallery_dpnet_000.png" in summary["figures"]  # DP-Net's parts too
    again = Pipeline(load_config(None, base), cache_dir=cache).run(out=tiny / "dp2")
    assert again["stages"]["dpnet"]["cached"] and again["methods"] == summary["methods"]
    with pytest.raises(ConfigError, match="dpnet.parts_per_class x classes = 6"):
        Pipeline(load_config(None, base + ["dpnet.parts_per_class=3"]),
                 cache_dir=cache).run(out=tiny / "dp3")


def test_run_report_shows_galleries_and_heatmap_in_chromium(tiny, chromium):
    base = [a for a in args(tiny)[1::2] if "=" in a] + ["parts.n_parts=3", "parts.min_images=2",
                                                        "classifier.n_bootstrap=200"]
    Pipeline(load_config(None, base), cache_dir=str(tiny / "cache-full")).run(
        out=tiny / "shown")
    page = tiny / "shown" / "report.html"
    text = page.read_text()
    assert text.count("<figcaption>Part gallery") == 2 and text.count("<figcaption>Heatmap") == 1
    loaded, rgb = chromium(page, tiny, window="1200,6000")
    assert loaded == f"{text.count('<img ')}:true"  # galleries and heatmap decoded in the page
    assert rgb.std() > 10


@pytest.fixture(scope="module")
def finished(tiny):
    """A finished run of every stage (two-stage parts and the SVMs), in its own cache."""
    base = [a for a in args(tiny)[1::2] if "=" in a] + ["parts.n_parts=3", "parts.min_images=2",
                                                        "classifier.n_bootstrap=200"]
    cache = tiny / "cache-finished"
    summary = Pipeline(load_config(None, base), cache_dir=cache).run(out=tiny / "finished")
    return load_config(None, base), cache, summary


def test_library_route_gives_the_cli_arrays(finished):
    """A new Pipeline reads the cached outputs without running; the estimators called by
    hand on the cached region features give the very parts and codes of the run."""
    from partlearn import ImageRegions, PartEncoder, PartLearner

    cfg, cache, _ = finished
    pipe = Pipeline(cfg, cache_dir=cache)  # no run
    data, feats, learner = pipe.load("dataset"), pipe.load("features"), pipe.load("parts")
    train = data.train
    mine = PartLearner.from_config(cfg.parts, random_state=cfg.seed, n_jobs=cfg.n_jobs).fit(
        feats.images(train), data.manifest.label[train], boxes=feats.image_boxes(train))
    np.testing.assert_array_equal(mine.parts_, learner.parts_)
    np.testing.assert_array_equal(mine.part_bias_, learner.part_bias_)
    for a, b in zip(mine.class_results_, learner.class_results_):
        np.testing.assert_array_equal(a["loo_directions"], b["loo_directions"])
    o = feats.offsets
    images = [ImageRegions(feats.image(i), feats.boxes[o[i]:o[i + 1]],
                           (data.width[i], data.height[i])) for i in range(len(feats))]
    enc = PartEncoder.from_config(cfg.encoding, mine, prefit=True).fit()
    codes = pipe.load("encoding").codes
    np.testing.assert_array_equal(enc.codes(images, train=train), codes)
    test = data.test  # test images by the full parts, training images leave-one-out
    # a subset's products are blocked otherwise by BLAS: float rounding only (1.6e-6 seen
    # on an Intel Xeon, equal bits on an AMD EPYC; the README's 1e-5), far below the
    # leave-one-out difference
    np.testing.assert_allclose(enc.transform([images[i] for i in test]), codes[test],
                               rtol=0, atol=1e-5)
    assert not np.allclose(enc.transform([images[i] for i in train]), codes[train])


def test_predictions_are_the_classifiers(finished, tiny):
    """predictions.csv and the accuracies are the saved classifier's decisions on the
    test codes, image by image (a stage saving shuffled predictions fails here)."""
    from partlearn.stages.classifier import method_inputs

    cfg, cache, summary = finished
    pipe = Pipeline(cfg, cache_dir=cache)
    data, clf = pipe.load("dataset"), pipe.load("classifier")
    feature = method_inputs(cfg, pipe.load)  # the inputs the stage fits and predicts on
    rows = (tiny / "finished" / "predictions.csv").read_text().splitlines()[1:]
    m = data.manifest
    assert summary["methods"]["global"]["top1"] == 1.0  # red cats, blue dogs
    for method, saved in clf.models.items():
        model = clf.model(method)  # the fitted model, back from the cache
        assert model.info().items() <= saved["info"].items()
        pred = model.predict(feature(method)[data.test])
        np.testing.assert_array_equal(saved["test_pred"], pred)
        column = list(summary["methods"]).index(method) + 2
        assert [r.split(",")[column] for r in rows] == [m.classes[p] for p in pred]
        assert summary["methods"][method]["top1"] == np.mean(pred == m.label[data.test])
    assert [r.split(",")[:2] for r in rows] == [[m.path[i], m.classes[m.label[i]]]
                                                for i in data.test]


def test_explain_predicts_as_the_run(finished, tiny):
    """explain on a test image of the dataset recomputes its features and code and finds
    the run's prediction for it; the parts it draws are the top parts of that class."""
    from partlearn.explain import explain_image

    cfg, cache, _ = finished
    pipe = Pipeline(cfg, cache_dir=cache)
    data = pipe.load("dataset")
    pred = pipe.load("classifier").models["parts"]["test_pred"]
    for j, i in enumerate(data.test):
        info = explain_image(pipe, Path(data.manifest.root) / data.manifest.path[i],
                             tiny / "explained", top=2)
        assert info["predicted"] == data.manifest.classes[pred[j]]
        assert len(info["parts"]) == 2 and Path(info["figure"]).is_file()


def test_explain_finds_the_runs_store_from_anywhere(finished, tiny, monkeypatch, capsys):
    """The run directory records its cache: `explain RUN_DIR IMAGE` without --cache-dir,
    from another working directory, predicts as the run did."""
    cfg, _, summary = finished
    image = next((tiny / "data" / "test" / "Cat").glob("*.png"))
    monkeypatch.chdir(tiny / "data")
    assert main(["explain", str(tiny / "finished"), str(image), "--out",
                 str(tiny / "explained2")]) == 0
    assert "predicted" in capsys.readouterr().out


def test_a_crafted_test_images_index_is_a_clear_error(finished, tmp_path):
    """meta.json with a test index out of range, sealed as a faulty writer would seal it
    (an edit by hand that is not resealed is the store's: a damaged entry): one DataError
    naming the entry, not an IndexError."""
    import shutil

    from partlearn import _store_check

    cfg, cache, _ = finished
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    entry = next(p for p in (copy / "classifier").iterdir() if p.is_dir())
    meta = json.loads((entry / "meta.json").read_text())
    meta["test_images"] = [10_000] + meta["test_images"][1:]
    meta[_store_check.META_HASH] = _store_check.meta_hash(meta)
    (entry / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"test_images are not this dataset's 4 test images"):
        Pipeline(cfg, cache_dir=copy).load("classifier")


def test_evaluators_skip_or_fail_alone(finished, tiny):
    from partlearn.evaluation import EVALUATORS, Evaluator, evaluate

    cfg, cache, summary = finished
    assert summary["evaluations"]["localization"]["status"] == "skipped"  # no keypoints
    assert "keypoints" in summary["evaluations"]["localization"]["reason"]
    # no keypoints, and deletion off by default (tests/evaluation/test_deletion.py: on)
    assert summary["evaluations"]["interpretability"] == {
        "status": "skipped", "reason": "the dataset has no keypoints; deletion: "
                                       "classifier.deletion_images = 0"}

    def broken(ctx):
        raise ValueError("planted failure")

    found = evaluate(Pipeline(cfg, cache_dir=cache), tiny / "finished",
                     (Evaluator("broken", ("classifier",), broken),) + EVALUATORS)
    assert found["evaluations"]["broken"] == {"status": "failed",
                                              "error": "ValueError: planted failure"}
    assert found["methods"] == summary["methods"]  # the others ran
    assert found["participation"] == summary["participation"]
    from partlearn.report import results_markdown

    assert "broken: FAILED, ValueError: planted failure" in results_markdown(found)


def test_retrieval_descriptors_and_evaluator(tiny):
    """The descriptors stage (pools whitened on training images, R-MAC) and the retrieval
    evaluator: its figures equal a recomputation from the cached arrays."""
    from partlearn.retrieval import category_retrieval
    from partlearn.stages.descriptors import rmac, whitening

    base = [a for a in args(tiny)[1::2] if "=" in a] + [
        "parts.n_parts=3", "parts.min_images=2", "classifier.n_bootstrap=100",
        'features.pools=["mac", "gem", "rmac"]', 'retrieval.ks=[1, 2]',
        'retrieval.descriptors=["global", "mac", "gem+w", "rmac", "parts+rmac"]']
    cfg = load_config(None, base)
    pipe = Pipeline(cfg, cache_dir=tiny / "cache-retrieval")
    summary = pipe.run(out=tiny / "retrieval")
    rows = {(r["descriptor"], r["rerank"]): r for r in summary["retrieval"]["rows"]}
    assert set(rows) == {(d, r) for d in cfg.retrieval.descriptors for r in cfg.retrieval.rerank}
    data, feats, desc = pipe.load("dataset"), pipe.load("features"), pipe.load("descriptors")
    test, y = data.test, data.manifest.label[data.test]
    assert rows[("mac", "none")]["map"] == category_retrieval(
        np.asarray(desc["mac"][test], np.float32), y, (1, 2))["map"]
    pca = whitening(np.concatenate([feats.regional_macs(i) for i in data.train]),
                    cfg.retrieval.whiten_shrinkage, cfg.seed)
    np.testing.assert_allclose(np.asarray(desc["rmac"], np.float32),
                               rmac(feats, range(len(feats)), pca), atol=2e-3)
    assert rows[("rmac", "none")]["dim"] == desc["rmac"].shape[1]
    assert rows[("parts+rmac", "none")]["dim"] == 6 * 5 + desc["rmac"].shape[1]
    for row in rows.values():  # (a random backbone: no figure is known beyond these)
        assert 0 <= row["recall"]["1"] <= row["recall"]["2"] <= 1 and 0 <= row["map"] <= 1
    assert "| parts+rmac | qe |" in (tiny / "retrieval" / "results.md").read_text()
    assert "retrieval" in summary["timings"]


def test_unsupervised_parts_read_no_label(tiny):
    """groups -> parts_unsup -> encoding_unsup -> the parts[unsup] SVMs; the same images
    with permuted labels (another dataset key) give bit-identical groups, parts, codes."""
    rows = [f"{split}/{cls}/{i}.png,{cls},{split}" for split, n in (("train", 3), ("test", 2))
            for cls in ("Cat", "dog") for i in range(n)]
    labels = [r.split(",")[1] for r in rows]
    permuted = np.random.default_rng(1).permutation(labels)
    for name, column in (("labels.csv", labels), ("permuted.csv", permuted)):
        (tiny / "data" / name).write_text("path,label,split\n" + "".join(
            f"{r.split(',')[0]},{c},{r.split(',')[2]}\n" for r, c in zip(rows, column)))
    base = [a for a in args(tiny)[1::2] if "=" in a and a != "data.format=folders"] + [
        "data.format=csv", "parts.n_parts=2", "parts.min_images=1", "groups.n_groups=2",
        "groups.min_images=1", "classifier.n_bootstrap=100",
        'classifier.methods=["global", "parts[unsup]", "parts[unsup]+global"]']
    pipe = Pipeline(load_config(None, base), cache_dir=tiny / "cache-unsup")
    summary = pipe.run(out=tiny / "unsup")
    assert {"groups", "parts_unsup", "encoding_unsup"} <= set(summary["stages"])
    assert "parts" not in summary["stages"]  # no supervised parts were needed
    assert set(summary["methods"]) == {"global", "parts[unsup]", "parts[unsup]+global"}
    group = pipe.load("groups")
    assert sorted(set(group.tolist())) == [0, 1] and len(group) == 6
    assert summary["methods"]["parts[unsup]"]["dim"] == 2 * 2 * 5  # groups x parts x cells
    other = Pipeline(load_config(None, base + ["data.csv=permuted.csv"]),
                     cache_dir=tiny / "cache-unsup")
    other.run(until="encoding_unsup", out=tiny / "unsup2")
    assert other.key("dataset") != pipe.key("dataset")
    assert not np.array_equal(other.dataset.manifest.label, pipe.dataset.manifest.label)
    np.testing.assert_array_equal(other.load("groups"), group)
    for a, b in zip(other.load("parts_unsup").class_results_,
                    pipe.load("parts_unsup").class_results_):
        for key in ("weights", "bias", "loo_directions"):
            np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_array_equal(np.asarray(other.load("encoding_unsup").codes),
                                  np.asarray(pipe.load("encoding_unsup").codes))


def test_late_fusion_method_is_the_weighted_sum_of_its_two_svms(tiny):
    base = [a for a in args(tiny)[1::2] if "=" in a] + [
        "parts.n_parts=3", "parts.min_images=2", "classifier.n_bootstrap=100",
        'classifier.methods=["parts|global", "global"]']
    pipe = Pipeline(load_config(None, base), cache_dir=tiny / "cache-fusion")
    summary = pipe.run(out=tiny / "fusion")
    models = pipe.load("classifier").models
    assert set(models) == {"parts|global", "global"}
    info = models["parts|global"]["info"]
    w = info["weight"]
    assert summary["methods"]["parts|global"]["weight"] == w and 0 <= w <= 1
    # its global half is the global method's SVM, scaled by 1 - w
    d = models["global"]["coef"].shape[1]
    np.testing.assert_allclose(models["parts|global"]["coef"][:, -d:],
                               (1 - w) * models["global"]["coef"], atol=1e-6)
    assert info["C_b"] == models["global"]["info"]["C"]
    assert "w = " in (tiny / "fusion" / "results.md").read_text()


def test_cv_holds_each_fold_out_of_part_learning_too(tiny):
    """``encoding_cv``: per fold of the classifier's CV, the training images' codes by parts
    learnt without that fold (the fold's images encoded as unseen, the others leave-one-out),
    the same as the library gives for parts fitted on the other folds alone; the part
    methods' CV runs on them, ``global``'s does not; ``cv_parts = false`` drops the stage."""
    from partlearn.classify import cv_splits
    from partlearn.encoding import PartEncoder
    from partlearn.stages.encoding import image_regions
    from partlearn.stages.parts import learner

    base = [a for a in args(tiny)[1::2] if "=" in a] + [
        "parts.n_parts=3", "parts.min_images=2", "classifier.n_bootstrap=100",
        'classifier.methods=["global", "parts", "parts|global"]']
    pipe = Pipeline(load_config(None, base), cache_dir=tiny / "cache-cvparts")
    assert pipe.stages[pipe.stages.index("encoding") + 1] == "encoding_cv"
    pipe.run(out=tiny / "cvparts")
    data, feats = pipe.dataset, pipe.load("features")
    train, y = data.train, data.manifest.label[data.train]
    splits = cv_splits(y, pipe.cfg.classifier.cv_folds, pipe.cfg.seed)
    folds = pipe.load("encoding_cv")
    assert len(folds) == len(splits) == 3  # 3 training images per class
    full = pipe.load("encoding").codes[train]
    for j, (tr, te) in enumerate(splits):
        ref = learner(pipe.cfg).fit([feats.image(int(train[i])) for i in tr], y[tr],
                                    boxes=feats.image_boxes(train[tr]),
                                    class_names=list(data.manifest.classes))
        images = image_regions(data, feats, train)
        expect = PartEncoder.from_config(pipe.cfg.encoding, ref, prefit=True).fit().codes(
            images, train=tr)
        np.testing.assert_allclose(folds[j], expect, atol=1e-5)
        assert not np.allclose(folds[j][te], full[te], atol=1e-3)  # other parts than all's
    info = {m: v["info"] for m, v in pipe.load("classifier").models.items()}
    assert info["parts"]["cv_parts"] and info["parts|global"]["cv_parts"]
    assert not info["global"]["cv_parts"]

    off = Pipeline(load_config(None, base + ["classifier.cv_parts=false"]),
                   cache_dir=tiny / "cache-cvparts")
    assert "encoding_cv" not in off.stages
    assert off.key("classifier") != pipe.key("classifier")
    off.run(out=tiny / "cvparts-off", report=False)
    assert not off.load("classifier").models["parts"]["info"]["cv_parts"]


def test_a_perturbed_copy_of_the_features_is_its_own_entry_computed_once(finished, tiny):
    """``features.noise``: a seeded perturbed copy of every image's features, in its own
    cache entry (the interpretability evaluator's stability), computed the first time only;
    at 0 the features' key is the one cached before the setting existed."""
    from partlearn.evaluation import EvalContext

    cfg, cache, summary = finished
    pipe = Pipeline(cfg, cache_dir=cache)
    pipe.key("features")
    assert "features.noise" not in pipe._desc["features"]["params"]  # off: keyed as before
    assert pipe.key("features") == summary["stages"]["features"]["key"]
    ctx = EvalContext(pipe, tiny / "finished")
    noisy = ctx.perturbed_features(0.2)
    variant = pipe.variant({"features.noise": 0.2})
    key = variant.key(variant.features_stage)
    assert key != pipe.key(pipe.features_stage)
    entry = variant.cache.get(variant.features_stage, key)
    mtime = entry.path.stat().st_mtime_ns
    clean = pipe.load(pipe.features_stage)
    i = int(pipe.load("dataset").test[0])
    a, boxes = clean.own(i)
    b, noisy_boxes = noisy.own(i)
    np.testing.assert_array_equal(boxes, noisy_boxes)
    assert a.shape == b.shape and not np.array_equal(a, b)
    assert np.abs(a - b).max() < 0.5  # perturbed, not another image
    again = EvalContext(Pipeline(cfg, cache_dir=cache), tiny / "finished").perturbed_features(0.2)
    np.testing.assert_array_equal(again.own(i)[0], b)  # seeded: the cached entry, read back
    assert variant.cache.get(variant.features_stage, key).path.stat().st_mtime_ns == mtime


def test_seeds_share_the_features_and_run_part_learning_once_per_seed(tiny):
    base = [a for a in args(tiny)[1::2] if "=" in a] + [
        "parts.n_parts=2", "parts.min_images=2", "classifier.n_bootstrap=100"]
    cache = str(tiny / "cache-seeds")
    one = Pipeline(load_config(None, base), cache_dir=cache)
    r1 = one.run(out=tiny / "seed0")
    pipe = Pipeline(load_config(None, base + ["seeds=[0, 1, 2]"]), cache_dir=cache)
    r3 = pipe.run(out=tiny / "seeds3")
    seeded = ("parts", "encoding", "encoding_cv", "classifier")
    assert list(r3["stages"]) == ["dataset", "regions", "features"] + [
        n for s in seeded for n in (s, f"{s}@seed=1", f"{s}@seed=2")]
    # the first seed is the one-seed run's, every entry of it cached: the features too
    for stage, info in r1["stages"].items():
        assert (r3["stages"][stage]["key"], r3["stages"][stage]["cached"]) == (info["key"], True)
    assert not any(r3["stages"][f"{s}@seed={k}"]["cached"] for s in seeded for k in (1, 2))
    # each seed's stages are those of a run with that seed, cached under their keys
    r_seed1 = Pipeline(load_config(None, base + ["seed=1"]), cache_dir=cache).run(
        out=tiny / "seed1")
    for stage, info in r_seed1["stages"].items():
        assert info["cached"]
        assert info["key"] == r3["stages"][stage if stage not in seeded else f"{stage}@seed=1"][
            "key"]
    assert len({r3["stages"][f"parts{k}"]["key"] for k in ("", "@seed=1", "@seed=2")}) == 3
    # another seed learns other parts from the same features
    assert pipe.load("features") is pipe.load("features")
    assert pipe.key("features") == one.key("features")
    p0, p1 = pipe.load("parts"), pipe.load("parts@seed=1")
    assert p0.parts_.shape == p1.parts_.shape and not np.allclose(p0.parts_, p1.parts_)
    np.testing.assert_array_equal(p0.parts_, one.load("parts").parts_)
    assert pipe.per_seed("classifier") == [(0, "classifier"), (1, "classifier@seed=1"),
                                           (2, "classifier@seed=2")]

    # every method: the mean and spread over the seeds, each seed's figure that seed's run's
    for name, m in r3["methods"].items():
        per = m["top1_per_seed"]
        assert m["seeds"] == [0, 1, 2] and len(per) == 3
        assert per[0] == r1["methods"][name]["top1"] and per[1] == r_seed1["methods"][name]["top1"]
        assert m["top1"] == pytest.approx(np.mean(per))
        assert m["top1_std"] == pytest.approx(np.std(per))
        assert (m["top1_min"], m["top1_max"]) == (min(per), max(per))
        assert m["mean_class_accuracy"] == pytest.approx(np.mean(m["mean_class_accuracy_per_seed"]))
    # the paired comparisons count every seed
    by = {(c["a"], c["b"]): c for c in r3["comparisons"]}
    c = by[("parts", "global")]
    assert c["seeds_a"] == c["seeds_b"] == 3 and c["test"].startswith("sign-flip")
    assert c["diff"] == pytest.approx(r3["methods"]["parts"]["top1"]
                                      - r3["methods"]["global"]["top1"])
    # predictions.csv: the first seed's columns as a one-seed run writes them, then the others
    lines1 = (tiny / "seed0" / "predictions.csv").read_text().splitlines()
    lines3 = (tiny / "seeds3" / "predictions.csv").read_text().splitlines()
    methods = list(r1["methods"])
    assert lines3[0] == lines1[0] + "," + ",".join(f"{m}@seed={k}" for m in methods
                                                   for k in (1, 2))
    width = len(lines1[0].split(","))
    assert [r.split(",")[:width] for r in lines3] == [r.split(",") for r in lines1]
    report = (tiny / "seeds3" / "report.md").read_text()
    assert "| parts | 3 |" in report and "| parts − global | 3 / 3 |" in report

    # one seed, given as seeds: the same keys and predictions as without it
    for extra in (["seeds=[0]"], ["seed=4", "seeds=[0]"]):
        r = Pipeline(load_config(None, base + extra), cache_dir=cache).run(out=tiny / "one")
        assert {s: v["key"] for s, v in r["stages"].items()} == {
            s: v["key"] for s, v in r1["stages"].items()}
        assert (tiny / "one" / "predictions.csv").read_bytes() == \
            (tiny / "seed0" / "predictions.csv").read_bytes()
    # --until a seeded stage runs it for every seed
    todo, _ = pipe._todo("parts", ())
    assert todo[-3:] == ["parts", "parts@seed=1", "parts@seed=2"]
