"""The transfer evaluation: the class split keeps every novel image out of the learnt
stages, the episodes, the few-shot classifiers, and an end-to-end run."""

import json
import shutil

import numpy as np
import pytest

from partlearn.config import dump_toml, load_config
from partlearn.evaluation.transfer import (accuracies, episodes, logreg_scores,
                                          ncm_scores)
from partlearn.runner import Pipeline
from partlearn._validation import ConfigError, DataError

CLASSES = ("ant", "bee", "cat", "dog")  # the last two are novel (transfer.n_novel = 2)


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    """4 classes x (4 train + 2 test) tinted images in ``data/`` and a random resnet18."""
    import torch
    import torchvision
    from PIL import Image

    root = tmp_path_factory.mktemp("four")
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        for c, cls in enumerate(CLASSES):
            (root / "data" / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 160, (48, 64, 3), dtype=np.uint8)
                pixels[..., c % 3] += 95
                Image.fromarray(pixels).save(root / "data" / split / cls / f"{i}.png")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), root / "r18.pth")
    return root


def settings(root):
    return [f"data.root={root / 'data'}", "data.format=folders", "data.min_train_per_class=1",
            "backbone.name=resnet18", f"backbone.weights={root / 'r18.pth'}",
            "features.short_side=64", "features.workers=0", "features.shard_size=5",
            "regions.scales=[0.5, 0.8]", "parts.n_parts=3", "parts.min_images=2",
            "classifier.n_bootstrap=100", 'classifier.methods=["global"]', "retrieval.ks=[1, 2]", "transfer.n_novel=2",
            "transfer.ways=2", "transfer.shots=[1, 2]", "transfer.queries=2",
            "transfer.episodes=50", 'features.pools=["mac", "gem"]',
            'transfer.methods=["global", "gem+w", "parts", "parts[unsup]", "parts+global"]',
            "groups.n_groups=2"]


def _steady(meta):
    """``meta`` without what differs between two computations of the same entry: the
    creation time, durations and the hash of the meta itself."""
    if isinstance(meta, dict):
        return {k: _steady(v) for k, v in meta.items()
                if k not in ("created", "meta_xxh3_128") and not k.endswith("seconds")}
    return [_steady(v) for v in meta] if isinstance(meta, list) else meta


def entry_files(cache, stage, key) -> dict:
    """Every file of an entry (its meta.json without times and durations)."""
    path = cache / stage / key
    out = {}
    for f in sorted(path.rglob("*")):
        if f.is_file():
            data = f.read_bytes()
            if f.name == "meta.json":
                data = json.dumps(_steady(json.loads(data)), sort_keys=True).encode()
            out[str(f.relative_to(path))] = data
    return out


def test_no_novel_image_reaches_a_learnt_stage(four):
    """The novel images' pixels replaced: every base-side entry has the same key and the
    same bytes; the novel side's entries change (the replacement is seen there)."""
    from PIL import Image

    runs = {}
    for name in ("a", "b"):
        if name == "b":  # the same folder (the audit names it), novel pixels replaced
            shutil.copytree(four / "data", four / "original")
            rng = np.random.default_rng(1)
            for cls in CLASSES[2:]:
                for f in (four / "data").glob(f"*/{cls}/*.png"):
                    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(f)
        pipe = Pipeline(load_config(None, settings(four)), cache_dir=four / f"cache-{name}")
        pipe.run(out=four / f"run-{name}")
        runs[name] = pipe
    shutil.rmtree(four / "data")
    (four / "original").rename(four / "data")
    a, b = runs["a"], runs["b"]
    assert a.cfg.data.classes == CLASSES[:2] and a.novel.cfg.data.classes == CLASSES[2:]
    base = [(s, a.key(s)) for s in a.stages]
    assert {"parts", "parts_unsup", "groups", "descriptors", "classifier"} <= set(a.stages)
    assert base == [(s, b.key(s)) for s in b.stages]
    for stage, key in base:
        stage = a._where(stage)[1]
        assert entry_files(four / "cache-a", stage, key) == entry_files(
            four / "cache-b", stage, key), stage
    status = {r["stage"]: r["state"] for r in a.status()}
    assert {f"novel {s}" for s in a.novel_stages} <= set(status) and set(status.values()) == {
        "cached"}
    novel_a = dict(zip(a.novel_stages, [a.novel.key(s) for s in a.novel_stages]))
    novel_b = dict(zip(b.novel_stages, [b.novel.key(s) for s in b.novel_stages]))
    assert novel_a["dataset"] != novel_b["dataset"] and novel_a["features"] != novel_b["features"]
    # what the evaluator reports
    found = json.loads((four / "run-a" / "results.json").read_text())
    t = found["transfer"]
    assert found["evaluations"]["transfer"] == {"status": "done"}
    assert t["novel_classes"] == ["cat", "dog"] and t["base_classes"] == ["ant", "bee"]
    assert t["n_novel_images"] == 12
    rows = {(r["method"], r["shots"], r["classifier"]): r for r in t["few_shot"]}
    assert set(rows) == {(m, k, c) for m in load_config(None, settings(four)).transfer.methods
                         for k in (1, 2) for c in ("ncm", "logreg")}
    for (m, _, c), r in rows.items():
        assert 0 <= r["mean"] <= 1 and r["ci95"][0] <= r["mean"] <= r["ci95"][1]
        assert (r.get("C") in (0.1, 1.0, 10.0, 100.0)) == (c == "logreg")
    assert rows[("global", 1, "ncm")]["vs_global"]["mean"] == 0
    assert rows[("parts", 1, "ncm")]["dim"] == 2 * 3 * 5  # 2 base classes x 3 parts x 5 cells
    assert {(r["method"], r["rerank"]) for r in t["retrieval"]} == {
        (m, q) for m, _, _ in rows for q in ("none", "qe")}
    report = (four / "run-a" / "report.md").read_text()
    assert "classes outside" in report and "Few-shot" in report


def test_transfer_config_is_checked(four):
    with pytest.raises(ConfigError, match="both name the novel classes"):
        load_config(None, ["transfer.n_novel=1", 'transfer.novel_classes=["cat"]'])
    with pytest.raises(ConfigError, match="features.pools"):
        load_config(None, ["transfer.n_novel=1", 'transfer.methods=["gem"]'])
    with pytest.raises(ConfigError, match="transfer.ways=3 needs at least 3"):
        Pipeline(load_config(None, settings(four) + ["transfer.ways=3"]))
    with pytest.raises(DataError, match="unknown class 'cow'"):
        Pipeline(load_config(None, settings(four) + ["transfer.n_novel=0",
                                                     'transfer.novel_classes=["cow"]']))
    pipe = Pipeline(load_config(None, settings(four) + ["transfer.n_novel=0",
                                                        'transfer.novel_classes=["ANT", "dog"]']))
    assert pipe.cfg.data.classes == ("bee", "cat")
    assert pipe.novel.cfg.data.classes == ("ant", "dog")
    assert pipe.recorded_config().data.classes == ()  # the run records the config as given


def test_episodes_are_disjoint_balanced_and_seeded():
    labels = np.repeat(np.array(["a", "b", "c", "d", "e", "f"]), [8, 9, 10, 8, 12, 20])
    ep = episodes(labels, 5, 3, 4, 200, (7, 3))
    assert ep.support.shape == (200, 5, 3) and ep.query.shape == (200, 5, 4)
    names = np.unique(labels)
    for e in range(200):
        rows = np.concatenate([ep.support[e].ravel(), ep.query[e].ravel()])
        assert len(set(rows)) == len(rows)  # no image twice: support and queries disjoint
        assert len(set(ep.classes[e])) == 5
        for j, c in enumerate(ep.classes[e]):
            assert (labels[ep.support[e, j]] == names[c]).all()
            assert (labels[ep.query[e, j]] == names[c]).all()
    again = episodes(labels, 5, 3, 4, 200, (7, 3))
    assert all(np.array_equal(x, y) for x, y in zip(ep, again))
    other = episodes(labels, 5, 3, 4, 200, (8, 3))
    assert not np.array_equal(ep.support, other.support)
    # every class and image is drawn: the draw covers the whole set
    assert set(ep.classes.ravel()) == set(range(6))
    assert len(np.unique(np.concatenate([ep.support.ravel(), ep.query.ravel()]))) == len(labels)
    with pytest.raises(DataError, match="class 'a' has 8 images"):
        episodes(labels, 2, 5, 4, 10, 0)


def test_ncm_and_logreg_against_direct_computation():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    x = rng.standard_normal((40, 6)) + 1.5 * np.eye(6)[labels]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ep = episodes(labels, 3, 2, 3, 20, 0)
    gram = x @ x.T
    ncm = ncm_scores(gram, ep)
    lr = logreg_scores(gram, ep, [0.5, 10.0])
    for e in (0, 7, 19):
        s, q = ep.support[e].reshape(-1), ep.query[e].reshape(-1)
        means = x[ep.support[e]].mean(axis=1)
        means /= np.linalg.norm(means, axis=1, keepdims=True)
        np.testing.assert_allclose(ncm[e], x[q] @ means.T, atol=1e-10)
        for k, C in enumerate((0.5, 10.0)):
            ref = LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(
                x[s], np.repeat(np.arange(3), 2))
            got = lr[k, e] - lr[k, e].mean(axis=1, keepdims=True)
            want = ref.decision_function(x[q])
            want = want - want.mean(axis=1, keepdims=True)
            np.testing.assert_allclose(got, want, atol=1e-3)  # _STEPS: within 1e-3
            assert (got.argmax(axis=1) == want.argmax(axis=1)).all()
    acc = accuracies(ncm, ep)
    truth = np.repeat(np.arange(3), 3)
    assert acc[3] == (ncm[3].argmax(axis=1) == truth).mean() and acc.shape == (20,)


def foreign(root, classes, *extra):
    """``settings`` without a novel split: a plain run on ``classes``, parts and global."""
    plain = [s for s in settings(root) if not s.startswith(("transfer.", "classifier.methods"))]
    return plain + [f"data.classes={list(classes)}", 'classifier.methods=["parts", "global"]',
                    "retrieval.descriptors=[]", *extra]


def test_parts_from_another_run_are_that_entry_and_learnt_on_none_of_these_images(four):
    """A run on cat and dog takes ant and bee's parts from their run directory: its
    ``parts`` key is that run's entry, nothing is learnt in its own store, its codes are
    those parts' responses without leave-one-out, named by ant and bee; a pipeline file
    gives the same entry (learnt in this run's store), each seed its own."""
    from partlearn.encoding import PartEncoder
    from partlearn.stages.encoding import image_regions

    src = Pipeline(load_config(None, foreign(four, CLASSES[:2])), cache_dir=four / "cache-src")
    src.run(out=four / "run-src")
    learnt = json.loads((four / "run-src" / "results.json").read_text())["stages"]["parts"]
    pipe = Pipeline(load_config(None, foreign(four, CLASSES[2:], "transfer.parts_from="
                                              f"{four / 'run-src'}")), cache_dir=four / "cache-x")
    found = pipe.run(out=four / "run-x")
    assert pipe.key("parts") == learnt["key"] and found["stages"]["parts"]["cached"]
    assert not (four / "cache-x" / "parts").exists() and "encoding_cv" not in pipe.stages
    assert found["evaluations"]["participation"]["status"] != "done"
    status = {r["stage"]: r for r in pipe.status()}  # the parts entry: in the source's store
    assert status["parts"]["key"] == learnt["key"] and status["parts"]["state"] == "cached"
    learner = src.load("parts")
    enc = PartEncoder.from_config(pipe.cfg.encoding, learner, prefit=True).fit()
    data, feats = pipe.load("dataset"), pipe.load("features")
    codes = pipe.load("encoding")
    assert np.array_equal(codes.codes, enc.codes(image_regions(data, feats)))  # no LOO
    assert {n.split("/")[0] for n in codes.names} <= {"ant", "bee"}, codes.names[:3]
    assert set(found["methods"]) == {"parts", "global"}
    # a pipeline file: the same entry, computed in this run's store; seed 1: another one
    toml = four / "src.toml"
    toml.write_text(dump_toml(load_config(None, foreign(four, CLASSES[:2]))))
    by_file = Pipeline(load_config(None, foreign(four, CLASSES[2:], f"transfer.parts_from="
                                                 f"{toml}", "seeds=[0, 1]")),
                       cache_dir=four / "cache-y")
    by_file.run(until="encoding@seed=1", report=False)
    assert by_file.key("parts") == learnt["key"]
    assert by_file.key("parts@seed=1") == Pipeline(
        load_config(None, foreign(four, CLASSES[:2], "seed=1"))).key("parts")
    assert (four / "cache-y" / "parts" / learnt["key"]).is_dir()


def test_parts_from_is_checked_before_any_stage(four, tmp_path):
    def pipe(where, *extra):
        return Pipeline(load_config(None, foreign(four, CLASSES[2:],
                                                  f"transfer.parts_from={where}", *extra)),
                        cache_dir=tmp_path / "cache").key("encoding")

    with pytest.raises(ConfigError, match="no such run directory or pipeline file"):
        pipe(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="config.toml is missing"):
        pipe(tmp_path)
    other = tmp_path / "other.toml"
    other.write_text(f'[data]\nroot = "{four / "data"}"\nformat = "folders"\n'
                     f'[backbone]\nname = "resnet18"\nweights = "{four / "r18.pth"}"\n'
                     '[features]\nshort_side = 96\n[classifier]\nmethods = ["parts"]\n')
    with pytest.raises(ConfigError, match="features.short_side = 96 there, 64 here"):
        pipe(other)
    other.write_text(other.read_text().replace('["parts"]', '["global"]')
                     .replace("short_side = 96", "short_side = 64"))
    with pytest.raises(ConfigError, match="learns no supervised parts"):
        pipe(other)
    with pytest.raises(ConfigError, match="pca_dim"):
        load_config(None, [f"transfer.parts_from={other}", "features.pca_dim=8"])


def test_base_parts_that_detect_a_pattern_shared_by_novel_classes_beat_global():
    """Planted: each of 4 base classes holds its 3 prototypes in 3 of 25 clutter regions;
    2 novel classes hold the prototypes of two of them again (new images, new clutter
    draws). Parts learnt on the base classes find the prototypes in a novel image (the
    response's max over regions); the global descriptor (the regions' mean) sees them
    diluted among the clutter: 5-shot episodes on the novel classes, parts near 100%,
    global far below."""
    from partlearn.data import make_planted_regions
    from partlearn.encoding import ImageRegions, PartEncoder
    from partlearn.parts import PartLearner

    base = make_planted_regions(4, 12, 25, 16, k=3, noise=0.2, seed=0)
    rng = np.random.default_rng(1)
    novel, novel_label = [], np.repeat([0, 1], 20)
    for c in novel_label:
        x = base["clutter"][rng.integers(len(base["clutter"]), size=25)]
        x[rng.choice(25, 3, replace=False)] = base["planted"][c]
        novel.append((x + 0.2 * rng.standard_normal(x.shape)).astype(np.float32))
    learner = PartLearner(n_parts=3, n_negative_images=20, nms_iou=0.0, random_state=0).fit(
        base["X"], base["label"], boxes=base["boxes"])
    enc = PartEncoder(learner, prefit=True, pyramid=(1,)).fit()  # one cell: the max
    parts = enc.transform([ImageRegions(x, base["boxes"][0], (100, 100), None) for x in novel])

    def unit(d):
        d = np.asarray(d, np.float64)
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    descriptors = {"parts": unit(parts), "global": unit([x.mean(axis=0) for x in novel])}
    ep = episodes(novel_label, 2, 5, 5, 300, 0)
    acc = {name: accuracies(ncm_scores(d @ d.T, ep), ep).mean()
           for name, d in descriptors.items()}
    assert acc["parts"] > 0.95 and acc["parts"] - acc["global"] > 0.15, acc


def test_with_seeds_the_part_methods_are_the_mean_of_each_seeds_run(four):
    """``seeds = [0, 1]``: a part method's few-shot row is the mean over the seeds, its
    seed-1 figure that of a run at seed 1 alone; `global` runs once."""
    base = [s for s in settings(four) if not s.startswith(("transfer.methods", "groups."))]
    runs = {}
    for name, extra in (("both", "seeds=[0, 1]"), ("one", "seed=1")):
        pipe = Pipeline(load_config(None, base + ['transfer.methods=["global", "parts"]',
                                                  extra]),
                        cache_dir=four / "cache-seeds")
        runs[name] = {(r["method"], r["shots"], r["classifier"]): r
                      for r in pipe.run(out=four / f"run-seeds-{name}")["transfer"]["few_shot"]}
    both, one = runs["both"], runs["one"]
    for key, r in both.items():
        if key[0] == "global":
            assert "per_seed" not in r
            continue
        assert r["seeds"] == 2 and r["mean"] == pytest.approx(np.mean(r["per_seed"]))
        assert r["per_seed"][1] == pytest.approx(one[key]["mean"])
    report = (four / "run-seeds-both" / "report.md").read_text()
    assert "mean over 2 seeds of part learning" in report
