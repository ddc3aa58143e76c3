"""The comparison report: self-contained HTML, external rows, ``partlearn compare``."""

import base64
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from partlearn._validation import DataError
from partlearn.cli import main
from partlearn.config import dump_toml, load_config
from partlearn.evaluation import metrics, paired_comparison
from partlearn.report import compare_runs, external_rows, report_html

CLASSES = ["cat", "dog", "owl"]


def fake_run(path, n_parts=12, seed=0):
    """A run directory as ``partlearn run`` leaves it, made by hand."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], 10)
    preds = {m: np.where(rng.random(30) < acc, y, rng.integers(0, 3, 30))
             for m, acc in (("global", 0.6), ("parts", 0.8), ("parts+global", 0.85))}
    methods = {m: metrics(y, p, 3) | {"C": 1.0, "C_at_edge": False, "cv_accuracy": 0.7,
                                      "cv_folds": 5, "cv": {}, "dim": 10, "train_seconds": 0.1}
               for m, p in preds.items()}
    methods["dpnet"] = metrics(y, preds["parts"], 3) | {
        "top1_std": 0.01, "mean_class_accuracy_std": 0.01, "seeds": [0, 1],
        "top1_per_seed": [0.79, 0.81], "val_accuracy": 0.8, "train_seconds": 2.0, "dim": 30}
    comparisons = [{"a": "parts", "b": "global"} | paired_comparison(
        preds["parts"] == y, preds["global"] == y, 500)]
    summary = {"name": "fake", "dataset": "/data/fake", "backbone": "b", "classes": CLASSES,
               "methods": methods, "comparisons": comparisons, "timings": {"dataset": 0.1},
               "stages": {"dataset": {"key": "k", "cached": True}}, "peak_memory_mb": 10}
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(summary))
    (path / "config.toml").write_text(dump_toml(load_config(None, [f"parts.n_parts={n_parts}"])))
    lines = ["path,label," + ",".join(preds)]
    lines += [f"img/{i}.jpg,{CLASSES[y[i]]}," + ",".join(CLASSES[p[i]] for p in preds.values())
              for i in range(30)]
    (path / "predictions.csv").write_text("\n".join(lines) + "\n")
    return summary, y


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.refs = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def test_html_is_self_contained_with_plots(tmp_path):
    summary, _ = fake_run(tmp_path / "run")
    page = report_html(summary)
    parser = _Collect()
    parser.feed(page)
    assert parser.tags.count("table") >= 3 and parser.tags.count("img") >= 4
    assert all(r.startswith("data:image/png;base64,") for r in parser.refs)
    for ref in parser.refs:  # every image decodes as a PNG
        assert base64.b64decode(ref.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", page.replace("data:", ""))
    assert f"{100 * summary['methods']['dpnet']['top1']:.1f} ± 1.0%" in page  # mean ± std
    assert "`" not in page


def test_external_rows_score_on_the_same_split(tmp_path):
    summary, y = fake_run(tmp_path / "run")
    pred = y.copy()
    pred[:3] = (pred[:3] + 1) % 3
    rows = ["image_id,predicted_label"] + [f"{i}.jpg,{CLASSES[p]}" for i, p in enumerate(pred)]
    (tmp_path / "ext.csv").write_text("\n".join(rows) + "\n")  # file names: unique, accepted
    external_rows(summary, tmp_path / "run", {"other": tmp_path / "ext.csv"}, n_bootstrap=200)
    assert summary["methods"]["other"]["top1"] == pytest.approx(27 / 30)
    assert any(c["a"] == "other" and c["b"] == "global" for c in summary["comparisons"])
    bad = {"missing column": "image,predicted_label\n0.jpg,cat\n",
           "not a test image of": "image_id,predicted_label\nnope.jpg,cat\n",
           "is not one of the 3 classes": "image_id,predicted_label\n0.jpg,emu\n",
           "predictions for 1 of the 30": "image_id,predicted_label\n0.jpg,cat\n"}
    for message, text in bad.items():
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(DataError, match=message.replace("missing column", "missing")):
            external_rows(summary, tmp_path / "run", {"x": tmp_path / "bad.csv"})


def test_compare_runs_and_cli(tmp_path, capsys):
    fake_run(tmp_path / "a", n_parts=6, seed=0)
    fake_run(tmp_path / "b", n_parts=12, seed=1)
    summary = compare_runs([tmp_path / "a", tmp_path / "b"], out=tmp_path / "cmp")
    assert "a:parts" in summary["methods"] and "b:dpnet" in summary["methods"]
    assert sorted(p for p, _ in summary["parts_curve"]["parts"]) == [6, 12]
    assert (tmp_path / "cmp" / "report.html").is_file()
    assert "Accuracy against the number of parts" in (tmp_path / "cmp" / "report.html").read_text()
    assert main(["compare", str(tmp_path / "a")]) == 0  # rebuilt in place
    assert (tmp_path / "a" / "report.md").is_file()
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "nothing")]) == 1
    assert "results.json is missing" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "a"), "--external", "oops"]) == 2


def test_report_renders_in_headless_chromium(tmp_path, chromium):
    fake_run(tmp_path / "run")
    compare_runs([tmp_path / "run"])
    page = tmp_path / "run" / "report.html"
    loaded, rgb = chromium(page, tmp_path)
    assert loaded == f"{page.read_text().count('<img ')}:true"  # every image decoded
    blue = (np.abs(rgb - [0x4a, 0x7a, 0xb5]).sum(axis=2) < 30).sum()  # the method bars
    assert blue > 500  # the plots were drawn, not just the text


def test_runs_sharing_a_folder_name_stay_apart_and_can_be_named(tmp_path, capsys):
    fake_run(tmp_path / "x" / "run", seed=0)
    fake_run(tmp_path / "y" / "run", seed=1)
    summary = compare_runs([tmp_path / "x" / "run", tmp_path / "y" / "run"],
                           out=tmp_path / "cmp")
    assert len(summary["methods"]) == 8  # 4 methods of each run, none lost
    assert {m.rsplit(":", 1)[0] for m in summary["methods"]} == {"x/run", "y/run"}
    assert main(["compare", f"A={tmp_path / 'x' / 'run'}", f"B={tmp_path / 'y' / 'run'}",
                 "--out", str(tmp_path / "cmp2")]) == 0
    report = (tmp_path / "cmp2" / "report.md").read_text()
    assert "| A:parts |" in report and "| B:parts |" in report
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "x" / "run"), str(tmp_path / "x" / "run")]) == 1
    assert "is given twice" in capsys.readouterr().err


def test_headlines_of_runs_on_different_sets(tmp_path, capsys):
    """``compare --markdown``: a section per run, whatever its dataset; every method's
    top-1 with its paired difference to ``global`` as the run computed it, DP-Net's
    best variant, and the cold cost from the stage entries' recorded times."""
    a, _ = fake_run(tmp_path / "a")
    b, _ = fake_run(tmp_path / "b", seed=1)
    b["dataset"] = "/data/other"
    b["methods"]["dpnet[cs]"] = dict(b["methods"]["dpnet"], top1=0.99, seeds=[0, 1, 2])
    b["stages"] = {"features": {"key": "f", "cached": True, "seconds": 90.0},
                   "parts": {"key": "p", "cached": False, "seconds": 30.0},
                   "classifier": {"key": "c", "cached": True}}
    b["machine"] = {"cpu": "Some CPU", "cores": 2, "gpu": None}
    zero = {"mean": 0.0, "ci95": [0.0, 0.0]}
    b["transfer"] = {
        "novel_classes": ["x", "y"], "n_novel_images": 40, "ways": 2, "episodes": 600,
        "reference": "global", "shots": [1, 5],
        "few_shot": [{"method": m, "shots": k, "classifier": c, "mean": a,
                      "vs_global": {"mean": a - g, "ci95": [0, 0]}}
                     for m, k, a, g in (("global", 1, 0.6, 0.6), ("global", 5, 0.8, 0.8),
                                        ("parts", 1, 0.65, 0.6), ("parts", 5, 0.7, 0.8))
                     for c in ("ncm", "logreg")],
        "retrieval": [{"method": "parts", "rerank": "none", "recall": {"1": 0.5},
                       "map@r": 0.25, "vs_global": {"r@1": {"mean": -0.1}, "map@r": zero}}]}
    (tmp_path / "b" / "results.json").write_text(json.dumps(b))
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--markdown", "-"]) == 0
    text = capsys.readouterr().out
    top, sec_a, sec_b = re.split("(?=### [ab]\n)", text)
    assert top.startswith(f"Made by `partlearn compare {tmp_path / 'a'} {tmp_path / 'b'} "
                          "--markdown -`")
    assert sec_a.startswith("### a") and "`/data/other`" in sec_b
    c = a["comparisons"][0]
    assert "p_holm" not in c  # the hand-made run has none: shown as —
    assert (f"| parts | {100 * a['methods']['parts']['top1']:.1f}% | "
            f"{100 * c['diff']:+.1f} [{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}] "
            "| — | 1 |") in sec_a
    assert "| global | " in sec_a and "| — | — | 1 |" in sec_a  # no difference to itself
    assert "| dpnet (DP-Net's best variant) |" in sec_a
    assert "| dpnet[cs] (DP-Net's best variant) | 99.0 ± 1.0% |" in sec_b  # the better one
    assert "| dpnet (DP" not in sec_b and "| 3 |" in sec_b
    assert "2.0 min of stage computation" in sec_b and "1 of 3 stages unrecorded" in sec_b
    assert "Machine: Some CPU, 2 cores, no GPU." in sec_b
    assert "Transfer to 2 classes outside training (40 images; 2-way" in sec_b
    assert "| parts | 65.0 (+5.0) | 70.0 (-10.0) | 50.0 (-10.0) | 25.0 |" in sec_b
    assert "| global | 60.0 | 80.0 | — | — |" in sec_b and "Transfer" not in sec_a
    out = tmp_path / "HEAD.md"
    assert main(["compare", str(tmp_path / "a"), "--markdown", str(out)]) == 0
    assert out.read_text().endswith(sec_a.rstrip("\n") + "\n")
    assert main(["compare", str(tmp_path / "a"), "--markdown", "-", "--out",
                 str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_deletion_is_a_table_and_a_curve_without_keypoint_scores():
    """A run whose interpretability holds deletion alone (no keypoints): its table row and
    its curve figure, the keypoint table left out."""
    from partlearn.report import results_markdown

    curve = {"area": [0, 0.1, 1], "probability": [0.9, 0.2, 0.1], "score": [1, -1, -2]}
    deletion = {"images": 7, "steps": 1, "auc": 0.2, "auc_random": 0.4,
                "difference": {"diff": -0.2, "ci95": [-0.3, -0.1], "n": 7},
                "curve": curve, "curve_random": curve | {"probability": [0.9, 0.8, 0.1]},
                "per_image": {}, "method": "parts"}
    summary = {"interpretability": {"parts": {"deletion": deletion},
                                    "about": {"deletion": "RISE", "keypoint scores": "no"}}}
    text = results_markdown(summary)
    assert "| parts | 7 | 1 | 0.200 | 0.400 | -0.200 [-0.300, -0.100] |" in text
    assert "| parts of | consistency" not in text
    page = report_html(summary)
    assert "Deletion: the predicted class" in page
    assert "data:image/png;base64," in page
