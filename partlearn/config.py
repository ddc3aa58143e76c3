"""Frozen dataclass configs, loaded from TOML files that hold only overrides.

Every setting is declared here, once (``setting``): its default, its check
(``partlearn._validation``: ``Interval``, ``Options``, ``Each``...), a one-line doc
and, when no stage keys it, the reason it cannot change an output. A section
checks its values when it is built (``check_section``: every field's check,
then the section's few cross-field ``RULES``), so a config, or an estimator's
parameters built into their section (``PartLearner.fit``), is valid by
construction. ``partlearn.stages.NOT_KEYED`` (``not_keyed``) and the README's
settings table (``settings_table``, ``partlearn settings --write README.md``)
are derived from the declarations.

A pipeline file (``pipelines/*.toml``) names only what differs; ``--set
section.key=value`` overrides on top. Unknown keys are rejected with a
did-you-mean; values are checked against the field's type.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ._validation import (ConfigError, Each, Interval, Options, Pattern, Rule, Type,
                          check_choice, check_finite, did_you_mean)

DATASET_FORMATS = ("auto", "cub", "mit67", "revisitop", "csv", "folders", "demo")
BAD_IMAGE_POLICIES = ("error", "skip")
FEATURE_MODES = ("roi", "crop")
RETRIEVAL_POOLS = ("mac", "gem", "spoc", "rmac")
SEARCH_INDEXES = ("flat", "ivfpq")
RERANKING = ("none", "qe", "aqe", "diffusion")
ROI_POOLING = ("mean", "max")
PYRAMID_SELECT = ("nearest", "mean")
METHODS = ("global", "parts", "parts+global", "parts[unsup]", "parts[unsup]+global",
           "parts|global", "parts[unsup]|global",  # a|b: late fusion, weight chosen by CV
           # hierarchical parts ([hierarchy]): group and class parts, one code; "2level:m":
           # the group by one SVM on m's input, then the class within it by the group's SVM
           "parts[hier]", "parts[hier]+global", "parts[hier]|global", "2level:parts[hier]",
           "2level:parts[hier]+global", "2level:parts", "2level:global")
HIERARCHY_SOURCES = ("taxonomy", "cluster", "groups")
DPNET_VARIANTS = ("wo", "orth", "assign", "cs", "orth+assign", "cs+orth", "cs+assign",
                  "cs+orth+assign")
DESCRIPTOR_PARTS = ("global", "parts", "parts[unsup]", "parts[hier]")

SEED_MAX = 2**32 - 1  # numpy's seeds: 0 .. 2**32 - 1
DEVICE = Pattern(r"auto|cpu|cuda(:\d+)?", "'auto', 'cpu', 'cuda' or 'cuda:N'")
TEXT, SWITCH = Type(str), Type(bool)


def _count(low: int = 1, **kw) -> Interval:
    return Interval(int, low, None, **kw)


def _positive(**kw) -> Interval:
    return Interval(float, 0, None, "neither", **kw)


def _fraction(closed: str = "both", **kw) -> Interval:
    return Interval(float, 0, 1, closed, **kw)


def _check_descriptor(name: str, value) -> None:
    for piece in value.split("+"):
        if piece not in DESCRIPTOR_PARTS + ("w",):
            check_choice(name, piece, RETRIEVAL_POOLS + DESCRIPTOR_PARTS)


def setting(default, check, doc: str, *, not_keyed: str | None = None):
    """A config field declared once: its ``default``, its ``check`` (``partlearn.
    _validation``: ``Interval``, ``Options``, ``Each``...), a one-line ``doc`` (the
    README's settings table) and, for a field that no stage keys, ``not_keyed``: why it
    cannot change a cached output (``partlearn.stages.NOT_KEYED``)."""
    return field(default=default, metadata={"check": check, "doc": doc,
                                            "not_keyed": not_keyed})


_SECTIONS: dict[type, str] = {}  # section class -> its name in Config


def _check_when_built(section) -> None:
    check_section(section)  # defined below, with the rules that name the sections


def _section(name: str):
    """A frozen config section whose values are checked when it is built
    (``check_section``)."""
    def wrap(cls):
        cls.__post_init__ = _check_when_built
        cls = dataclass(frozen=True)(cls)
        _SECTIONS[cls] = name
        return cls
    return wrap


@_section("data")
class DataConfig:
    root: str = setting(
        "", TEXT, "dataset folder",
        not_keyed="the dataset stage hashes the files themselves (relative paths, contents): "
                  "the same files elsewhere are the same data")
    format: str = setting(
        "auto", Options(DATASET_FORMATS),
        "`cub`, `mit67`, `revisitop` (instance retrieval), `csv`, `folders`, `auto` "
        "(detected), or `demo` (generated into `data.root`)")
    csv: str = setting("labels.csv", TEXT,
                       "the CSV manifest (`path,label,split[,md5]`) for `csv`")
    classes: tuple[str, ...] = setting((), Each(TEXT, distinct=True),
                                       "a subset of classes by name, case-insensitive (empty: all)")
    on_bad_image: str = setting(
        "error", Options(BAD_IMAGE_POLICIES),
        "`error` names every bad image and stops; `skip` drops them, listed in the audit")
    min_side: int = setting(32, _count(),
                            "images with a shorter short side (px) are bad images")
    min_train_per_class: int = setting(5, _count(0),
                                       "classes with fewer training images are flagged")


@_section("regions")
class RegionsConfig:
    scales: tuple[float, ...] = setting(
        (0.25, 0.35, 0.5, 0.7),
        Each(_fraction("right"), nonempty=True,
             expected="be a non-empty list of fractions in (0, 1]"),
        "square window sides, fractions of the short side")
    stride: float = setting(0.4, _fraction("right", expected="be a fraction of the window in "
                                                              "(0, 1]"),
                            "grid step, fraction of the window side (grids touch every border)")
    full_image: bool = setting(True, SWITCH, "add the whole image as region 0")
    flips: bool = setting(False, SWITCH, "repeat every region on the mirrored image")
    min_size: int = setting(16, _count(0), "windows smaller than this (px) are left out")


@_section("backbone")
class BackboneConfig:
    name: str = setting("efficientnet_lite0", TEXT,
                        "`efficientnet_lite0/1/2`, or a torchvision model (`resnet50`, "
                        "`vgg16`, ...)")
    weights: str = setting("DEFAULT", TEXT,
                           "a weights enum (`ResNet50_Weights.IMAGENET1K_V2`), `DEFAULT`, a "
                           "state-dict file, or `none`")
    tap: str = setting("", TEXT,
                       "the layer to read (default: last conv map; `layer4`; VGG16 `conv5_3`; "
                       "EfficientNet-Lite `blocks.N` or `stride16`, the last block at that "
                       "stride)")
    mean: tuple[float, ...] = setting(
        (), Each(Interval(float), sizes=(0, 3), expected="hold 3 numbers (R, G, B) or be empty"),
        "the input normalisation's mean (R, G, B); empty: the weights'")
    std: tuple[float, ...] = setting(
        (), Each(_positive(), sizes=(0, 3),
                 expected="hold 3 numbers (R, G, B) > 0 or be empty"),
        "the input normalisation's standard deviation (R, G, B); empty: the weights'")


@_section("features")
class FeaturesConfig:
    mode: str = setting("roi", Options(FEATURE_MODES),
                        "`roi`: one forward pass per image + RoIAlign per box; `crop`: crop, "
                        "resize and forward every region")
    short_side: int = setting(448, _count(), "images are resized to this short side (px)")
    roi_size: int = setting(3, _count(), "RoIAlign grid side")
    roi_pooling: str = setting("mean", Options(ROI_POOLING), "the pooling of the RoIAlign grid")
    crop_size: int = setting(224, _count(), "`crop` mode: each region resized to this side (px)")
    batch_size: int = setting(
        8, _count(), "images per batch, batched by size",
        not_keyed="batches hold images of one size; an image's features do not depend on the "
                  "others' beyond float rounding")
    workers: int = setting(
        -1, _count(0, also=(-1,), expected="be >= 0, or -1 (auto)"),
        "DataLoader workers; -1: none on CPU, up to 8 on CUDA",
        not_keyed="processes that decode images")
    device: str = setting(
        "auto", DEVICE,
        "`auto`, `cpu`, `cuda`, `cuda:N` (on CUDA with `features.amp`: autocast in bfloat16 "
        "where the GPU has it, else float16)",
        not_keyed="its effect, the precision, is keyed by the features stage ('precision': "
                  "fp32, or the CUDA autocast dtype)")
    amp: bool = setting(True, SWITCH, "autocast on CUDA (`features.device`)",
                        not_keyed="keyed through 'precision' as well (fp32 on the CPU whatever "
                                  "it says)")
    pca_dim: int = setting(0, _count(0),
                           "PCA fitted on training regions only (0: none)")
    whiten: bool = setting(False, SWITCH, "PCA-whitening (needs `features.pca_dim`)")
    pca_max_regions: int = setting(200_000, _count(), "training regions sampled to fit the PCA")
    shard_size: int = setting(
        128, _count(),
        "images per shard: an interrupted extraction resumes from the last complete shard",
        not_keyed="the shard layout is fixed when an entry's write begins (layout.json); a "
                  "resumed write keeps it")
    pools: tuple[str, ...] = setting(
        (), Each(Options(RETRIEVAL_POOLS)),
        "retrieval descriptors pooled in the features pass: `mac`, `gem` "
        "(`features.gem_p`), `spoc`, `rmac` (every region's max-pooled vector)")
    gem_p: float = setting(3.0, _positive(), "GeM's power")
    pyramid: tuple[int, ...] = setting(
        (), Each(_count(32), distinct=True, expected="be short sides >= 32 px, distinct"),
        "more short sides (e.g. `[672]`): an image pyramid, each scale its own cached "
        "`features` entry (`features@672`, shared with a run at that short side); each "
        "region's descriptor from the scale that shows it nearest `features.pyramid_target` "
        "px, or with `features.pyramid_select = \"mean\"` the mean over the scales; the "
        "whole-image descriptor stays `short_side`'s; []: `short_side` alone")
    pyramid_select: str = setting("nearest", Options(PYRAMID_SELECT),
                                  "how `features.pyramid` gives a region its descriptor")
    pyramid_target: int = setting(224, _count(),
                                  "`nearest`: the side (px) a region is best seen at")
    noise: float = setting(
        0.0, Interval(float, 0, None, expected="be >= 0 (0: off)"),
        "σ of Gaussian noise added to every image's network input (normalised units, "
        "clipped at ±1.25σ; each image's noise seeded by its path; `roi` mode): a perturbed "
        "copy, for the interpretability evaluator's stability (`classifier.stability_noise`)"
        "; 0: off")


@_section("parts")
class PartsConfig:
    """Part learning (``partlearn.parts``); scores are in background-std units."""

    n_parts: int = setting(12, _count(), "parts per class, before pruning")
    n_init: int = setting(1, _count(), "k-means restarts for the initial parts")
    kmeans_iter: int = setting(10, _count(), "k-means iterations for the initial parts")
    beta_start: float = setting(
        0.5, _positive(expected="be > 0 and satisfy 0 < beta_start <= beta_end"),
        "graduated assignment: the first inverse temperature β")
    beta_growth: float = setting(2.0, Interval(float, 1, None, "neither"),
                                 "β's factor from one level to the next")
    beta_end: float = setting(8.0, _positive(), "the last β (at most)")
    updates_per_beta: int = setting(1, _count(), "part updates per β level")
    sinkhorn_iter: int = setting(20, _count(), "Sinkhorn iterations per matching")
    slack: float = setting(
        3.0, Interval(float, 0, None, expected="be >= 0: a z-score under the background "
                                               "model, how far above the background a region "
                                               "must score to match"),
        "a region must score above this to be matched rather than none")
    hard_negatives: int = setting(500, _count(0),
                                  "negative regions mined per part, once per β level")
    negative_cache: int = setting(
        4, _count(0),
        "levels after the first mine among each part's top `hard_negatives * "
        "negative_cache` of the first level; 0: among all negatives every level")
    negative_weight: float = setting(0.5, Interval(float, 0, None),
                                     "weight of the hard negatives' mean (0: none)")
    orthogonality: float = setting(0.0, _fraction(expected="be in [0, 1] (0: off)"),
                                   "orthogonality between a class's parts (0: off)")
    nms_iou: float = setting(0.5, _fraction(expected="be an IoU in [0, 1] (0 or 1: off)"),
                             "spatial competition between parts (0 or 1: off; needs the "
                             "region boxes)")
    sparsity: bool = setting(True, SWITCH, "a region serves at most one part")
    tol: float = setting(1e-3, Interval(float, 0, None),
                         "a β level stops when no part moves more than this")
    keep: int = setting(0, _count(0), "keep the most discriminative parts (0: all)")
    n_negative_images: int = setting(150, _count(), "other-class images sampled per class")
    min_images: int = setting(2, _count(), "training images a class needs, at least")
    background_regions: int = setting(50_000, _count(),
                                      "regions sampled to fit the background model")
    shrinkage: float = setting(0.3, _fraction(), "the background covariance's shrinkage")


@_section("encoding")
class EncodingConfig:
    """Part-response encoding (``partlearn.encoding``)."""

    pyramid: tuple[int, ...] = setting(
        (1, 2), Each(_count(), nonempty=True, distinct=True,
                     expected="be distinct grid sides >= 1, e.g. [1, 2]"),
        "grid sides of the spatial pyramid (1×1 + 2×2 cells, by region centre)")
    top_k: int = setting(1, _count(),
                         "a cell's response: the max (1) or the mean of the k best regions")
    flip_average: bool = setting(True, SWITCH, "average each code with the mirrored image's "
                                               "(with `regions.flips`)")
    leave_one_out: bool = setting(True, SWITCH,
                                  "score each training image with its class's parts learnt "
                                  "without it, so training codes are not inflated")
    device: str = setting("auto", DEVICE, "the products on CUDA (torch) when present, else "
                                          "numpy",
                          not_keyed="numpy or torch products: equal to float32 rounding "
                                    "(tested)")
    batch_images: int = setting(256, _count(), "images per block of the matrix products",
                                not_keyed="images per block of the products: float rounding "
                                          "only")


@_section("classifier")
class ClassifierConfig:
    """Linear SVMs (``partlearn.classify``), evaluation (``partlearn.evaluation``)."""

    methods: tuple[str, ...] = setting(
        METHODS[:3], Each(Options(METHODS)),
        "what to train and compare; also `parts[unsup]`, `parts[unsup]+global` "
        "(unsupervised parts), late fusions `parts|global`, `parts[unsup]|global` (the two "
        "SVMs' scores weighted by training-split CV), hierarchical `parts[hier]`, "
        "`parts[hier]+global`, `parts[hier]|global` and the two-level `2level:parts[hier]`, "
        "`2level:parts[hier]+global`, `2level:parts`, `2level:global`; `[]` for a "
        "retrieval-only run")
    C: tuple[float, ...] = setting(
        (0.01, 0.1, 1.0, 10.0, 100.0),
        Each(_positive(), nonempty=True, expected="be a non-empty list of numbers > 0"),
        "the C grid, extended by decades (`classifier.extend`) at an edge whose C is best; "
        "a C still at the edge is flagged")
    extend: int = setting(3, _count(0),
                          "decades added at an edge whose C is best, at most, per side")
    cv_folds: int = setting(5, _count(2), "stratified folds of the training split for C")
    max_iter: int = setting(20_000, _count(), "the solver's iterations, at most")
    solver: str = setting(
        "torch", Options(("liblinear", "torch")),
        "`torch`: the squared-hinge objective solved for every class, fold and C at once "
        "(Newton-CG, warm-started along C; GPU when present), 40–80× faster than liblinear "
        "from 20 classes on, the same predictions on CUB and 15-Scene (BENCHMARKS.md); or "
        "`liblinear` (scikit-learn's `LinearSVC`, folds × C on processes or Dask workers)")
    memory_mb: float = setting(
        4096.0, Interval(float, 0, None, expected="be >= 0 (0: no limit)"),
        "MiB an SVM's input may take as one float32 matrix (0: no limit); past it `torch` "
        "reads it in row blocks (the same fit), `liblinear` stops with an error",
        not_keyed="the torch solver's row blocks: the same fit to float rounding (tested); "
                  "liblinear past it stops with an error, caching nothing")
    n_bootstrap: int = setting(
        10_000, _count(), "paired bootstrap draws for the intervals between methods",
        not_keyed="read by the accuracy evaluator, which runs on every run and caches "
                  "nothing")
    stability_noise: float = setting(
        0.0, Interval(float, 0, None, expected="be >= 0 (0: off)"),
        "the interpretability evaluator's stability score: σ of the image noise (Huang et "
        "al.: 0.2); it extracts the features of a perturbed copy of every image once "
        "(`features.noise`, its own cache entries); 0: no stability score",
        not_keyed="read by the interpretability evaluator; the perturbed features are keyed "
                  "by features.noise")
    deletion_images: int = setting(
        0, _count(0, expected="be >= 0 (0: off)"),
        "the interpretability evaluator's deletion score (RISE): on this many test images "
        "(a seeded sample), each part method's top part regions are filled with the "
        "backbone's mean pixel step by step, against random boxes of the same sizes; the "
        "features of every modified image are extracted (cost: about 1 + 10 × methods "
        "extractions per image: 10 images add about a fifth to a cold CUB run), memoised "
        "for later runs; 0: off",
        not_keyed="read by the interpretability evaluator; its results are memoised under "
                  "the features' key, the sample, the parts and the classifiers")
    cv_parts: bool = setting(
        True, SWITCH,
        "the CV of a method with supervised part codes (`parts`, `parts+global`, "
        "`parts|global`) relearns the parts without each held-out fold (stage "
        "`encoding_cv`), so C and fusion weights are chosen on images the parts never saw; "
        "`false`: the CV uses `encoding`'s leave-one-out codes (optimistic)")


@_section("dpnet")
class DPNetConfig:
    """DP-Net on the cached region features (``partlearn.dpnet``): which variants, how trained."""

    variants: tuple[str, ...] = setting(
        (), Each(Options(DPNET_VARIANTS), distinct=True),
        "DP-Net constraint sets to train: `wo`, `orth`, `assign`, `cs`, `orth+assign`, "
        "`cs+orth`, `cs+assign`, `cs+orth+assign`")
    seeds: tuple[int, ...] = setting(
        (0, 1, 2), Each(Interval(int, 0, SEED_MAX), distinct=True),
        "every variant is trained once per seed")
    parts_per_class: int = setting(10, _count(), "q (P = q × classes)")
    lr: float = setting(3e-2, _positive(),
                        "Adam's learning rate; chosen by CV on the training split "
                        "(BENCHMARKS.md)")
    weight_decay: float = setting(1e-4, Interval(float, 0, None, expected="be >= 0 (0: off)"),
                                  "Adam's weight decay, on V")
    epochs: int = setting(40, _count(), "at most; early stopping on the held-out slice")
    batch_size: int = setting(32, _count(), "images per batch")
    val_fraction: float = setting(0.2, _fraction("left"),
                                  "of each class's training images, held out for early "
                                  "stopping")
    patience: int = setting(8, _count(), "epochs without a lower held-out cross-entropy")
    refit: bool = setting(True, SWITCH, "then train again on all training images for the "
                                        "best epoch count")
    # each constraint's weight when a variant turns it on (0: off everywhere), chosen per
    # constraint by the lowest held-out cross-entropy over 2 splits of CUB c001-020's
    # training split (benchmarks/select_dpnet_by_cv.py; BENCHMARKS "Item 3"); the
    # assignment term at temperature 0.1: at 1 it cannot act (cosines in [-1, 1] leave
    # every region's softmax over the parts within 0.004 nats of uniform)
    lambda_orth: float = setting(
        0.1, Interval(float, 0, None, expected="be >= 0 (0: off)"),
        "the orthogonality term's weight where a variant turns it on (chosen per constraint "
        "by training-split CV: benchmarks/select_dpnet_by_cv.py)")
    lambda_assign: float = setting(
        0.01, Interval(float, 0, None, expected="be >= 0 (0: off)"),
        "the assignment term's weight where a variant turns it on (chosen likewise)")
    lambda_cs: float = setting(
        1.0, Interval(float, 0, None, expected="be >= 0 (0: off)"),
        "the class-specificity term's weight where a variant turns it on (chosen likewise)")
    assign_temperature: float = setting(
        0.1, _positive(),
        "the assignment term's softmax temperature (at the paper's 1 the term cannot act on "
        "cosines)")
    init_from_parts: bool = setting(False, SWITCH, "start U from the two-stage parts (needs "
                                                   "`parts.n_parts = dpnet.parts_per_class`)")
    device: str = setting("auto", DEVICE, "`auto`, `cpu`, `cuda` or `cuda:N`",
                          not_keyed="CPU or CUDA: float rounding only")


@_section("groups")
class GroupsConfig:
    """Unsupervised groups (Sicre et al., CVPR 2017): the training images clustered by
    their global descriptors, no label read; parts are then learnt per group."""

    n_groups: int = setting(
        0, _count(2, also=(0,), expected="be >= 2, or 0 (automatic)"),
        "unsupervised groups of training images for `parts[unsup]` (0: "
        "`round(sqrt(n_train / 2))`)")
    kmeans_iter: int = setting(25, _count(), "faiss k-means iterations")
    restarts: int = setting(5, _count(), "k-means runs, the best objective kept")
    min_images: int = setting(10, _count(),
                              "smaller groups are merged into the nearest other group")


@_section("hierarchy")
class HierarchyConfig:
    """Hierarchical parts (``partlearn.parts.hierarchy``): classes in groups; parts per group
    (positives the group's images, negatives the other groups') and parts per class
    (negatives mostly its siblings, the group's other classes). Methods ``parts[hier]``,
    ``2level:...``."""

    source: str = setting(
        "cluster", Options(HIERARCHY_SOURCES),
        "the groups of classes for `parts[hier]` and `2level:` methods: `taxonomy` (the CSV "
        "`hierarchy.taxonomy`), `cluster` (agglomerative, class means of the global "
        "descriptor) or `groups` (the unsupervised groups, mapped to classes by majority)")
    taxonomy: str = setting(
        "", TEXT, "a CSV with the header `class,group`, one row per class",
        not_keyed="the hierarchy stage hashes the file's contents, not its path")
    n_groups: int = setting(0, _count(2, also=(0,), expected="be >= 2, or 0 (automatic)"),
                            "`cluster`: the number of groups (0: `round(sqrt(classes))`)")
    shuffle: int = setting(
        -1, Interval(int, 0, SEED_MAX, also=(-1,),
                     expected=f"be a seed in [0, {SEED_MAX}], or -1 (off)"),
        "`>= 0`: the random control with that seed, the classes dealt into groups of the "
        "same sizes")
    group_parts: int = setting(4, _count(), "a group's parts, per class it holds")
    class_parts: int = setting(
        8, _count(), "parts per class; `group_parts + class_parts = parts.n_parts` gives as "
                     "many parts (and as long a code) as the flat parts")
    sibling_fraction: float = setting(
        0.75, _fraction(), "the share of a class's `parts.n_negative_images` drawn from its "
                           "siblings")
    within_group_parts: bool = setting(
        False, SWITCH, "parts of parts: class parts learnt on the regions at a finer scale "
                       "inside (or within 25% of) the best regions of their group's parts, in "
                       "every training image")


_EVALUATOR = "read by the retrieval evaluator, which caches nothing"


@_section("retrieval")
class RetrievalConfig:
    """Image retrieval (``partlearn.retrieval``; the ``descriptors`` stage, the evaluator)."""

    descriptors: tuple[str, ...] = setting(
        (), Each(Rule(_check_descriptor, "names joined by `+`"), distinct=True),
        "what the retrieval evaluator ranks: `global`, `parts`, `parts[unsup]`, "
        "`parts[hier]`, `mac`, `gem`, `spoc` (these need `features.pools`), their whitened "
        "`mac+w` …, `rmac`, and concatenations (`parts+rmac`, `parts[unsup]+gem+w`); "
        "empty: no retrieval", not_keyed=_EVALUATOR)
    ks: tuple[int, ...] = setting(
        (1, 2, 4, 8), Each(_count(), nonempty=True,
                           expected="be a non-empty list of K >= 1"),
        "recall@K (instance level: mP@K)", not_keyed=_EVALUATOR)
    rerank: tuple[str, ...] = setting(
        ("none", "qe", "diffusion"), Each(Options(RERANKING)),
        "each descriptor also re-ranked by average query expansion (`qe`), α-QE (`aqe`), "
        "diffusion (`diffusion`)", not_keyed=_EVALUATOR)
    qe_neighbours: int = setting(5, _count(), "neighbours averaged by `qe` and `aqe`",
                                 not_keyed=_EVALUATOR)
    aqe_alpha: float = setting(3.0, Interval(float, 0, None),
                               "`aqe`: the power on the neighbours' similarities",
                               not_keyed=_EVALUATOR)
    diffusion_k: int = setting(50, _count(), "diffusion: the reciprocal k-NN graph's k",
                               not_keyed=_EVALUATOR)
    diffusion_alpha: float = setting(0.99, _fraction("neither"), "diffusion: α",
                                     not_keyed=_EVALUATOR)
    diffusion_gamma: float = setting(3.0, _positive(),
                                     "diffusion: the power on the graph's similarities",
                                     not_keyed=_EVALUATOR)
    whiten_shrinkage: float = setting(0.1, Interval(float, 0, None),
                                      "whitening (learnt on training images): variances + "
                                      "shrinkage × their mean")
    whiten_regions: int = setting(100_000, _count(),
                                  "training regions sampled to learn the R-MAC whitening")
    index: str = setting(
        "flat", Options(SEARCH_INDEXES),
        "instance-level search of the database: `flat` (exact) or `ivfpq` (faiss "
        "IndexIVFPQ, approximate, for large databases)", not_keyed=_EVALUATOR)
    nprobe: int = setting(16, _count(), "`ivfpq`: cells visited", not_keyed=_EVALUATOR)


_TRANSFER = ("read by the transfer evaluator, which caches nothing; the class split reaches "
             "the stages as `data.classes` (the base classes)")
TRANSFER_CLASSIFIERS = ("ncm", "logreg")


@_section("transfer")
class TransferConfig:
    """Parts as an embedding for classes never seen in training (the ``transfer``
    evaluator): every learnt stage runs on the base classes only, the novel classes'
    images are encoded as unseen images are, then few-shot episodes and retrieval."""

    novel_classes: tuple[str, ...] = setting(
        (), Each(TEXT, distinct=True),
        "classes held out of every learnt stage (names as in `data.classes`); the others are "
        "the base classes", not_keyed=_TRANSFER)
    n_novel: int = setting(0, _count(0),
                           "or: the last N classes of the class list are novel (0: none)",
                           not_keyed=_TRANSFER)
    methods: tuple[str, ...] = setting(
        ("global", "parts", "parts+global"),
        Each(Rule(_check_descriptor, "names joined by `+`"), distinct=True, nonempty=True,
             expected="be a non-empty list of descriptor names"),
        "the descriptors compared on the novel classes (names as `retrieval.descriptors`: "
        "`global`, `mac`, `gem`, `parts`, `parts[unsup]`, `parts+global`, ...)",
        not_keyed=_TRANSFER)
    ways: int = setting(5, _count(2), "classes per few-shot episode", not_keyed=_TRANSFER)
    shots: tuple[int, ...] = setting(
        (1, 5), Each(_count(), nonempty=True, distinct=True,
                     expected="be a non-empty list of distinct shot counts >= 1"),
        "support images per class", not_keyed=_TRANSFER)
    queries: int = setting(15, _count(), "query images per class in an episode",
                           not_keyed=_TRANSFER)
    episodes: int = setting(600, _count(), "episodes per shot count", not_keyed=_TRANSFER)
    seed: int = setting(0, Interval(int, 0, SEED_MAX),
                        "the episodes' seed (shot count K draws from `(seed, K)`)",
                        not_keyed=_TRANSFER)
    classifiers: tuple[str, ...] = setting(
        TRANSFER_CLASSIFIERS, Each(Options(TRANSFER_CLASSIFIERS), nonempty=True, distinct=True),
        "`ncm`: nearest class mean (cosine); `logreg`: L2-regularised logistic regression, "
        "its C chosen by the same episodes on the base classes' training images",
        not_keyed=_TRANSFER)
    C: tuple[float, ...] = setting(
        (0.1, 1.0, 10.0, 100.0),
        Each(_positive(), nonempty=True, expected="be a non-empty list of numbers > 0"),
        "`logreg`: the C grid (chosen on base classes, never on novel ones)",
        not_keyed=_TRANSFER)

    parts_from: str = setting(
        "", TEXT,
        "take the supervised parts and their background model from elsewhere instead of "
        "learning them on this dataset: a finished run directory (its recorded config and "
        "store) or a pipeline TOML (learnt in this run's store if not cached there), learnt "
        "with this run's seed; the backbone and feature settings must match. No image of "
        "this dataset reaches those parts: training images are encoded as test images are "
        "(no leave-one-out, no per-fold parts); empty: learn them here",
        not_keyed="keyed through the parts entry it names (the `parts` input's key is that "
                  "entry's; the encoding's key says the parts are another run's)")

    @property
    def on(self) -> bool:
        return bool(self.novel_classes) or self.n_novel > 0


@_section("dask")
class DaskConfig:
    """Where ``backend = "dask"`` runs the independent tasks (``partlearn.backend``)."""

    scheduler: str = setting(
        "", TEXT, "a running scheduler, `tcp://host:8786`; empty: the run starts a "
                  "`LocalCluster` and stops it at the end",
        not_keyed="where the dask backend's tasks run")
    n_workers: int = setting(0, _count(0, expected="be >= 0 (0: one per core)"),
                             "the `LocalCluster`'s single-threaded worker processes (0: one "
                             "per core)",
                             not_keyed="how many workers the dask backend starts")
    timeout: float = setting(30.0, _positive(expected="be > 0 seconds"),
                             "seconds to reach the scheduler before giving up",
                             not_keyed="how long the dask backend waits for its scheduler")
    gpu_resource: str = setting(
        "", TEXT, "a resource GPU workers declare (`--resources GPU=1`): the "
                  "feature-extraction tasks then go to them only",
        not_keyed="which dask workers get the feature-extraction tasks")


@_section("")
class Config:
    name: str = setting("experiment", TEXT, "run directory prefix",
                        not_keyed="the run directory's prefix")
    cache_dir: str = setting("cache", TEXT, "the stage store",
                             not_keyed="where the entries are stored")
    seed: int = setting(0, Interval(int, 0, SEED_MAX),
                        "every random choice: of the shared stages (PCA's sample, retrieval's "
                        "whitening) and the evaluators always, of part learning and what "
                        "follows it (`seeds`) when `seeds` is empty")
    seeds: tuple[int, ...] = setting(
        (), Each(Interval(int, 0, SEED_MAX), distinct=True),
        "part learning's seeds: the features run once, the parts, groups, codes and "
        "classifier once per seed, each cached as that seed's (\"Several seeds\"); every "
        "method reports the mean and spread over them; `[]`: `seed` alone",
        not_keyed="a per-seed stage's key holds its seed as `seed`; the shared stages' keys "
                  "do not depend on it")
    n_jobs: int = setting(
        -1, _count(also=(-1,), expected="be -1 (every core) or a number of workers >= 1"),
        "threads for independent work on the local backend (classes, CV folds, and on the "
        "CPU feature shards, each on one torch thread so that its rows do not depend on the "
        "thread count); `-1`: every core",
        not_keyed="how many workers; every class and fold is seeded on its own, and every "
                  "feature shard runs on one torch thread whatever n_jobs is")
    backend: str = setting(
        "local", Options(("local", "dask")),
        "where the independent tasks run: `local` (this process) or `dask` (see \"Running on "
        "a cluster\"); results are the same",
        not_keyed="where the independent tasks run: the same functions on the same inputs "
                  "give the same results (tested, local against dask)")
    data: DataConfig = field(default_factory=DataConfig)
    regions: RegionsConfig = field(default_factory=RegionsConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    parts: PartsConfig = field(default_factory=PartsConfig)
    encoding: EncodingConfig = field(default_factory=EncodingConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    dpnet: DPNetConfig = field(default_factory=DPNetConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    groups: GroupsConfig = field(default_factory=GroupsConfig)
    hierarchy: HierarchyConfig = field(default_factory=HierarchyConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    dask: DaskConfig = field(default_factory=DaskConfig)


# --------------------------------------------------------------------- loading


def _sections(cls) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(where: str, value, annotation):
    """Check ``value`` (parsed from TOML) against a field annotation; return the typed value."""
    origin = typing.get_origin(annotation)
    if origin is tuple:
        (item_type, _) = typing.get_args(annotation)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}={value!r} should be a list of {item_type.__name__}")
        return tuple(_coerce(f"{where}[{i}]", v, item_type) for i, v in enumerate(value))
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    raise ConfigError(
        f"{where}={value!r} should be of type {annotation.__name__}, got {type(value).__name__}"
    )


def _parse_override(item: str) -> tuple[list[str], object]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r} should look like section.key=value")
    dotted, raw = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word: take it as a string
    return dotted.strip().split("."), value


def _merge(tree: dict, keys: list[str], value, where: str) -> None:
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: {'.'.join(keys)} is not a section key")
    node[keys[-1]] = value


def from_dict(tree: dict, where: str = "config") -> Config:
    """Build a ``Config`` from nested dicts, rejecting unknown keys and wrong types."""
    top = _sections(Config)
    kwargs = {}
    for key, value in tree.items():
        if key not in top:
            raise ConfigError(f"{where}: unknown key {key!r}{did_you_mean(key, top)}")
        annotation = top[key]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [{key}] should be a section, got {value!r}")
            fields = _sections(annotation)
            sub = {}
            for k, v in value.items():
                if k not in fields:
                    raise ConfigError(
                        f"{where}: unknown key '{key}.{k}'{did_you_mean(k, fields)}"
                        f"; valid keys in [{key}]: {', '.join(fields)}"
                    )
                sub[k] = _coerce(f"{key}.{k}", v, fields[k])
            kwargs[key] = annotation(**sub)
        else:
            kwargs[key] = _coerce(key, value, annotation)
    return Config(**kwargs)


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Defaults, then the TOML file at ``path`` (if any), then ``section.key=value`` overrides."""
    tree: dict = {}
    where = "config"
    if path is not None:
        path = Path(path)
        where = str(path)
        try:
            tree = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path} is not valid TOML: {e}") from None
    for item in overrides:
        keys, value = _parse_override(item)
        _check_key(keys, f"--set {item}")  # a typo on the command line is not the file's
        _merge(tree, keys, value, f"--set {item}")
    return from_dict(tree, where)


def _check_key(keys: list[str], where: str) -> None:
    top = _sections(Config)
    if keys[0] not in top:
        raise ConfigError(f"{where}: unknown key {keys[0]!r}{did_you_mean(keys[0], top)}")
    section = top[keys[0]]
    if dataclasses.is_dataclass(section):
        fields = _sections(section)
        if len(keys) != 2 or keys[1] not in fields:
            key = ".".join(keys[1:])
            raise ConfigError(f"{where}: unknown key '{'.'.join(keys)}'"
                              f"{did_you_mean(key, fields)}; valid keys in [{keys[0]}]: "
                              f"{', '.join(fields)}")
    elif len(keys) != 1:
        raise ConfigError(f"{where}: {keys[0]} is not a section")


def with_values(cfg: Config, values: dict) -> Config:
    """``cfg`` with ``{"section.key": value}`` set, checked like a loaded config."""
    tree = to_dict(cfg)
    for name, value in values.items():
        keys = name.split(".")
        _check_key(keys, name)
        _merge(tree, keys, value, name)
    return from_dict(tree)


def to_dict(cfg) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def dump_toml(cfg: Config) -> str:
    """The resolved config as TOML that ``load_config`` reads back to an equal ``Config``."""
    lines, sections = [], []
    for key, value in to_dict(cfg).items():
        if isinstance(value, dict):
            sections.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, values in sections:
        lines.append(f"\n[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
    return "\n".join(lines) + "\n"


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


# ---------------------------------------------------------------------- checks


def check_section(section) -> None:
    """Every field's declared check (``setting``), then the section's cross-field
    ``RULES``; a ``ConfigError`` names ``section.field``, the value and what was expected.
    Sections run it when built; ``Config`` checks its own fields and the rules between
    sections (its sections are checked already)."""
    prefix = _SECTIONS[type(section)]
    for f in dataclasses.fields(section):
        if "check" not in f.metadata:
            continue  # a section of Config
        name = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(section, f.name)
        check_finite(name, value)
        f.metadata["check"](name, value)
    for rule in RULES.get(type(section), ()):
        rule(section)


def check_setting(cls, key: str, value) -> None:
    """One setting's declared check, for a function that takes it alone
    (``fit_background``'s ``shrinkage``): ``check_setting(PartsConfig, "shrinkage", v)``."""
    f = cls.__dataclass_fields__[key]
    prefix = _SECTIONS[cls]
    name = f"{prefix}.{key}" if prefix else key
    check_finite(name, value)
    f.metadata["check"](name, value)


def _beta_schedule(p: PartsConfig) -> None:
    if not p.beta_start <= p.beta_end:
        raise ConfigError(f"parts.beta_start={p.beta_start} and parts.beta_end={p.beta_end} "
                          "must satisfy 0 < beta_start <= beta_end")


def _keep_at_most_n_parts(p: PartsConfig) -> None:
    if p.keep > p.n_parts:
        raise ConfigError(f"parts.keep={p.keep} must be <= parts.n_parts={p.n_parts} "
                          "(0 keeps all)")


def _whiten_needs_pca(f: FeaturesConfig) -> None:
    if f.whiten and not f.pca_dim:
        raise ConfigError("features.whiten=true needs features.pca_dim > 0")


def _pyramid_scales(f: FeaturesConfig) -> None:
    if f.pyramid and f.short_side in f.pyramid:
        raise ConfigError(f"features.pyramid={list(f.pyramid)} must be short sides >= 32 px, "
                          f"distinct and other than features.short_side={f.short_side}")
    if f.pyramid and f.mode != "roi":
        raise ConfigError(f"features.pyramid={list(f.pyramid)} needs features.mode = 'roi' "
                          f"(crop mode shows every region at features.crop_size already)")


def _rmac_needs_roi(f: FeaturesConfig) -> None:
    if "rmac" in f.pools and f.mode != "roi":
        raise ConfigError('features.pools with "rmac" needs features.mode = "roi" (R-MAC '
                          "pools the regions of one feature map)")


def _noise_needs_roi(f: FeaturesConfig) -> None:
    if f.noise and f.mode != "roi":
        raise ConfigError(f"features.noise={f.noise} needs features.mode = \"roi\" (it "
                          "perturbs the whole image's input)")


def _stability_needs_roi(cfg: Config) -> None:
    if cfg.classifier.stability_noise and cfg.features.mode != "roi":
        raise ConfigError(f"classifier.stability_noise={cfg.classifier.stability_noise} "
                          "needs features.mode = \"roi\" (the noisy copy perturbs the whole "
                          "image's input)")


def _variants_need_seeds(dp: DPNetConfig) -> None:
    if dp.variants and not dp.seeds:
        raise ConfigError("dpnet.seeds is empty; give at least one seed, e.g. [0, 1, 2]")


def _taxonomy_needs_file(h: HierarchyConfig) -> None:
    if h.source == "taxonomy" and not h.taxonomy:
        raise ConfigError('hierarchy.source = "taxonomy" needs hierarchy.taxonomy, a CSV with '
                          "the header class,group")


def _something_to_evaluate(cfg: Config) -> None:
    if (not cfg.classifier.methods and not cfg.retrieval.descriptors
            and not cfg.transfer.on):
        raise ConfigError(f"classifier.methods is empty and so is retrieval.descriptors: "
                          f"nothing to evaluate; choose methods from {', '.join(METHODS)}")
    if not cfg.classifier.methods and cfg.dpnet.variants:
        raise ConfigError("dpnet.variants needs classifier.methods: DP-Net is reported next to "
                          "the two-stage methods (set dpnet.variants = [] for retrieval only)")


def _descriptors_need_pools(cfg: Config) -> None:
    pools = cfg.features.pools
    for where, names in (("retrieval.descriptors", cfg.retrieval.descriptors),
                         ("transfer.methods", cfg.transfer.methods if cfg.transfer.on else ())):
        for name in names:
            for piece in name.split("+"):
                if piece in RETRIEVAL_POOLS and piece not in pools:
                    raise ConfigError(f"{where} has {name!r}, which needs {piece!r} "
                                      f"in features.pools (now {list(pools)})")


def _one_class_split(t: TransferConfig) -> None:
    if t.novel_classes and t.n_novel:
        raise ConfigError(f"transfer.novel_classes={list(t.novel_classes)} and transfer.n_novel="
                          f"{t.n_novel} both name the novel classes: give one of them")
    if t.on and "rmac" in t.methods:
        raise ConfigError("transfer.methods: 'rmac' is not available for novel classes (its "
                          "whitening is stored with the base images' descriptors); use mac or "
                          "gem, whitened or not")


def _transfer_without_pca(cfg: Config) -> None:
    if cfg.transfer.on and cfg.features.pca_dim:
        raise ConfigError(f"transfer (novel classes) with features.pca_dim={cfg.features.pca_dim}: "
                          "the novel images' regions would need the base PCA, not supported; "
                          "set features.pca_dim = 0")


def _foreign_parts(cfg: Config) -> None:
    if not cfg.transfer.parts_from:
        return
    if cfg.features.pca_dim:
        raise ConfigError(f"transfer.parts_from with features.pca_dim={cfg.features.pca_dim}: "
                          "the parts were learnt on another PCA's regions; set "
                          "features.pca_dim = 0")
    if cfg.dpnet.init_from_parts:
        raise ConfigError("transfer.parts_from with dpnet.init_from_parts = true: DP-Net "
                          "starts from this dataset's classes' parts; set "
                          "dpnet.init_from_parts = false")


#: the checks between fields, per section (``Config``: between sections)
RULES = {
    PartsConfig: (_beta_schedule, _keep_at_most_n_parts),
    FeaturesConfig: (_whiten_needs_pca, _pyramid_scales, _rmac_needs_roi, _noise_needs_roi),
    DPNetConfig: (_variants_need_seeds,),
    HierarchyConfig: (_taxonomy_needs_file,),
    TransferConfig: (_one_class_split,),
    Config: (_something_to_evaluate, _descriptors_need_pools, _stability_needs_roi,
             _transfer_without_pca, _foreign_parts),
}


# ------------------------------------------------------- the declarations, read


def settings() -> list[tuple[str, dataclasses.Field]]:
    """Every setting as ``(full name, field)``, in ``Config``'s order."""
    out = []
    for f in dataclasses.fields(Config):
        if "check" in f.metadata:
            out.append((f.name, f))
        else:
            out += [(f"{f.name}.{g.name}", g) for g in dataclasses.fields(f.default_factory)]
    return out


def not_keyed() -> dict[str, str]:
    """The settings that no stage keys, and why each cannot change a cached output."""
    return {name: f.metadata["not_keyed"] for name, f in settings() if f.metadata["not_keyed"]}


def settings_table() -> str:
    """The README's settings table (Markdown), one row per setting."""
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for name, f in settings():
        cells = [f"`{name}`", f"`{_toml_value(f.default)}`", f.metadata["check"].describe(),
                 f.metadata["doc"]]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


TABLE_BEGIN, TABLE_END = "<!-- settings:begin -->", "<!-- settings:end -->"


def with_settings_table(text: str) -> str:
    """``text`` (the README) with the table between its settings markers regenerated."""
    if TABLE_BEGIN not in text or TABLE_END not in text:
        raise ConfigError(f"no {TABLE_BEGIN} ... {TABLE_END} markers to write the table "
                          "between")
    head, rest = text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    return f"{head}{TABLE_BEGIN}\n{settings_table()}{TABLE_END}{tail}"
