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
    ("features.noise=-1", "features.noise=-1.0 must be >= 0 (0: off)"),
    ("classifier.stability_noise=0.2 features.mode=crop",
     'classifier.stability_noise=0.2 needs features.mode = "roi"'),
    ("data.on_bad_image=ignore", "data.on_bad_image='ignore'"),
    ("nokey", "should look like section.key=value"),
])
def test_bad_values_are_named(override, expected):
    with pytest.raises(ConfigError, match=None) as e:
        load_config(None, override.split(" ") if "stability" in override else [override])
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


@pytest.mark.parametrize("override, message", [
    ("n_jobs=0", "n_jobs=0 must be -1"),
    ("classifier.C=[inf]", "classifier.C=[inf] must be finite"),
    ("classifier.C=[nan]", "classifier.C=[nan] must be finite"),
    ("parts.tol=nan", "parts.tol=nan must be finite"),
    ("dpnet.lr=-1", "dpnet.lr=-1.0 must be > 0"),
    ("dpnet.epochs=0", "dpnet.epochs=0 must be >= 1"),
    ("dpnet.batch_size=0", "dpnet.batch_size=0 must be >= 1"),
    ("dpnet.val_fraction=1.5", "dpnet.val_fraction=1.5 must be in [0, 1)"),
    ("dpnet.patience=-1", "dpnet.patience=-1 must be >= 1"),
    ("dpnet.lambda_orth=-1", "dpnet.lambda_orth=-1.0 must be >= 0"),
    ("dpnet.seeds=[0, 0]", "dpnet.seeds=[0, 0] lists [0] more than once"),
    ("seeds=[1, 2, 1]", "seeds=[1, 2, 1] lists [1] more than once"),
    ('dpnet.variants=["wo", "wo"]', "lists ['wo'] more than once"),
    ("regions.strid=0.3", "--set regions.strid=0.3: unknown key 'regions.strid' (did you mean "
                          "'stride'?)"),
    ("regoins.stride=0.3", "--set regoins.stride=0.3: unknown key 'regoins' (did you mean "
                           "'regions'?)"),
])
def test_bad_values_fail_at_load_naming_the_key(tmp_path, override, message, capsys):
    from partlearn.cli import main

    config = tmp_path / "p.toml"
    config.write_text('name = "x"\n')
    with pytest.raises(ConfigError) as e:
        load_config(config, [override])
    assert message in str(e.value)
    assert str(config) not in str(e.value)  # the file holds none of these mistakes
    assert main(["status", str(config), "--set", "data.root=/x", "--set", override]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_every_setting_is_declared_once_with_default_check_doc_and_keying():
    import dataclasses

    from partlearn.config import settings
    from partlearn.stages import NOT_KEYED

    names = [name for name, _ in settings()]
    assert len(names) == len(set(names)) > 100
    for name, f in settings():
        assert f.default is not dataclasses.MISSING, f"{name} has no default"
        check = f.metadata.get("check")
        assert callable(check) and check.describe(), f"{name} has no check"
        check(name, f.default)  # the default passes its own check
        assert len(f.metadata.get("doc", "")) > 5, f"{name} has no doc"
        reason = f.metadata.get("not_keyed")
        assert reason is None or len(reason) > 20, f"{name}: a reason in words"
        assert (name in NOT_KEYED) == (reason is not None)
    assert NOT_KEYED["dask.timeout"] == "how long the dask backend waits for its scheduler"


@pytest.mark.parametrize("override, message", [
    ("seed=-1", "seed=-1 must be in [0, 4294967295]"),
    (f"seed={2**32}", f"seed={2**32} must be in [0, 4294967295]"),
    ("dpnet.seeds=[-3]", "dpnet.seeds=[-3] must be"),
    ("seeds=[-1]", "seeds=[-1] must be"),
    ("hierarchy.shuffle=-2", "hierarchy.shuffle=-2 must be a seed in [0, 4294967295], or -1"),
    ("retrieval.aqe_alpha=-1", "retrieval.aqe_alpha=-1.0 must be >= 0"),
    ("retrieval.diffusion_gamma=0", "retrieval.diffusion_gamma=0.0 must be > 0"),
    ("retrieval.diffusion_alpha=1", "retrieval.diffusion_alpha=1.0 must be in (0, 1)"),
    ("retrieval.nprobe=0", "retrieval.nprobe=0 must be >= 1"),
    ("retrieval.whiten_regions=0", "retrieval.whiten_regions=0 must be >= 1"),
    ("parts.negative_cache=-1", "parts.negative_cache=-1 must be >= 0"),
    ("parts.hard_negatives=-1", "parts.hard_negatives=-1 must be >= 0"),
    ("parts.beta_end=0", "parts.beta_end=0.0 must be > 0"),
    ("features.gem_p=0", "features.gem_p=0.0 must be > 0"),
    ("features.workers=-2", "features.workers=-2 must be >= 0, or -1 (auto)"),
    ("groups.n_groups=1", "groups.n_groups=1 must be >= 2, or 0 (automatic)"),
    ("hierarchy.n_groups=-1", "hierarchy.n_groups=-1 must be >= 2, or 0 (automatic)"),
    ("dask.n_workers=-1", "dask.n_workers=-1 must be >= 0"),
    ("dask.timeout=0", "dask.timeout=0.0 must be > 0 seconds"),
    ("classifier.cv_folds=1", "classifier.cv_folds=1 must be >= 2"),
    ("classifier.extend=-1", "classifier.extend=-1 must be >= 0"),
    ("backbone.std=[1, 0, 1]", "backbone.std=[1.0, 0.0, 1.0] must hold 3 numbers (R, G, B) > 0"),
    ("encoding.pyramid=[1, 1]", "encoding.pyramid=[1, 1] must be distinct grid sides >= 1"),
    ("retrieval.ks=[]", "retrieval.ks=[] must be a non-empty list of K >= 1"),
    ('retrieval.rerank=["qe", "bogus"]', "retrieval.rerank='bogus' is not one of"),
    ('retrieval.descriptors=["parts+foo"]', "retrieval.descriptors='foo' is not one of"),
    ('retrieval.descriptors=["gem"]', "which needs 'gem' in features.pools"),
    ('data.classes=["a", "a"]', "data.classes=['a', 'a'] lists ['a'] more than once"),
    ('hierarchy.source="taxonomy"', "needs hierarchy.taxonomy"),
    ("classifier.methods=[]", "nothing to evaluate"),
])
def test_every_setting_is_checked_at_load(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert message in str(e.value)


def test_sections_are_checked_when_built():
    from partlearn.config import HierarchyConfig, PartsConfig

    with pytest.raises(ConfigError, match=r"parts\.n_parts='3' should be of type int"):
        PartsConfig(n_parts="3")
    with pytest.raises(ConfigError, match=r"hierarchy\.within_group_parts=1 should be of type "
                                          "bool"):
        HierarchyConfig(within_group_parts=1)
