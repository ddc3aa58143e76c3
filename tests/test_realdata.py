"""The pipeline on the shared datasets with the real default backbone (skipped without PARTLEARN_DATA)."""

import json

import numpy as np
import pytest

from partlearn.cli import main


@pytest.fixture(scope="module")
def cub_run(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cub")
    root = shared_data / "cub200_c001-020" / "CUB_200_2011"
    argv = ["run", "pipelines/cub200.toml", "--set", f"data.root={root}",
            "--set", "data.classes=['Black_footed_Albatross', 'Laysan_Albatross']",
            "--until", "features", "--cache-dir", str(tmp / "cache"), "--out", str(tmp / "run")]
    assert main(argv) == 0
    return tmp, argv


def test_cub_subset_features_with_real_weights(cub_run):
    tmp, _ = cub_run
    results = json.loads((tmp / "run" / "results.json").read_text())
    assert set(results["stages"]) == {"dataset", "regions", "features"}
    audit = json.loads((tmp / "run" / "audit.json").read_text())
    assert audit["n_classes"] == 2 and audit["bad"] == []
    from partlearn.cache import Cache

    entry = Cache(tmp / "cache").get("features", results["stages"]["features"]["key"])
    assert entry.meta["dim"] == 1280
    glob = np.concatenate([entry.shard_array(s, "global") for s in range(entry.n_shards)])
    assert glob.shape == (entry.meta["n_images"], 1280) and glob.dtype == np.float16
    # real ImageNet features: images of one species are closer to each other than to the other's
    manifest = json.loads((Cache(tmp / "cache").get(
        "dataset", results["stages"]["dataset"]["key"]).path / "manifest.json").read_text())
    labels = np.array(manifest["label"])
    g = glob.astype(np.float32)
    sim = g @ g.T
    same = sim[labels[:, None] == labels[None, :]].mean()
    other = sim[labels[:, None] != labels[None, :]].mean()
    assert same > other


def test_cub_subset_warm_run_is_all_cached(cub_run):
    tmp, argv = cub_run
    argv = [a if a != str(tmp / "run") else str(tmp / "warm") for a in argv]
    assert main(argv) == 0
    results = json.loads((tmp / "warm" / "results.json").read_text())
    assert all(v["cached"] for v in results["stages"].values())


def test_cub_subset_end_to_end_parts_land_on_keypoints(cub_run):
    """Every stage on the cached features: methods, and parts localised on the birds."""
    tmp, argv = cub_run
    argv = [a for a in argv if a not in ("--until", "features")]
    argv = [a if a != str(tmp / "run") else str(tmp / "full") for a in argv]
    assert main(argv) == 0
    results = json.loads((tmp / "full" / "results.json").read_text())
    assert results["stages"]["features"]["cached"]
    assert results["methods"]["global"]["top1"] > 0.8  # two albatross species
    loc = results["localization"]["parts"]
    assert loc["n_parts"] == 24
    assert loc["keypoint_consistency"] > loc["random_keypoint_consistency"] + 0.2
    assert loc["inside_object"] > loc["random_inside_object"]
    found = results["interpretability"]["parts"]
    assert found["n_parts"] == 24
    assert found["mean_keypoint_frequency"] == pytest.approx(loc["keypoint_consistency"])
    assert found["mean_keypoint_frequency"] > found["random"]["mean_keypoint_frequency"] + 0.2
    assert found["purity"] > found["random"]["purity"]
    assert 0 <= found["coverage"] <= 1 and found["duplicates"]["pairs"] == 2 * 66


def test_scene15_audit_reports_cross_split_duplicates(shared_data, tmp_path, capsys):
    assert main(["datasets", "audit", "pipelines/scene15.toml", "--set",
                 f"data.root={shared_data / 'scene15'}", "--out", str(tmp_path)]) == 0
    audit = json.loads((tmp_path / "audit.json").read_text())
    assert len(audit["duplicates_across_splits"]) == 11
    assert len(audit["conflicting_labels"]) == 1
    assert "across" in capsys.readouterr().out.lower()
