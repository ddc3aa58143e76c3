import pytest

from partlearn.config import Config, dump_toml, load_config
from partlearn._validation import ConfigError


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('name = "x"\n[data]\nroot = "/d"\n[regions]\nscales = [0.5, 1.0]\n')
    cfg = load_config(path, ["features.short_side=224", "regions.flips=true", "data.format=csv"])
    assert cfg.name == "x" and cfg.data.root == "/d" and cfg.data.format == "csv"
    assert cfg.regions.scales == (0.5, 1.0) and cfg.regions.flips is True
    assert cfg.features.short_side == 224
    assert cfg.features.mode == Config().features.mode  # untouched default


def test_dump_round_trip(tmp_path):
    cfg = load_config(None, ["data.root=/a b", "data.classes=['x','y']", "features.pca_dim=64"])
    path = tmp_path / "c.toml"
    path.write_text(dump_toml(cfg))
    assert load_config(path) == cfg


@pytest.mark.parametrize("override, expected", [
    ("features.mdoe=roi", "did you mean 'mode'"),
    ("featurs.mode=roi", "did you mean 'features'"),
    ("features.short_side=big", "features.short_side='big' should be of type int"),
    ("features.mode=grid", "features.mode='grid' is not one of 'roi', 'crop'"),
    ("regions.scales=[0.5, 2]", "fractions in (0, 1]"),
    ("features.device=gpu", "features.device='gpu'"),
    ("features.whiten=true", "needs features.pca_dim > 0"),
    ("data.on_bad_image=ignore", "data.on_bad_image='ignore'"),
    ("nokey", "should look like section.key=value"),
])
def test_bad_values_are_named(override, expected):
    with pytest.raises(ConfigError, match=None) as e:
        load_config(None, [override])
    assert expected in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[data\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_pipeline_files_load():
    from pathlib import Path

    files = sorted(Path(__file__).parents[1].glob("pipelines/*.toml"))
    assert {f.stem for f in files} >= {"cub200", "mit67", "scene15"}
    for f in files:
        load_config(f)
