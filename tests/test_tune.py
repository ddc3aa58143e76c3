"""``partlearn tune``: the coordinate ascent's rule, and the command end to end on a small
demo dataset (a random ResNet-18): its report, its reuse of the cache, and a test split
whose every label and image is changed without changing a CV figure or the choice."""

import csv
import json
import shutil

import numpy as np
import pytest

from partlearn import Pipeline
from partlearn.cli import main
from partlearn.config import load_config
from partlearn.data import demo
from partlearn.tune import coordinate_ascent, parse_search, tune


def test_coordinate_ascent_rule():
    """Each key to its best with the others fixed, round after round until nothing
    changes; ties keep the current value, then the earlier one; ``rounds`` bounds it."""
    def score_of(table):
        calls = []

        def score(point, r):
            calls.append((dict(point), r))
            return table(point)
        return score, calls

    # b's best depends on a: round 1 moves a to 2 then b to "y"; round 2 changes nothing
    score, calls = score_of(lambda p: {("1", "x"): 0.5, ("2", "x"): 0.6, ("1", "y"): 0.4,
                                       ("2", "y"): 0.7}[p["a"], p["b"]])
    ended = []
    point, converged = coordinate_ascent({"a": ["1", "2"], "b": ["x", "y"]},
                                         {"a": "1", "b": "x"}, score, 3,
                                         lambda *args: ended.append(args))
    assert (point, converged) == ({"a": "2", "b": "y"}, True)
    assert ended == [(1, {"a": "2", "b": "y"}, 0.7, True), (2, {"a": "2", "b": "y"}, 0.7, False)]
    assert calls[:4] == [({"a": "1", "b": "x"}, 1), ({"a": "2", "b": "x"}, 1),
                         ({"a": "2", "b": "x"}, 1), ({"a": "2", "b": "y"}, 1)]
    # one round only: stopped where round 1 ended, not converged
    score, _ = score_of(lambda p: {("1", "x"): 0.5, ("2", "x"): 0.6, ("1", "y"): 0.4,
                                   ("2", "y"): 0.7}[p["a"], p["b"]])
    assert coordinate_ascent({"a": ["1", "2"], "b": ["x", "y"]}, {"a": "1", "b": "x"},
                             score, 1) == ({"a": "2", "b": "y"}, False)
    # ties: the current value stays, even when later in the list; among the others the
    # earlier wins; a last-bit difference of a mean is a tie
    flat = score_of(lambda p: {"1": 0.9, "2": 0.9 + 1e-16, "3": 0.9}[p["a"]])[0]
    assert coordinate_ascent({"a": ["1", "2", "3"]}, {"a": "3"}, flat, 3)[0] == {"a": "3"}
    ahead = score_of(lambda p: {"1": 0.8, "2": 0.9, "3": 0.9}[p["a"]])[0]
    assert coordinate_ascent({"a": ["1", "2", "3"]}, {"a": "1"}, ahead, 3)[0] == {"a": "2"}


def test_parse_search():
    assert parse_search("parts.n_parts=12, 24") == ("parts.n_parts", ["12", "24"])
    assert parse_search("features.pyramid=[];[320, 672]") == ("features.pyramid",
                                                              ["[]", "[320, 672]"])


SPEC = demo.DemoSpec(n_classes=3, n_train=6, n_test=2, image_size=64, n_clutter=(4, 6))


@pytest.fixture(scope="module")
def small(tiny, tmp_path_factory):
    """A 3-class demo (6 training, 2 test images per class) read as a CSV dataset, and
    a config on the tiny fixture's random ResNet-18."""
    root = tmp_path_factory.mktemp("tune")
    demo.make_demo(root / "data", seed=0, spec=SPEC)
    (root / "p.toml").write_text(
        f'name = "small"\n[data]\nroot = "{root / "data"}"\nformat = "csv"\n'
        f'min_train_per_class = 2\n[backbone]\nname = "resnet18"\n'
        f'weights = "{tiny / "r18.pth"}"\n[features]\nshort_side = 64\nworkers = 0\n'
        'device = "cpu"\n[regions]\nscales = [0.4]\nstride = 0.5\n[parts]\nn_parts = 2\n'
        'min_images = 2\n[encoding]\ndevice = "cpu"\n'
        '[classifier]\ncv_folds = 2\nmethods = ["parts"]\nC = [0.1, 10.0]\nextend = 0\n')
    return root


def _poisoned(src, dest):
    """A copy of the dataset whose every test label is another class and every test
    image other pixels of the same size."""
    shutil.copytree(src, dest)
    rows = list(csv.reader((dest / "labels.csv").open()))
    names = demo.class_names(SPEC)
    rng = np.random.default_rng(1)
    from PIL import Image

    for row in rows[1:]:
        if row[2] == "test":
            row[1] = names[(names.index(row[1]) + 1) % len(names)]
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                dest / row[0])
    with (dest / "labels.csv").open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return dest


def test_tune_end_to_end_and_blind_to_the_test_split(small, capsys):
    config, cache = small / "p.toml", small / "cache"
    argv = ["tune", str(config), "--cache-dir", str(cache), "--search", "encoding.top_k=1,3",
            "--try", "parts.n_parts=3", "--out"]
    assert main(argv + [str(small / "t1")]) == 0
    out = small / "t1"
    found = json.loads((out / "tune.json").read_text())
    trials = found["trials"]
    # the config, the variant, top_k=3 (top_k=1 is the config's value: not run again)
    assert [t["changes"] for t in trials] == [[], ["parts.n_parts=3"], ["encoding.top_k=3"]]
    assert all(t["computed"] for t in trials) and found["converged"]
    # each figure is the classifier's CV, as a run of that config records it
    for t in trials:
        pipe = Pipeline(load_config(config, t["overrides"]), cache_dir=cache)
        info = pipe.entry("classifier").meta["parts"]
        assert (t["cv_accuracy"], t["C"]) == (info["cv_accuracy"], info["C"])
        assert info["cv_parts"]
    # the choice: the best of the search's trials, the config's value on a tie
    cv = {t["changes"][0] if t["changes"] else "1": t["cv_accuracy"] for t in trials[::2]}
    assert found["chosen"] == [f"encoding.top_k={'3' if cv['encoding.top_k=3'] > cv['1'] else '1'}"]
    # chosen.toml: the complete config; its classifier entry is the chosen trial's
    chosen = load_config(out / "chosen.toml")
    assert chosen.cache_dir == str(cache.resolve()) and chosen.data.root == str(small / "data")
    assert chosen.encoding.top_k == int(found["chosen"][0].split("=")[1])
    pick = next(t for t in trials if t["number"] == found["chosen_trial"])
    assert (Pipeline(chosen).key("classifier")
            == Pipeline(load_config(config, pick["overrides"]), cache_dir=cache).key("classifier"))
    report = (out / "report.md").read_text()
    assert report.count("\n| ") == len(trials) + 1 + 2  # trial rows + header; rounds
    assert "`encoding.top_k=3`" in report and "partlearn run" in report
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 1 and "<table>" in html
    assert (out / "figures" / "cv_per_trial.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "chosen: trial" in printed

    # again: every trial from the cache, the same figures
    assert main(argv + [str(small / "t2")]) == 0
    again = json.loads((small / "t2" / "tune.json").read_text())
    assert [t["computed"] for t in again["trials"]] == [[]] * 3
    assert [t["cv_accuracy"] for t in again["trials"]] == [t["cv_accuracy"] for t in trials]

    # every test label and test image changed: the dataset (and every stage) is new, the
    # test images' features differ, and not one CV figure, C or the choice moves
    data = _poisoned(small / "data", small / "poisoned")
    bad = small / "bad.toml"
    bad.write_text(config.read_text().replace(str(small / "data"), str(data)))
    result = tune(bad, [("encoding.top_k", ["1", "3"])], variants=[["parts.n_parts=3"]],
                  cache_dir=small / "cache-poisoned", out=small / "t3")
    assert result.trials[0].computed[0] == "dataset" and all(t.computed for t in result.trials)
    before, after = (Pipeline(load_config(c), cache_dir=d)
                     for c, d in ((config, cache), (bad, small / "cache-poisoned")))
    assert before.key("dataset") != after.key("dataset")
    test = before.dataset.test
    assert not np.array_equal(before.load("features").global_features(False)[test],
                              after.load("features").global_features(False)[test])
    assert [(t.changes, t.cv_accuracy, t.C) for t in result.trials] == [
        (tuple(t["changes"]), t["cv_accuracy"], t["C"]) for t in trials]
    assert list(result.chosen) == found["chosen"]
