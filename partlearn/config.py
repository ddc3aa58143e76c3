"""Frozen dataclass configs, loaded from TOML files that hold only overrides.

Every default lives here, once. A pipeline file (``pipelines/*.toml``) names
only what differs; ``--set section.key=value`` overrides on top. Unknown keys
are rejected with a did-you-mean; values are checked against the field's type.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ._validation import ConfigError, did_you_mean

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
    solver: str = "liblinear"  # or "torch": the same objective, batched (partlearn._svm_torch)
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
    """Hierarchical parts (``partlearn.hierarchy``): classes in groups; parts per group
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
        from ._config_checks import check  # the checks import this module's constants

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
