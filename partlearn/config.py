"""Frozen dataclass configs, loaded from TOML files that hold only overrides.

Every default lives here, once. A pipeline file (``pipelines/*.toml``) names
only what differs; ``--set section.key=value`` overrides on top. Unknown keys
are rejected with a did-you-mean; values are checked against the field's type.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ._validation import ConfigError, check_choice, did_you_mean

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


@dataclass(frozen=True)
class DataConfig:
    root: str = ""
    format: str = "auto"
    csv: str = "labels.csv"
    classes: tuple[str, ...] = ()
    on_bad_image: str = "error"
    min_side: int = 32
    min_train_per_class: int = 5


@dataclass(frozen=True)
class RegionsConfig:
    scales: tuple[float, ...] = (0.25, 0.35, 0.5, 0.7)
    stride: float = 0.4
    full_image: bool = True
    flips: bool = False
    min_size: int = 16


@dataclass(frozen=True)
class BackboneConfig:
    name: str = "efficientnet_lite0"
    weights: str = "DEFAULT"
    tap: str = ""
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()


@dataclass(frozen=True)
class FeaturesConfig:
    mode: str = "roi"
    short_side: int = 448
    roi_size: int = 3
    roi_pooling: str = "mean"
    crop_size: int = 224
    batch_size: int = 8
    workers: int = -1  # DataLoader workers; -1: none on CPU, up to 8 on CUDA
    device: str = "auto"
    amp: bool = True
    pca_dim: int = 0
    whiten: bool = False
    pca_max_regions: int = 200_000
    shard_size: int = 128
    pools: tuple[str, ...] = ()  # retrieval descriptors to extract: mac, gem, spoc, rmac
    gem_p: float = 3.0  # GeM's power
    # an image pyramid: more short sides, each its own cached features entry; a region's
    # descriptor comes from the scale that shows it nearest pyramid_target px ("nearest"),
    # or is the mean over short_side and these ("mean"). []: short_side alone
    pyramid: tuple[int, ...] = ()
    pyramid_select: str = "nearest"
    pyramid_target: int = 224


@dataclass(frozen=True)
class PartsConfig:
    """Part learning (``partlearn.parts``); scores are in background-std units."""

    n_parts: int = 12  # parts per class, before pruning
    n_init: int = 1  # k-means restarts for the initial parts
    kmeans_iter: int = 10
    beta_start: float = 0.5  # graduated assignment: inverse temperature schedule
    beta_growth: float = 2.0
    beta_end: float = 8.0
    updates_per_beta: int = 1
    sinkhorn_iter: int = 20
    slack: float = 3.0  # a region must score above this to be matched rather than none
    hard_negatives: int = 500  # negative regions mined per part, once per beta level
    negative_cache: int = 4  # levels after the first mine among each part's top
    # hard_negatives * negative_cache of the first level; 0: among all negatives every level
    negative_weight: float = 0.5  # 0: no hard negatives
    orthogonality: float = 0.0  # 0: off
    nms_iou: float = 0.5  # 0 or 1: off; needs the region boxes
    sparsity: bool = True  # a region serves at most one part
    tol: float = 1e-3  # a beta level stops when no part moves more than this
    keep: int = 0  # keep the most discriminative parts; 0: all
    n_negative_images: int = 150  # other-class images sampled per class
    min_images: int = 2  # per class
    background_regions: int = 50_000  # regions sampled to fit the background
    shrinkage: float = 0.3


@dataclass(frozen=True)
class EncodingConfig:
    """Part-response encoding (``partlearn.encoding``)."""

    pyramid: tuple[int, ...] = (1, 2)  # grid sides: 1x1 + 2x2 cells, by region centre
    top_k: int = 1  # a cell's response: max (1) or mean of the k best regions
    flip_average: bool = True  # average with the mirrored image (needs regions.flips)
    leave_one_out: bool = True  # a training image by its class's parts learnt without it
    device: str = "auto"  # auto: cuda when torch sees one, else cpu (numpy)
    batch_images: int = 256  # images per block of the matrix products


@dataclass(frozen=True)
class ClassifierConfig:
    """Linear SVMs (``partlearn.classify``), evaluation (``partlearn.evaluation``)."""

    methods: tuple[str, ...] = METHODS[:3]  # global, parts, parts+global
    C: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)  # grid, extended when the best is at an edge
    extend: int = 3  # decades added at an edge whose C is best, at most, per side
    cv_folds: int = 5  # stratified, training split only
    max_iter: int = 20_000
    solver: str = "liblinear"  # or "torch": the same objective, batched (partlearn.classify._svm_torch)
    # MiB an SVM's input (n x D float32) may take (0: no limit); past it the torch solver
    # reads it in row blocks (the same fit to float rounding), liblinear stops with an error
    memory_mb: float = 4096.0
    n_bootstrap: int = 10_000  # paired bootstrap of the differences between methods
    # the CV of a method with part codes relearns the parts without each held-out fold
    # (the encoding_cv stage): the held-out images are then unseen by the parts too
    cv_parts: bool = True


DPNET_VARIANTS = ("wo", "orth", "assign", "cs", "orth+assign", "cs+orth", "cs+assign",
                  "cs+orth+assign")


@dataclass(frozen=True)
class DPNetConfig:
    """DP-Net on the cached region features (``partlearn.dpnet``): which variants, how trained."""

    variants: tuple[str, ...] = ()  # constraint sets to train, e.g. ["wo", "cs+orth+assign"]
    seeds: tuple[int, ...] = (0, 1, 2)  # every variant is trained once per seed
    parts_per_class: int = 10  # q; P = q * classes
    lr: float = 3e-2  # Adam; chosen by CV on the training split (BENCHMARKS.md)
    weight_decay: float = 1e-4  # on V
    epochs: int = 40  # at most; early stopping on the held-out slice
    batch_size: int = 32  # images
    val_fraction: float = 0.2  # of each class's training images, held out
    patience: int = 8  # epochs without a lower held-out cross-entropy
    refit: bool = True  # then train again on all training images for the best epoch count
    # each constraint's weight when a variant turns it on (0: off everywhere), chosen per
    # constraint by the lowest held-out cross-entropy over 2 splits of CUB c001-020's
    # training split (benchmarks/select_dpnet_by_cv.py; BENCHMARKS "Item 3"); the
    # assignment term at temperature 0.1: at 1 it cannot act (cosines in [-1, 1] leave
    # every region's softmax over the parts within 0.004 nats of uniform)
    lambda_orth: float = 0.1
    lambda_assign: float = 0.01
    lambda_cs: float = 1.0
    assign_temperature: float = 0.1  # softmax temperature of the assignment term
    init_from_parts: bool = False  # start U from the two-stage parts
    device: str = "auto"


@dataclass(frozen=True)
class GroupsConfig:
    """Unsupervised groups (Sicre et al., CVPR 2017): the training images clustered by
    their global descriptors, no label read; parts are then learnt per group."""

    n_groups: int = 0  # 0: round(sqrt(n_train / 2)), the usual rule of thumb
    kmeans_iter: int = 25
    restarts: int = 5  # k-means runs, the best objective kept
    min_images: int = 10  # smaller groups are merged into the nearest other group


@dataclass(frozen=True)
class HierarchyConfig:
    """Hierarchical parts (``partlearn.parts.hierarchy``): classes in groups; parts per group
    (positives the group's images, negatives the other groups') and parts per class
    (negatives mostly its siblings, the group's other classes). Methods ``parts[hier]``,
    ``2level:...``."""

    # "taxonomy": the CSV `taxonomy` (class,group); without labels beyond the classes:
    # "cluster" (agglomerative, class means of the global descriptor) or "groups" (the
    # unsupervised groups, [groups], mapped to classes by majority)
    source: str = "cluster"
    taxonomy: str = ""  # a CSV with the header class,group, one row per class
    n_groups: int = 0  # "cluster": G; 0: round(sqrt(classes))
    shuffle: int = -1  # >= 0: the control, the classes dealt at random (this seed) into
    # groups of the same sizes
    group_parts: int = 4  # a group's parts, per class it holds
    class_parts: int = 8  # parts per class; group_parts + class_parts = parts.n_parts
    # gives as many parts (and as long a code) as the flat parts
    sibling_fraction: float = 0.75  # of a class's parts.n_negative_images, from siblings
    # parts of parts: class parts learnt on the regions at a finer scale inside (or near:
    # within 25% of their sides) the best regions of their group's parts, in every
    # training image (theirs and the negatives'); encoded over all regions as usual
    within_group_parts: bool = False


@dataclass(frozen=True)
class RetrievalConfig:
    """Image retrieval (``partlearn.retrieval``; the ``descriptors`` stage, the evaluator)."""

    # what to evaluate, e.g. ["rmac", "gem+w", "global", "parts", "parts+rmac"]; empty: no
    # retrieval. mac/gem/spoc/rmac need features.pools; "+w": PCA-whitened (on training images)
    descriptors: tuple[str, ...] = ()
    ks: tuple[int, ...] = (1, 2, 4, 8)  # recall@K
    rerank: tuple[str, ...] = ("none", "qe", "diffusion")  # each descriptor, re-ranked so
    qe_neighbours: int = 5  # average / alpha query expansion
    aqe_alpha: float = 3.0
    diffusion_k: int = 50  # reciprocal k-NN graph
    diffusion_alpha: float = 0.99
    diffusion_gamma: float = 3.0
    whiten_shrinkage: float = 0.1  # whitening: variances + shrinkage x their mean
    whiten_regions: int = 100_000  # training regions sampled to learn the R-MAC whitening
    # instance-level search of the database: "flat" (exact) or "ivfpq" (faiss IndexIVFPQ,
    # approximate, for large databases; nprobe cells visited)
    index: str = "flat"
    nprobe: int = 16


@dataclass(frozen=True)
class DaskConfig:
    """Where ``backend = "dask"`` runs the independent tasks (``partlearn.backend``)."""

    # a running scheduler, "tcp://host:8786"; "": the run starts a LocalCluster and stops it
    scheduler: str = ""
    n_workers: int = 0  # the LocalCluster's worker processes; 0: one per core
    timeout: float = 30.0  # seconds to reach the scheduler before giving up
    # a resource that GPU workers declare (`dask worker --resources GPU=1`); when set, the
    # feature-extraction tasks each ask for one unit of it
    gpu_resource: str = ""


@dataclass(frozen=True)
class Config:
    name: str = "experiment"
    cache_dir: str = "cache"
    seed: int = 0
    n_jobs: int = -1  # processes for independent work (classes); -1: every core
    # where independent tasks run (feature shards, classes, CV folds, DP-Net runs):
    # "local" (this process, n_jobs) or "dask" ([dask])
    backend: str = "local"
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
    dask: DaskConfig = field(default_factory=DaskConfig)

    def __post_init__(self):
        check(self)


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

# long: a flat list of checks, one or a few per field; their order decides which error a
# config with several shows first, so it is kept in one piece
def check(cfg) -> None:
    _check_finite(cfg)
    if cfg.n_jobs == 0:
        raise ConfigError("n_jobs=0 must be -1 (every core) or a number of workers >= 1")
    _check_dpnet(cfg.dpnet)
    check_choice("backend", cfg.backend, ("local", "dask"))
    if cfg.retrieval.whiten_regions < 1:
        raise ConfigError(f"retrieval.whiten_regions={cfg.retrieval.whiten_regions} must be "
                          ">= 1")
    if cfg.dask.n_workers < 0:
        raise ConfigError(f"dask.n_workers={cfg.dask.n_workers} must be >= 0 (0: one per core)")
    if not cfg.dask.timeout > 0:
        raise ConfigError(f"dask.timeout={cfg.dask.timeout} must be > 0 seconds")
    check_choice("data.format", cfg.data.format, DATASET_FORMATS)
    check_choice("data.on_bad_image", cfg.data.on_bad_image, BAD_IMAGE_POLICIES)
    check_choice("features.mode", cfg.features.mode, FEATURE_MODES)
    check_choice("features.roi_pooling", cfg.features.roi_pooling, ROI_POOLING)
    _check_pyramid(cfg.features)
    _check_retrieval(cfg)
    _check_hierarchy(cfg)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", cfg.features.device):
        raise ConfigError(
            f"features.device={cfg.features.device!r} is not 'auto', 'cpu', 'cuda' or 'cuda:N'"
        )
    r = cfg.regions
    if not r.scales or any(not 0 < s <= 1 for s in r.scales):
        raise ConfigError(
            f"regions.scales={list(r.scales)} must be a non-empty list of fractions in (0, 1]"
        )
    if not 0 < r.stride <= 1:
        raise ConfigError(f"regions.stride={r.stride} must be a fraction of the window in (0, 1]")
    positive = {
        "data.min_side": cfg.data.min_side,
        "features.short_side": cfg.features.short_side,
        "features.roi_size": cfg.features.roi_size,
        "features.crop_size": cfg.features.crop_size,
        "features.batch_size": cfg.features.batch_size,
        "features.shard_size": cfg.features.shard_size,
        "features.pca_max_regions": cfg.features.pca_max_regions,
        "features.pyramid_target": cfg.features.pyramid_target,
    }
    for name, value in positive.items():
        if value < 1:
            raise ConfigError(f"{name}={value} must be >= 1")
    for name, value in {
        "features.pca_dim": cfg.features.pca_dim,
        "regions.min_size": r.min_size,
        "data.min_train_per_class": cfg.data.min_train_per_class,
    }.items():
        if value < 0:
            raise ConfigError(f"{name}={value} must be >= 0")
    if cfg.features.workers < -1:
        raise ConfigError(f"features.workers={cfg.features.workers} must be >= 0, or -1 (auto)")
    if cfg.features.whiten and not cfg.features.pca_dim:
        raise ConfigError("features.whiten=true needs features.pca_dim > 0")
    b = cfg.backbone
    for name, value in (("backbone.mean", b.mean), ("backbone.std", b.std)):
        if value and len(value) != 3:
            raise ConfigError(f"{name}={list(value)} must hold 3 numbers (R, G, B) or be empty")
    p = cfg.parts
    for name in ("n_parts", "n_init", "kmeans_iter", "updates_per_beta", "sinkhorn_iter",
                 "n_negative_images", "min_images", "background_regions"):
        if getattr(p, name) < 1:
            raise ConfigError(f"parts.{name}={getattr(p, name)} must be >= 1")
    for name in ("hard_negatives", "negative_cache", "keep", "negative_weight", "tol"):
        if getattr(p, name) < 0:
            raise ConfigError(f"parts.{name}={getattr(p, name)} must be >= 0")
    if p.slack < 0:
        raise ConfigError(f"parts.slack={p.slack} must be >= 0: a z-score under the background "
                          "model, how far above the background a region must score to match")
    if p.keep > p.n_parts:
        raise ConfigError(f"parts.keep={p.keep} must be <= parts.n_parts={p.n_parts} "
                          "(0 keeps all)")
    if not 0 < p.beta_start <= p.beta_end:
        raise ConfigError(f"parts.beta_start={p.beta_start} and parts.beta_end={p.beta_end} "
                          "must satisfy 0 < beta_start <= beta_end")
    if p.beta_growth <= 1:
        raise ConfigError(f"parts.beta_growth={p.beta_growth} must be > 1")
    if not 0 <= p.orthogonality <= 1:
        raise ConfigError(f"parts.orthogonality={p.orthogonality} must be in [0, 1] (0: off)")
    if not 0 <= p.nms_iou <= 1:
        raise ConfigError(f"parts.nms_iou={p.nms_iou} must be an IoU in [0, 1] (0 or 1: off)")
    if not 0 <= p.shrinkage <= 1:
        raise ConfigError(f"parts.shrinkage={p.shrinkage} must be in [0, 1]")
    e = cfg.encoding
    if not e.pyramid or any(g < 1 for g in e.pyramid) or len(set(e.pyramid)) != len(e.pyramid):
        raise ConfigError(f"encoding.pyramid={list(e.pyramid)} must be distinct grid sides "
                          ">= 1, e.g. [1, 2]")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", e.device):
        raise ConfigError(f"encoding.device={e.device!r} is not 'auto', 'cpu', 'cuda' or 'cuda:N'")
    for name in ("top_k", "batch_images"):
        if getattr(e, name) < 1:
            raise ConfigError(f"encoding.{name}={getattr(e, name)} must be >= 1")
    k = cfg.classifier
    if not k.methods and not cfg.retrieval.descriptors:  # methods = []: a retrieval-only run
        raise ConfigError(f"classifier.methods is empty and so is retrieval.descriptors: "
                          f"nothing to evaluate; choose methods from {', '.join(METHODS)}")
    if not k.methods and cfg.dpnet.variants:
        raise ConfigError("dpnet.variants needs classifier.methods: DP-Net is reported next to "
                          "the two-stage methods (set dpnet.variants = [] for retrieval only)")
    for m in k.methods:
        check_choice("classifier.methods", m, METHODS)
    if not k.C or any(c <= 0 for c in k.C):
        raise ConfigError(f"classifier.C={list(k.C)} must be a non-empty list of numbers > 0")
    if k.cv_folds < 2:
        raise ConfigError(f"classifier.cv_folds={k.cv_folds} must be >= 2")
    check_choice("classifier.solver", k.solver, ("liblinear", "torch"))
    if k.memory_mb < 0:
        raise ConfigError(f"classifier.memory_mb={k.memory_mb:g} must be >= 0 (0: no limit)")
    dp = cfg.dpnet
    for v in dp.variants:
        check_choice("dpnet.variants", v, DPNET_VARIANTS)
    if dp.variants and not dp.seeds:
        raise ConfigError("dpnet.seeds is empty; give at least one seed, e.g. [0, 1, 2]")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", dp.device):
        raise ConfigError(f"dpnet.device={dp.device!r} is not 'auto', 'cpu', 'cuda' or 'cuda:N'")
    for name in ("extend", "max_iter", "n_bootstrap"):
        if getattr(k, name) < (0 if name == "extend" else 1):
            raise ConfigError(f"classifier.{name}={getattr(k, name)} is out of range")


def _check_finite(cfg) -> None:
    """Every number of every section is finite (NaN and inf are never a setting)."""
    for section in dataclasses.fields(cfg):
        value = getattr(cfg, section.name)
        items = ([(f"{section.name}.{f.name}", getattr(value, f.name))
                  for f in dataclasses.fields(value)] if dataclasses.is_dataclass(value)
                 else [(section.name, value)])
        for name, v in items:
            for x in (v if isinstance(v, tuple) else (v,)):
                if isinstance(x, float) and not math.isfinite(x):
                    raise ConfigError(f"{name}={list(v) if isinstance(v, tuple) else v} must "
                                      "be finite (no NaN or inf)")


def _check_dpnet(dp) -> None:
    for name in ("parts_per_class", "epochs", "batch_size", "patience"):
        if getattr(dp, name) < 1:
            raise ConfigError(f"dpnet.{name}={getattr(dp, name)} must be >= 1")
    for name in ("lr", "assign_temperature"):
        if not getattr(dp, name) > 0:
            raise ConfigError(f"dpnet.{name}={getattr(dp, name)} must be > 0")
    for name in ("weight_decay", "lambda_orth", "lambda_assign", "lambda_cs"):
        if getattr(dp, name) < 0:
            raise ConfigError(f"dpnet.{name}={getattr(dp, name)} must be >= 0 (0: off)")
    if not 0 <= dp.val_fraction < 1:
        raise ConfigError(f"dpnet.val_fraction={dp.val_fraction} must be in [0, 1)")
    for name in ("variants", "seeds"):
        values = list(getattr(dp, name))
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise ConfigError(f"dpnet.{name}={values} lists {twice} more than once")


def _check_hierarchy(cfg) -> None:
    h = cfg.hierarchy
    check_choice("hierarchy.source", h.source, HIERARCHY_SOURCES)
    if h.source == "taxonomy" and not h.taxonomy:
        raise ConfigError('hierarchy.source = "taxonomy" needs hierarchy.taxonomy, a CSV with '
                          "the header class,group")
    if h.n_groups < 0 or h.n_groups == 1:
        raise ConfigError(f"hierarchy.n_groups={h.n_groups} must be >= 2, or 0 (automatic)")
    for name in ("group_parts", "class_parts"):
        if getattr(h, name) < 1:
            raise ConfigError(f"hierarchy.{name}={getattr(h, name)} must be >= 1")
    if not 0 <= h.sibling_fraction <= 1:
        raise ConfigError(f"hierarchy.sibling_fraction={h.sibling_fraction} must be in [0, 1]")


def _check_retrieval(cfg) -> None:
    g = cfg.groups
    for name in ("kmeans_iter", "restarts", "min_images"):
        if getattr(g, name) < 1:
            raise ConfigError(f"groups.{name}={getattr(g, name)} must be >= 1")
    if g.n_groups < 0 or g.n_groups == 1:
        raise ConfigError(f"groups.n_groups={g.n_groups} must be >= 2, or 0 (automatic)")
    f, r = cfg.features, cfg.retrieval
    for pool in f.pools:
        check_choice("features.pools", pool, RETRIEVAL_POOLS)
    if "rmac" in f.pools and f.mode != "roi":
        raise ConfigError('features.pools with "rmac" needs features.mode = "roi" (R-MAC '
                          "pools the regions of one feature map)")
    if not f.gem_p > 0:
        raise ConfigError(f"features.gem_p={f.gem_p} must be > 0")
    for name in r.descriptors:
        for piece in name.split("+"):
            if piece in ("global", "parts", "parts[unsup]", "parts[hier]", "w"):
                continue
            check_choice("retrieval.descriptors", piece,
                         RETRIEVAL_POOLS + ("global", "parts", "parts[unsup]", "parts[hier]"))
            if piece not in f.pools:
                raise ConfigError(f"retrieval.descriptors has {name!r}, which needs {piece!r} "
                                  f"in features.pools (now {list(f.pools)})")
    for name in r.rerank:
        check_choice("retrieval.rerank", name, RERANKING)
    check_choice("retrieval.index", r.index, SEARCH_INDEXES)
    if r.nprobe < 1:
        raise ConfigError(f"retrieval.nprobe={r.nprobe} must be >= 1")
    if not r.ks or any(k < 1 for k in r.ks):
        raise ConfigError(f"retrieval.ks={list(r.ks)} must be a non-empty list of K >= 1")
    if r.qe_neighbours < 1 or r.diffusion_k < 1:
        raise ConfigError("retrieval.qe_neighbours and retrieval.diffusion_k must be >= 1")
    if not 0 < r.diffusion_alpha < 1 or r.whiten_shrinkage < 0:
        raise ConfigError(f"retrieval.diffusion_alpha={r.diffusion_alpha} must be in (0, 1) "
                          f"and retrieval.whiten_shrinkage={r.whiten_shrinkage} >= 0")


def _check_pyramid(f) -> None:
    check_choice("features.pyramid_select", f.pyramid_select, PYRAMID_SELECT)
    if not f.pyramid:
        return
    sides = (f.short_side, *f.pyramid)
    if any(s < 32 for s in f.pyramid) or len(set(sides)) != len(sides):
        raise ConfigError(f"features.pyramid={list(f.pyramid)} must be short sides >= 32 px, "
                          f"distinct and other than features.short_side={f.short_side}")
    if f.mode != "roi":
        raise ConfigError(f"features.pyramid={list(f.pyramid)} needs features.mode = 'roi' "
                          f"(crop mode shows every region at features.crop_size already)")
