"""Hierarchical parts: the hierarchy's sources and control, group and class parts on a
synthetic set whose answer is known, the two-level decision, the measured properties,
and the pipeline end to end."""

import json

import numpy as np
import pytest

from partlearn import PartLearner
from partlearn.parts import hierarchy as h
from partlearn._validation import DataError
from partlearn.classify import CVSettings, fit_two_level

CLASSES = ("a_x", "a_y", "b_x", "b_y", "b_z")


def write(path, text):
    path.write_text(text)
    return path


def test_taxonomy_reader_and_its_bad_inputs(tmp_path):
    good = write(tmp_path / "t.csv", "class,group\nb_x,B\na_x,A\na_y,A\nb_y,B\nb_z,B\n"
                                     "other,C\n")  # rows of other classes: left out
    g, names = h.read_taxonomy(good, CLASSES)
    assert g.tolist() == [0, 0, 1, 1, 1] and names == ["A", "B"]
    cases = [("class,group\na_x,A\na_y,A\nb_x,B\nb_y,B\n", "1 class(es) of the dataset have "
                                                           "no row: b_z"),
             ("class,group\na_x,A\na_y,A\nb_x,B\nb_y,B\nb_zz,B\n", "did you mean 'b_zz'"),
             ("class,group\na_x,A\na_y,A\nb_x,B\nb_y,B\nb_z,B\na_x,B\n",
              "line 7: class 'a_x' is in two groups, 'A' (line 2) and 'B'"),
             ("name,family\na_x,A\n", "line 1: expected the header class,group"),
             ("class,group\na_x\n", "line 2: expected two fields class,group")]
    for text, message in cases:
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
            h.read_taxonomy(write(tmp_path / "bad.csv", text), CLASSES)
    with pytest.raises(DataError, match="does not exist"):
        h.read_taxonomy(tmp_path / "none.csv", CLASSES)


def test_random_control_keeps_the_group_sizes():
    g = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    draws = [h.shuffle_hierarchy(g, s) for s in range(5)]
    for d in draws:
        assert sorted(np.bincount(d)) == sorted(np.bincount(g))
    assert any(not np.array_equal(d, g) for d in draws)
    assert np.array_equal(h.shuffle_hierarchy(g, 3), draws[3])  # seeded


def test_cluster_and_majority_sources():
    rng = np.random.default_rng(0)
    centres = np.eye(8)[[0, 0, 0, 5, 5]] + 0.05 * rng.normal(size=(5, 8))
    assert h.cluster_classes(centres, 2).tolist() == [0, 0, 0, 1, 1]
    with pytest.raises(DataError, match="2..4 groups"):
        h.cluster_classes(centres, 5)
    # images of class 1 mostly in unsupervised group 3; group 2 gets no class
    label = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    group = np.array([3, 3, 2, 0, 0, 3, 0, 0])
    assert h.groups_to_classes(group, label, 3).tolist() == [0, 1, 1]


def test_sibling_negatives():
    y = np.repeat(np.arange(5), 10)
    g = np.array([0, 0, 1, 1, 1])
    neg = h.sibling_negatives(y, g, 12, 0.75, 0)
    for k, n in enumerate(neg):
        assert len(n) == 12 and len(set(n)) == 12 and not (y[n] == k).any()
        siblings = (g[y[n]] == g[k]).sum()
        assert siblings == 9  # round(0.75 * 12)
    # fewer siblings than wanted: all of them, the rest from the other groups
    neg = h.sibling_negatives(y, g, 20, 0.75, 0)
    assert len(neg[0]) == 20 and (g[y[neg[0]]] == 0).sum() == 10
    # too few images of the other groups: the rest from the siblings
    neg = h.sibling_negatives(y, g, 25, 0.0, 0)
    assert len(neg[2]) == 25 and (g[y[neg[2]]] == 1).sum() == 5


def _shared_and_own(seed, n=20, regions=10, dim=24):
    """4 classes in 2 groups; region 0 of every image holds its group's prototype (shared
    by the group's two classes), region 1 its class's; the rest is noise."""
    rng = np.random.default_rng(seed)
    protos = np.linalg.qr(rng.normal(size=(dim, 6)))[0].T  # orthonormal rows
    class_group = np.array([0, 0, 1, 1])
    X, y = [], []
    for c in range(4):
        for _ in range(n):
            x = rng.normal(0, 1, (regions, dim)).astype(np.float32)
            x[0] += 4 * protos[class_group[c]]
            x[1] += 4 * protos[2 + c]
            X.append(x)
            y.append(c)
    return X, np.array(y), class_group


def _best_region_share(learner, X, labels, region):
    """Per part: the share of its own images whose best region is ``region``."""
    out = []
    for p in range(len(learner.parts_)):
        own = [x for x, c in zip(X, labels) if c == learner.part_class_[p]]
        best = [np.argmax(x @ learner.parts_[p] + learner.part_bias_[p]) for x in own]
        out.append(np.mean(np.array(best) == region))
    return np.array(out)


def test_group_parts_find_the_shared_prototype_class_parts_the_distinguishing_one():
    kw = dict(n_parts=3, keep=1, background_regions=2000, n_negative_images=20, nms_iou=0,
              n_jobs=1)
    flat_at_group = []
    for seed in range(3):
        X, y, g = _shared_and_own(seed)
        group = PartLearner(random_state=seed, **kw).fit(X, g[y])
        assert (_best_region_share(group, X, g[y], 0) >= 0.9).all()
        fine = PartLearner(random_state=seed, **kw).fit(
            X, y, negatives=h.sibling_negatives(y, g, 20, 1.0, seed))
        assert (_best_region_share(fine, X, y, 1) >= 0.85).all()
        # the same learner against the other group's images only: the shared prototype
        # tells a class from them as well as its own does, and is sometimes taken
        other = PartLearner(random_state=seed, **kw).fit(
            X, y, negatives=h.sibling_negatives(y, g, 20, 0.0, seed))
        flat_at_group += list(_best_region_share(other, X, y, 0))
    assert max(flat_at_group) >= 0.5


def test_learner_given_negatives_and_part_counts():
    X, y, g = _shared_and_own(0, n=6)
    neg = h.sibling_negatives(y, g, 8, 0.5, 0)
    est = PartLearner(n_parts=2, background_regions=500, n_jobs=1, random_state=0).fit(
        X, y, negatives=neg, class_n_parts=[1, 2, 3, 1])
    assert np.bincount(est.part_class_).tolist() == [1, 2, 3, 1]
    assert [int(r["n_negatives"]) for r in est.class_results_] == [8] * 4
    with pytest.raises(DataError, match="images of class 0 itself"):
        PartLearner(n_jobs=1).fit(X, y, negatives=[np.flatnonzero(y == 0)] + neg[1:])
    with pytest.raises(DataError, match="4 positive integers"):
        PartLearner(n_jobs=1).fit(X, y, class_n_parts=[1, 2])


def test_two_level_decision():
    rng = np.random.default_rng(0)
    g = np.array([0, 0, 1, 1, 1])
    centres = rng.normal(size=(5, 6)) * 3
    y = np.repeat(np.arange(5), 12)
    x = (centres[y] + rng.normal(size=(len(y), 6))).astype(np.float32)
    model = fit_two_level(x, y, g, CVSettings(folds=3, n_jobs=1))
    scores = model.decision_function(x)
    chosen = (x @ model.group_coef.T + model.group_intercept).argmax(axis=1)
    pred = scores.argmax(axis=1)
    assert np.array_equal(g[pred], chosen)  # the class is always in the chosen group
    assert (pred == y).mean() > 0.9 and 0.8 < model.cv_accuracy <= 1
    assert model.C_within in model.cv and model.cv[model.C_within] == max(model.cv.values())
    # the torch solver: the same Cs and decisions
    batched = fit_two_level(x, y, g, CVSettings(folds=3, n_jobs=1, solver="torch",
                                                device="cpu"))
    assert (batched.C, batched.C_within) == (model.C, model.C_within)
    assert np.array_equal(batched.decision_function(x).argmax(1), pred)
    # within the chosen group the order is the within-group SVM's
    within = x @ model.coef.T + model.intercept
    for i in range(5):
        members = np.flatnonzero(g == chosen[i])
        assert members[within[i, members].argmax()] == pred[i]


def test_specificity_and_containment():
    g = np.array([0, 0, 1, 1])
    label = np.repeat(np.arange(4), 5)
    # part 0 fires on class 0's images only; part 1 on group 1's, both classes alike
    scores = np.stack([np.where(label == 0, 5.0, 0.0), np.where(g[label] == 1, 5.0, 0.0)], 1)
    s = h.specificity(scores[:, :1], label, g, np.array([0]), "class", 5)
    assert s["class_entropy_bits"] == 0 and s["own_class_share"] == 1
    s = h.specificity(scores[:, 1:], label, g, np.array([1]), "group", 10)
    assert s["class_entropy_bits"] == pytest.approx(1.0) and s["own_group_share"] == 1
    # class boxes inside their image's group part box in images 0 and 3 (the whole image)
    size = np.array([[100, 100]] * 4)
    group_boxes = np.array([[[0, 0, 50, 50]], [[0, 0, 50, 50]], [[0, 50, 50, 100]],
                            [[0, 0, 100, 100]]], np.float32)
    class_boxes = np.array([[[10, 10, 20, 20]], [[60, 60, 70, 70]], [[60, 60, 70, 70]],
                            [[60, 60, 70, 70]]], np.float32)
    c = h.containment(class_boxes, group_boxes, np.zeros(4, np.int64), np.array([0]), size)
    assert c["contained"] == 0.5  # images 0 and 3
    assert c["whole_image_share"] == 0.25  # image 3's group box is the whole image
    # the control pairs each image's class boxes with the next image's group boxes: 0 with
    # 1's (inside), 1 with 2's (not), 2 with 3's (the whole image), 3 with 0's (not)
    assert c["control"] == 0.5


def test_pipeline_hierarchical_parts(tmp_path_factory):
    """4 classes in 2 groups from a taxonomy: the stages, their keys (the file's contents,
    not its path), the control, the two-level SVM, the evaluator and the report; a bad
    taxonomy stops the run before the features."""
    import torch
    import torchvision
    from PIL import Image

    from partlearn.cli import main

    root = tmp_path_factory.mktemp("hier")
    rng = np.random.default_rng(0)
    classes = ["redA", "redB", "blueA", "blueB"]
    for split, n in (("train", 4), ("test", 2)):
        for k, cls in enumerate(classes):
            (root / "data" / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 150, (48, 64, 3), dtype=np.uint8)
                pixels[..., 0 if k < 2 else 2] += 100
                pixels[: 16 * (1 + k % 2), :16, 1] = 250
                Image.fromarray(pixels).save(root / "data" / split / cls / f"{i}.png")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), root / "r18.pth")
    tax = write(root / "tax.csv", "class,group\nblueA,blue\nblueB,blue\nredA,red\nredB,red\n")
    base = ["--set", f"data.root={root / 'data'}", "--set", "data.format=folders",
            "--set", "data.min_train_per_class=1", "--set", "backbone.name=resnet18",
            "--set", f"backbone.weights={root / 'r18.pth'}", "--set", "features.short_side=64",
            "--set", "features.workers=0", "--set", "regions.scales=[0.5, 0.8]",
            "--set", "parts.n_parts=3", "--set", "parts.min_images=1",
            "--set", "parts.background_regions=500", "--set", "classifier.cv_folds=2",
            "--set", 'classifier.methods=["parts", "parts[hier]", "2level:parts[hier]"]',
            "--set", "hierarchy.source=taxonomy", "--set", "hierarchy.group_parts=1",
            "--set", "hierarchy.class_parts=2", "--cache-dir", str(root / "cache")]
    config = write(root / "p.toml", 'name = "hier"\n')

    def run(out, *extra):
        assert main(["run", str(config), *base, "--set", f"hierarchy.taxonomy={extra[0]}",
                     *extra[1:], "--out", str(root / out)]) == 0
        return json.loads((root / out / "results.json").read_text())

    # a class without a row: one line, before the features
    bad = write(root / "bad.csv", "class,group\nblueA,blue\nblueB,blue\nredA,red\n")
    assert main(["run", str(config), *base, "--set", f"hierarchy.taxonomy={bad}",
                 "--out", str(root / "bad")]) == 1
    assert not (root / "cache" / "features").exists()
    one = write(root / "one.csv", "class,group\nblueA,b\nblueB,b\nredA,b\nredB,b\n")
    assert main(["run", str(config), *base, "--set", f"hierarchy.taxonomy={one}",
                 "--out", str(root / "bad")]) == 1
    assert not (root / "cache" / "features").exists()

    r = run("r1", tax)
    stages = r["stages"]
    assert {"hierarchy", "parts_group", "parts_class", "encoding_hier"} <= set(stages)
    from partlearn import Pipeline
    from partlearn.config import load_config

    pipe = Pipeline(load_config(root / "r1" / "config.toml"))
    hier = pipe.load("hierarchy")
    assert hier.group_names == ["blue", "red"] and hier.class_group.tolist() == [0, 0, 1, 1]
    assert np.bincount(pipe.load("parts_group").part_class_).tolist() == [2, 2]  # 1 x 2
    assert np.bincount(pipe.load("parts_class").part_class_).tolist() == [2] * 4
    codes = np.asarray(pipe.load("encoding_hier").codes)
    assert codes.shape[1] == (4 + 8) * 5  # parts x cells (1x1 + 2x2)
    np.testing.assert_allclose(np.linalg.norm(codes, axis=1), 1, rtol=1e-5)
    # the two-level predictions are its model's, and stay in the group it chose
    clf = pipe.load("classifier")
    model = clf.model("2level:parts[hier]")
    x = codes[clf.test_images]
    assert np.array_equal(model.decision_function(x).argmax(1),
                          clf.models["2level:parts[hier]"]["test_pred"])
    levels = r["hierarchy"]["levels"]
    assert set(levels) == {"parts", "parts[hier]", "2level:parts[hier]"}
    assert r["hierarchy"]["groups"] == {"blue": ["blueA", "blueB"], "red": ["redA", "redB"]}
    props = r["hierarchy"]["parts"]
    assert set(props) == {"group parts", "class parts", "flat parts"}
    assert 0 <= props["class parts"]["containment"]["contained"] <= 1
    assert "Hierarchy of classes" in (root / "r1" / "report.md").read_text()
    assert "Hierarchy: accuracy per level" in (root / "r1" / "report.html").read_text()

    # the same contents elsewhere: every stage cached; other contents: a new hierarchy
    moved = write(root / "moved.csv", tax.read_text())
    assert all(v["cached"] for v in run("r2", moved)["stages"].values())
    swapped = write(root / "swap.csv", "class,group\nblueA,x\nredA,x\nblueB,y\nredB,y\n")
    r3 = run("r3", swapped, "--set", 'retrieval.descriptors=["parts[hier]"]',
             "--set", 'retrieval.rerank=["none"]', "--set", "retrieval.ks=[1, 2]")
    assert not r3["stages"]["hierarchy"]["cached"] and r3["stages"]["parts"]["cached"]
    assert [row["descriptor"] for row in r3["retrieval"]["rows"]] == ["parts[hier]"]
    # the control: the classes dealt at random into groups of the same sizes
    r4 = run("r4", tax, "--set", "hierarchy.shuffle=1")
    assert sorted(len(v) for v in r4["hierarchy"]["groups"].values()) == [2, 2]


def test_parts_of_parts_keep_the_finer_regions_inside_the_best_boxes():
    boxes = np.array([[0, 0, 100, 100], [10, 10, 50, 50], [20, 20, 40, 40], [45, 45, 60, 60],
                      [60, 60, 90, 90], [5, 5, 30, 30]], np.float32)
    x = np.zeros((6, 2), np.float32)
    x[1, 0] = 1  # the part's best region: box 1
    keep = h.inside_best_boxes(x, boxes, np.array([[1.0, 0.0]], np.float32),
                               np.zeros(1, np.float32))
    # the whole image is larger; 2 and 5 lie inside; 3 is inside the box grown by 25%
    # (to -0, 60); 4 lies outside it
    assert keep.tolist() == [False, True, True, True, False, True]
