"""Cost that grows with the data as it should, without timing anything.

Every per-image view of the region features (a memory-map slice: ``RegionFeatures.image``,
behind ``images``, ``own``, ``regional_macs`` and the encoder's ``ImageRegions``) and every
per-image box slice (``image_boxes``) is counted, per stage, on a run with every stage on,
at two sizes of the same tiny demo data (twice the images per class). A stage that builds
its views once per image makes about twice the calls at twice the size; one that rebuilds
them per image of another loop (``[image_regions(...)[i] for i in train]``: n_train x N)
makes four times as many, and fails.
"""

import dataclasses

from partlearn import Pipeline
from partlearn.config import load_config
from partlearn.data import demo
from partlearn.stages import BY_NAME
from partlearn.stages.features import RegionFeatures

#: every stage on, tiny: 4 classes, a random resnet18 to layer3 at 48 px
SETTINGS = [
    "n_jobs=1", "backbone.name=\"resnet18\"", "backbone.weights=\"none\"",
    "backbone.tap=\"layer3\"", "features.short_side=48", "features.pyramid=[64]",
    "features.workers=0", "features.device=\"cpu\"", "features.pca_dim=16",
    "features.pools=[\"mac\", \"rmac\"]", "regions.scales=[0.4, 0.7]", "regions.stride=0.5",
    "regions.flips=true", "data.format=\"csv\"", "data.min_train_per_class=1",
    "parts.n_parts=3", "parts.min_images=1", "parts.background_regions=500",
    "parts.n_negative_images=1000",
    "groups.n_groups=2", "groups.min_images=1", "groups.restarts=1",
    "hierarchy.n_groups=2", "hierarchy.group_parts=1", "hierarchy.class_parts=2",
    "classifier.methods=[\"global\", \"parts\", \"parts+global\", \"parts[unsup]\", "
    "\"parts[hier]\", \"2level:parts[hier]\"]",
    "classifier.C=[1.0]", "classifier.extend=0", "classifier.cv_folds=2",
    "classifier.n_bootstrap=100", "dpnet.variants=[\"wo\"]", "dpnet.seeds=[0]",
    "dpnet.epochs=1", "dpnet.refit=false", "dpnet.device=\"cpu\"", "encoding.device=\"cpu\"",
    "retrieval.descriptors=[\"rmac\", \"parts\"]", "retrieval.rerank=[\"none\", \"qe\"]",
    "retrieval.ks=[1, 2]",
]


def count_views(root, cache, out, monkeypatch) -> dict[str, int]:
    """Per stage (``evaluate``: the evaluators and the report), the per-image views of the
    region features a cold run makes."""
    counts: dict[str, int] = {}
    current = ["evaluate"]  # what runs outside a stage's compute: the evaluators, the report

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            outer, current[0] = current[0], name
            try:
                return fn(*args, **kwargs)
            finally:
                current[0] = outer
        return wrapper

    for name, stage in list(BY_NAME.items()):
        monkeypatch.setitem(BY_NAME, name, dataclasses.replace(
            stage, compute=counted(name, stage.compute)))
    image, boxes = RegionFeatures.image, RegionFeatures.image_boxes

    def counting_image(self, i, shards=None):
        counts[current[0]] = counts.get(current[0], 0) + 1
        return image(self, i, shards)

    def counting_boxes(self, index):
        index = list(index)
        counts[current[0]] = counts.get(current[0], 0) + len(index)
        return boxes(self, index)

    monkeypatch.setattr(RegionFeatures, "image", counting_image)
    monkeypatch.setattr(RegionFeatures, "image_boxes", counting_boxes)
    cfg = load_config(None, SETTINGS + [f"data.root=\"{root}\""])
    pipe = Pipeline(cfg, cache_dir=cache)
    pipe.run(out=out)
    for name in pipe.stages:
        counts.setdefault(name, 0)
    monkeypatch.undo()
    return counts


def test_per_image_work_grows_linearly(tmp_path, monkeypatch):
    sizes = {}
    for k in (1, 2):
        spec = demo.DemoSpec(n_classes=4, n_train=3 * k, n_test=2 * k, image_size=48,
                             n_clutter=(2, 3))
        root = demo.make_demo(tmp_path / f"data{k}", spec=spec)
        sizes[k] = count_views(root, tmp_path / f"cache{k}", tmp_path / f"run{k}", monkeypatch)
    stages = set(sizes[1]) | set(sizes[2])
    assert {"encoding", "encoding_cv", "parts", "parts_unsup", "parts_class", "dpnet",
            "descriptors", "pca", "multiscale", "evaluate"} <= stages
    n_images = 4 * 5  # at 1x
    too_many = {}
    for name in sorted(stages):
        small, large = sizes[1].get(name, 0), sizes[2].get(name, 0)
        # twice the images: at most about twice the views (a constant's slack), never 4x
        if large > 2.5 * small + n_images:
            too_many[name] = (small, large)
    assert not too_many, f"per-image views that grow faster than the images: {too_many}"


def test_indices_by_label_is_flatnonzero_per_label():
    import numpy as np

    from partlearn._arrays import indices_by_label

    rng = np.random.default_rng(0)
    for n_labels in (0, 1, 5):
        for n in (0, 1, 50):
            y = rng.integers(0, n_labels + 2, n)  # labels past n_labels too: left out
            got = indices_by_label(y, n_labels)
            assert len(got) == n_labels
            for k, idx in enumerate(got):
                assert np.array_equal(idx, np.flatnonzero(y == k))
