"""The README's main job: the embedded demo, end to end with the real default backbone."""

import json

from partlearn.cli import main


def test_demo_run_parts_beat_global(tmp_path):
    argv = ["run", "pipelines/demo.toml", "--set", f"data.root={tmp_path / 'demo'}",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    methods = results["methods"]
    assert methods["parts"]["top1"] > methods["global"]["top1"]
    gain = next(c for c in results["comparisons"] if (c["a"], c["b"]) == ("parts", "global"))
    assert gain["ci95"][0] > 0 and gain["mcnemar_p"] < 0.05  # a real gain, not noise
    assert 1 / 6 + 0.1 < methods["global"]["top1"]  # global is not a degenerate baseline
    for name in ("results.md", "predictions.csv", "audit.md", "config.toml"):
        assert (tmp_path / "run" / name).is_file()
