"""What a stage declares, and the view of a run that its functions get.

A stage is a ``Stage``: its name and version, the stages it reads, the config
fields whose values determine its output, the libraries whose versions change
its numbers, and three functions: ``compute(ctx, writer)`` fills a cache entry,
``load(ctx, entry)`` reads one back as the stage's typed value, ``applies(cfg)``
says whether a run of that config needs it. The runner (``partlearn.runner``)
derives the stage's key from these declarations alone (DVC's lock chaining) and
is the only code that touches the cache; a stage sees its inputs' values through
``Context.get`` and writes through the ``Writer`` it is given.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable

from ..config import Config, not_keyed, to_dict


def package_version(name: str) -> str | None:
    """The installed version of a distribution (None when it is not installed)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _always(cfg: Config) -> bool:
    return True


#: Config fields that no stage declares, and why they cannot change a cached output:
#: derived from their declarations (``partlearn.config.setting``'s ``not_keyed``).
NOT_KEYED = not_keyed()


@dataclass(frozen=True)
class Stage:
    """A stage's declarations (see the module).

    ``inputs``: stage names, or a function of the config giving them (an input
    used only under some setting). The name ``features`` means the region
    features a run ends up with: the ``pca`` stage's when it runs (it declares
    ``replaces="features"``), unless the stage sets ``exact_inputs``. ``fields``: ``section.key`` names, ``section.*``
    for a whole section. ``derive(ctx)``: key values computed from the declared
    fields and the data (the backbone's resolved identity, the files' hash);
    it must read nothing that is not declared. ``write_run_files(ctx, entry,
    value, out)``: what the stage leaves in the run directory, also when its
    value failed to load (``value`` None: the audit of a run the bad images stop).
    ``check(ctx)``: raises a ``DataError`` for data the stage cannot use; the runner
    calls it for every stage of a run as soon as the dataset is loaded, before
    anything expensive runs. ``sub_inputs(cfg)``: ``{name: (stage, {field: value})}``,
    inputs that are another stage under other config values (``features@672``: the
    features at another short side); the runner keys, computes and caches each as
    that stage of the overridden config, on the same cache, so it is shared with any
    run of that config. Their names belong in ``inputs`` too. ``seeded``: the stage
    depends on part learning's seed (it reads ``seed``, or a seeded stage): with
    ``seeds``, the runner computes it once per seed, as the stage of the config with
    that ``seed``; the other stages are shared by every seed.
    """

    name: str
    version: int
    inputs: tuple[str, ...] | Callable[[Config], tuple[str, ...]]
    fields: tuple[str, ...]
    libs: tuple[str, ...]
    compute: Callable[[Any, Any], None]
    load: Callable[[Any, Any], Any]
    applies: Callable[[Config], bool] = _always
    derive: Callable[[Any], dict] | None = None
    replaces: str | None = None
    exact_inputs: bool = False  # read the named stages themselves, never a replacement
    check: Callable[[Any], None] | None = None
    write_run_files: Callable[[Any, Any, Any, Any], None] | None = None
    sub_inputs: Callable[[Config], dict[str, tuple[str, dict]]] | None = None
    # fields added after entries were cached: keyed only when not at their default, so
    # the entries cached before keep their keys
    keyed_when_set: tuple[str, ...] = ()
    seeded: bool = False

    def input_names(self, cfg: Config) -> tuple[str, ...]:
        return tuple(self.inputs(cfg) if callable(self.inputs) else self.inputs)

    def field_names(self) -> tuple[str, ...]:
        """``fields`` with every ``section.*`` expanded to the section's fields, and
        ``keyed_when_set``."""
        out = []
        for name in self.fields:
            section, _, key = name.partition(".")
            if key == "*":
                out += [f"{section}.{f.name}"
                        for f in dataclasses.fields(getattr(Config(), section))]
            else:
                out.append(name)
        return tuple(out) + self.keyed_when_set

    def params(self, cfg: Config) -> dict:
        """The declared fields' values, by their full names (JSON types)."""
        tree = to_dict(cfg)
        out = {}
        default = to_dict(Config())
        for name in self.field_names():
            section, _, key = name.partition(".")
            value = tree[section][key] if key else tree[section]
            if name in self.keyed_when_set and value == default[section][key]:
                continue
            out[name] = value
        return out


class _Section:
    """A config section that lets a stage read only the fields it declares."""

    def __init__(self, name: str, section, allowed: set):
        self._name, self._section, self._allowed = name, section, allowed

    def __getattr__(self, key: str):
        name = f"{self._name}.{key}"
        if name not in self._allowed:
            raise RuntimeError(f"a stage reads {name} without declaring it in its fields")
        return getattr(self._section, key)


class _Declared:
    """The config as a stage sees it: its declared fields and those that key nothing
    (``NOT_KEYED``); reading any other field is a bug, and raises."""

    def __init__(self, cfg: Config, allowed: set):
        self._cfg, self._allowed = cfg, allowed

    def __getattr__(self, key: str):
        value = getattr(self._cfg, key)
        if not dataclasses.is_dataclass(value):
            if key not in self._allowed:
                raise RuntimeError(f"a stage reads {key} without declaring it in its fields")
            return value
        names = {f"{key}.{f.name}" for f in dataclasses.fields(value)}
        return value if names <= self._allowed else _Section(key, value, self._allowed)


class Context:
    """What a stage's functions see of a run: its config, its inputs' values
    (``get``), the device a setting resolves to, the backbone, the backend, the raw manifest
    and a folder for small memos. Built by the runner."""

    def __init__(self, pipeline, stage: Stage):
        self._pipe = pipeline
        self.stage = stage
        self.cfg = _Declared(pipeline.cfg, set(stage.field_names()) | set(NOT_KEYED))
        self.memo = pipeline.cache.root / "_memo"

    def of(self, stage: Stage) -> "Context":
        """The context ``stage`` sees in this run (a check made on another stage's behalf
        reads that stage's fields)."""
        return Context(self._pipe, stage)

    def get(self, name: str):
        """The value of input ``name`` (``features``: the run's region features)."""
        allowed = self.stage.input_names(self._pipe.cfg)
        if name not in allowed:
            raise RuntimeError(f"stage {self.stage.name!r} reads {name!r} but declares only "
                               f"{allowed}")
        return self._pipe.load(self._pipe.resolve(name, self.stage.name))

    @property
    def manifest(self):
        """The dataset as read from its annotations (before the bad-image policy)."""
        return self._pipe.manifest

    @property
    def parts_classes(self) -> list[str]:
        """The names of the classes of the ``parts`` stage's parts (``transfer.parts_from``:
        another dataset's)."""
        return self._pipe.parts_classes

    @property
    def backbone(self):
        return self._pipe.backbone

    @property
    def backend(self):
        """Where the stage's independent tasks run (``partlearn.backend``)."""
        return self._pipe.backend

    def device(self, setting: str):
        return self._pipe.device(setting)

    def device_name(self, setting: str) -> str:
        """``"cpu"``, or the CUDA device a setting resolves to, without importing torch
        where no GPU driver exists."""
        return self._pipe.device_name(setting)
