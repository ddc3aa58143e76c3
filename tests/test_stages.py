"""Stage declarations: every config field is keyed by the stages that read it, or is on
the one list of fields that cannot change a result; a field changes exactly the keys of
its stages and of the stages downstream of them."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from partlearn import Pipeline
from partlearn.config import Config, load_config
from partlearn.stages import BY_NAME, NAMES, NOT_KEYED, STAGES

# a value for every field that differs from the base config's and passes its checks
OTHER = {
    "features.noise": 0.2, "classifier.stability_noise": 0.2,
    "data.format": "auto", "data.classes": ["Cat"], "data.on_bad_image": "skip",
    "regions.scales": [0.5], "regions.stride": 0.5, "backbone.name": "resnet50",
    "backbone.weights": "none", "backbone.tap": "layer3", "backbone.mean": [0.5, 0.5, 0.5],
    "backbone.std": [0.2, 0.2, 0.2], "features.mode": "crop", "features.roi_pooling": "max",
    "features.pca_dim": 4, "parts.beta_start": 1.0, "parts.beta_end": 16.0,
    "parts.orthogonality": 0.1, "parts.nms_iou": 0.3, "parts.shrinkage": 0.5,
    "parts.keep": 2, "encoding.pyramid": [1],
    "classifier.methods": ["global", "parts", "parts[unsup]+global", "parts[hier]+global",
                           "2level:parts"], "groups.n_groups": 3,
    "hierarchy.source": "groups", "hierarchy.n_groups": 3,
    "classifier.C": [1.0], "dpnet.variants": ["wo", "cs"], "dpnet.seeds": [3],
    "dpnet.val_fraction": 0.3, "dpnet.init_from_parts": False, "features.device": "cpu",
    "encoding.device": "cpu", "dpnet.device": "cpu", "features.pools": ["gem"],
    "retrieval.descriptors": ["mac"], "retrieval.rerank": ["none"], "retrieval.ks": [1],
    "retrieval.diffusion_alpha": 0.9, "retrieval.index": "ivfpq", "n_jobs": 1,
    "classifier.solver": "liblinear", "backend": "dask", "features.pyramid": [96, 640],
    "features.pyramid_select": "mean", "transfer.methods": ["global"], "transfer.shots": [2],
    "transfer.classifiers": ["ncm"], "transfer.C": [2.0], "seeds": [0, 1],
}
BASE = ["features.pca_dim=8", "features.pyramid=[640]", 'dpnet.variants=["wo"]', "dpnet.init_from_parts=true",
        'features.pools=["mac"]',
        'classifier.methods=["global", "parts", "parts[unsup]", "parts[hier]"]']


def all_fields():
    for section in dataclasses.fields(Config):
        value = getattr(Config(), section.name)
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                yield f"{section.name}.{f.name}", getattr(value, f.name)
        else:
            yield section.name, value


def other(name, value):
    if name in OTHER:
        return OTHER[name]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 1.25
    if isinstance(value, str):
        return value + "x"
    raise AssertionError(f"give {name} a value in OTHER")


def toml(v):
    import json

    return json.dumps(v) if not isinstance(v, bool) else str(v).lower()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    for split in ("train", "test"):
        for cls in ("Cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / split / cls / "0.png")
    return root


def keys(data, tmp_path, monkeypatch, overrides=()):
    import partlearn.stages.features as features

    # the backbone's resolved identity, without building models: the raw fields are keyed
    monkeypatch.setattr(features, "backbone_identity",
                        lambda ctx: dataclasses.asdict(ctx.cfg.backbone))
    cfg = load_config(None, [f"data.root={data}", "data.format=folders", *BASE, *overrides])
    pipe = Pipeline(cfg, cache_dir=tmp_path)
    return {s: pipe.key(s) for s in pipe.stages}, pipe


def stage_of(pipe, name):
    """The stage a name of ``pipe.stages`` runs (``features@640``: ``features``)."""
    return pipe._subs[name][0] if name in pipe._subs else name


def owners_of(field, pipe) -> set:
    """The stages of ``pipe`` that declare ``field``; a sub-input (``features@640``) when its
    stage declares it and its override does not set it."""
    return {n for n in pipe.stages if field in BY_NAME[stage_of(pipe, n)].field_names()
            and field not in pipe._subs.get(n, (None, {}))[1]}


def downstream(stages: set, pipe) -> set:
    out = set(stages)
    for s in pipe.stages:  # in order: an input comes before its readers
        stage = stage_of(pipe, s)
        if any(pipe.resolve(i, stage) in out for i in BY_NAME[stage].input_names(pipe.cfg)):
            out.add(s)
    return out


def test_every_field_is_declared_or_exempt_with_a_reason():
    declared = {f for s in STAGES for f in s.field_names()}
    names = {n for n, _ in all_fields()}
    assert not declared - names, "a stage declares a field the config does not have"
    assert not set(NOT_KEYED) & declared, "a field cannot be both keyed and exempt"
    missing = names - declared - set(NOT_KEYED)
    assert not missing, f"neither keyed nor exempt: {sorted(missing)}"
    assert all(len(reason) > 20 for reason in NOT_KEYED.values())


def test_a_field_changes_its_stages_keys_and_only_those_downstream(data, tmp_path,
                                                                    monkeypatch):
    import shutil

    base, pipe = keys(data, tmp_path, monkeypatch)
    assert tuple(s for s in pipe.stages if s not in pipe._subs) == NAMES  # every stage runs
    assert pipe.stages[2:5] == ("features", "features@640", "multiscale")
    one_scale, _ = keys(data, tmp_path, monkeypatch, ["features.pyramid=[]"])
    copy = tmp_path / "elsewhere"  # the same files (sizes, mtimes) in another folder
    shutil.copytree(data, copy)
    for name, value in all_fields():
        if name in CLASS_SPLIT:
            continue
        new = str(copy) if name == "data.root" else other(name, BASE_VALUE.get(name, value))
        # crop mode shows every region at crop_size: it takes no pyramid
        extra = ["features.pyramid=[]"] if name == "features.mode" else []
        changed, pipe = keys(data, tmp_path, monkeypatch, [*extra, f"{name}={toml(new)}"])
        before = one_scale if extra else base
        if name == "seeds":  # the first seed's entries stay, each seeded stage gets seed 1's
            assert {s: changed[s] for s in before} == before
            assert set(changed) - set(before) == {
                f"{s}@seed=1" for s in before if BY_NAME[stage_of(pipe, s)].seeded}
            assert changed["parts@seed=1"] != changed["parts"]
            continue
        if name in NOT_KEYED:
            assert changed == before, f"{name} is exempt but changes a key"
            continue
        new_scales = {n for n in pipe._subs if n not in before}  # features.pyramid's own
        expect = downstream(owners_of(name, pipe) | new_scales, pipe)
        moved = {s for s in changed if changed[s] != before.get(s)}
        assert moved == expect, f"{name}: keys changed {sorted(moved)}, expected {sorted(expect)}"


# the class split reaches the stages as `data.classes` (the base classes), which keys them;
# tests/evaluation/test_transfer.py shows no base-side key or entry depends on a novel image;
# another run's parts reach them as that run's `parts` key (shown there too)
CLASS_SPLIT = {"transfer.novel_classes", "transfer.n_novel", "transfer.parts_from"}

BASE_VALUE = {"features.pca_dim": 8, "features.pyramid": (640,), "dpnet.variants": ("wo",), "dpnet.init_from_parts": True,
              "features.pools": ("mac",),
              "classifier.methods": ("global", "parts", "parts[unsup]", "parts[hier]")}


def test_the_stages_that_depend_on_the_seed_are_seeded():
    """With ``seeds``, a stage that reads ``seed`` or a seeded stage runs once per seed; but
    the shared ones: PCA and retrieval's whitening (``seed``, shared by every seed's parts)
    and DP-Net (its own ``dpnet.seeds``; initialised from the first seed's parts)."""
    cfg = load_config(None, ["data.root=x", *BASE, *(f"{k}={toml(OTHER[k])}" for k in (
        "classifier.methods", "hierarchy.source", "retrieval.descriptors"))])
    shared = {"pca", "descriptors", "dpnet"}
    for s in STAGES:
        reads_seeded = any(BY_NAME[i].seeded for i in s.input_names(cfg) if i in BY_NAME)
        assert s.seeded == (s.name not in shared and ("seed" in s.fields or reads_seeded)
                            ), s.name
    assert any(BY_NAME[i].seeded for i in BY_NAME["dpnet"].input_names(cfg))


def test_a_dataset_entry_made_from_a_copy_elsewhere_reads_this_data(data, tmp_path):
    """The key holds the files, not their place: the entry a copy computed serves this
    folder, and its images are read here (the copy is gone)."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(data, copy)

    def pipe(root):
        return Pipeline(load_config(None, [f"data.root={root}", "data.format=folders"]),
                        cache_dir=tmp_path / "cache")

    pipe(copy).ensure("dataset")
    shutil.rmtree(copy)
    here = pipe(data)
    assert here.cache.get("dataset", here.key("dataset")) is not None  # the copy's entry
    found = here.load("dataset")
    assert found.manifest.root == str(data) and found.image(0).size == (40, 40)


def test_dataset_key_follows_the_files_contents_not_their_times(data, tmp_path, monkeypatch):
    import os
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    files = sorted(p for p in copy.rglob("*.png"))
    for p in files:  # a copy made again: new times, same bytes
        os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**12))

    def key(root):
        cfg = load_config(None, [f"data.root={root}", "data.format=folders"])
        return Pipeline(cfg, cache_dir=tmp_path / "cache").key("dataset")

    assert key(copy) == key(data)
    memo = list((tmp_path / "cache" / "_memo" / "file_hashes").glob("*.json"))
    assert len(memo) == 2  # the files' hashes, remembered per folder
    Image.fromarray(np.full((40, 40, 3), 7, np.uint8)).save(files[0])
    assert key(copy) != key(data)
