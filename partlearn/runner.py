"""The runner: chains the stages' keys, runs what a run needs through the cache, then
the evaluators. It holds no stage's computation and is the only code that knows
the cache: a stage's key hashes exactly what the stage declares (its name,
version, config fields, derived values, libraries) and its inputs' keys.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import platform
import resource
import shutil
import time
from pathlib import Path

from . import _files
from . import data as datasets
from ._memory import PeakSampler
from .cache import Cache, Entry, _size, human_size, make_key
from .config import Config, dump_toml, load_config, with_values
from .stages import BY_NAME, NAMES, STAGES, Context
from .stages._base import package_version
from ._validation import CacheError, ConfigError, DataError

logger = logging.getLogger(__name__)


def cuda_possible(setting: str) -> bool:
    """False when ``setting`` can only mean the CPU: "cpu", or "auto" on a machine
    without a GPU driver (then torch need not be imported to know)."""
    if setting == "cpu":
        return False
    if setting == "auto":
        return any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl",
                                               "/dev/kfd"))
    return True


def device_name(setting: str) -> str:
    """The device a setting ("auto", "cpu", "cuda:1") resolves to, by name; "cpu" without
    importing torch where only the CPU is possible."""
    if not cuda_possible(setting):
        return "cpu"
    from ._device import resolve_device

    return str(resolve_device(setting))


def peak_memory_mb() -> float:
    """Peak resident memory of this process and of its finished children, in MB: with
    the page cache of the memory-mapped features (results.json's ``memory`` has the
    process's own, anonymous, memory beside it)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    """What a run's figures were measured on: the CPU, its cores, the GPUs the driver
    lists (read without importing torch)."""
    gpus = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        with contextlib.suppress(OSError):
            gpus += [line.split(":", 1)[1].strip() for line in info.read_text().splitlines()
                     if line.startswith("Model:")]
    return {"cpu": cpu_model(), "cores": os.cpu_count(),
            "gpu": ", ".join(gpus) if gpus else None}


#: the stages whose settings (but the data's, the regions' and the global pools') make the
#: feature space a part's direction lives in
_FEATURE_SPACE = ("features", "multiscale")


def _parts_source(cfg: Config, cache_root: Path, say: bool = True) -> "Pipeline":
    """The pipeline of ``cfg.transfer.parts_from`` (see ``Pipeline.parts_source``);
    ``say``: log where the parts come from (once per run, not per seed)."""
    where = cfg.transfer.parts_from
    path = Path(where)
    run_dir = path.is_dir()
    if run_dir and not (path / "config.toml").is_file():
        raise ConfigError(f"transfer.parts_from={where!r}: {path / 'config.toml'} is missing; "
                          "give a run directory of `partlearn run` or a pipeline TOML file")
    if not run_dir and not path.is_file():
        raise ConfigError(f"transfer.parts_from={where!r}: no such run directory or pipeline "
                          "file")
    src = load_config(path / "config.toml" if run_dir else path)
    if src.transfer.parts_from:
        raise ConfigError(f"transfer.parts_from={where!r}: that config takes its parts from "
                          f"{src.transfer.parts_from!r} in turn; point at the run or config "
                          "that learns them")
    src = with_values(src, {"seed": cfg.seed, "seeds": ()})

    def space(c: Config) -> dict:
        return {k: v for s in _FEATURE_SPACE for k, v in BY_NAME[s].params(c).items()
                if not k.startswith(("data.", "regions.", "features.pools", "features.gem_p"))}

    mine = space(cfg)
    mismatch = [f"{k} = {v!r} there, {mine.get(k)!r} here" for k, v in space(src).items()
                if mine.get(k) != v]
    if mismatch:
        raise ConfigError(f"transfer.parts_from={where!r}: its parts live in another feature "
                          f"space ({'; '.join(mismatch)}); the backbone and feature settings "
                          "must be the same")
    pipe = Pipeline(src, src.cache_dir if run_dir else cache_root)
    if "parts" not in pipe.stages:
        raise ConfigError(f"transfer.parts_from={where!r}: that config learns no supervised "
                          "parts (no `parts` method in classifier.methods)")
    if say:
        names = list(pipe.manifest.classes)
        logger.info("parts: from transfer.parts_from=%s (%d classes: %s), not learnt here",
                    where, len(names), ", ".join(names[:5]) + (", ..." if len(names) > 5
                                                              else ""))
    return pipe


class Pipeline:
    """The stages a config needs, their keys, their cached values, and ``run``.

    ``stages``: the names of the stages this config runs, in order; a stage's
    sub-inputs (``features@672``) come right before it. ``key(stage)``;
    ``load(stage)``: a stage's typed value from the cache (``dataset`` → ``Dataset``,
    ``features``/``features@672``/``multiscale``/``pca`` → ``RegionFeatures``, ``parts`` →
    a fitted ``PartLearner``, ``encoding_cv`` → per CV fold the training images' codes,
    ``encoding``/``encoding_unsup`` → ``Codes``, ``groups`` → each training image's
    group, ``parts_unsup`` → a fitted ``PartLearner``, ``classifier`` → ``Classifiers``,
    ``dpnet`` → ``DPNetRuns``, ``descriptors`` → ``{name: array}``), with or without
    ``run``; ``status()``; ``run()``.

    With ``seeds`` (several seeds of part learning), every seeded stage (``Stage.seeded``:
    ``parts``, ``encoding``, ``classifier``...) runs once per seed, as that stage of the
    config with that ``seed``: the plain name is the first seed's, ``parts@seed=1`` the
    next's, right after it (``per_seed``); the other stages (the features) are shared.
    """

    def __init__(self, cfg: Config, cache_dir: str | os.PathLike | None = None,
                 _parent: "Pipeline | None" = None, _split: bool = True,
                 _seed_of: bool = False):
        if not cfg.data.root:
            raise ConfigError("data.root is not set: give it in the config or with "
                              "--set data.root=PATH")
        self.user_cfg = cfg  # as given: what a run directory records
        self.cache = Cache(cache_dir or cfg.cache_dir)
        #: with novel classes (``transfer``), the pipeline of their images: only its
        #: unlearnt stages run (``novel_stages``); this one is the base classes' pipeline
        self.novel: Pipeline | None = None
        if _parent is None and _split and cfg.transfer.on:
            cfg = self._split_classes(cfg)
        self.cfg = cfg
        self._subs: dict[str, tuple[str, dict]] = {}  # sub-input: (stage, overrides)
        names = []
        for s in STAGES:
            if s.applies(cfg):
                subs = s.sub_inputs(cfg) if s.sub_inputs is not None else {}
                self._subs.update(subs)
                names += [n for n in subs if n not in names] + [s.name]
        self.seeds = tuple(cfg.seeds) if _parent is None and cfg.seeds else (cfg.seed,)
        self._seeded: dict[str, list[str]] = {}  # seeded stage: its name per seed
        for name in names:
            if name in BY_NAME and BY_NAME[name].seeded:
                self._seeded[name] = [name] + [f"{name}@seed={s}" for s in self.seeds[1:]]
                for k, s in enumerate(self.seeds):  # the first seed's: this config's, or not
                    if k or s != cfg.seed:
                        self._subs[self._seeded[name][k]] = (name, {"seed": s})
        self.stages = tuple(n for name in names for n in self._seeded.get(name, [name]))
        self._sub_pipes: dict[str, Pipeline] = {}  # by the values they override
        self._parent = _parent  # a sub-input's pipeline shares its parent's objects
        # a seed's pipeline takes every stage but the seeded ones from its parent's
        self._shared = ({n for n in self.stages if n not in self._seeded} if _seed_of
                        else set())
        self._keys: dict[str, str] = {}
        self._desc: dict[str, dict] = {}
        self._values: dict[str, object] = {}
        self._manifest = None
        self._backbone = None
        self._backend = None
        self._source: Pipeline | None = None
        if _parent is None and cfg.transfer.parts_from and "parts" in self.stages:
            self.parts_source  # its file and feature space checked before any stage

    def _split_classes(self, cfg: Config) -> Config:
        """The base classes' config (``data.classes``: the base classes), and ``novel``:
        the pipeline of the novel classes' images. Every learnt stage of this pipeline
        reads the base classes only, so no novel image reaches it or its key."""
        d, t = cfg.data, cfg.transfer
        full = datasets.read_dataset(d.root, format=d.format, csv=d.csv, classes=d.classes)
        base, novel = datasets.split_classes(full, t.novel_classes, t.n_novel, t.ways)
        logger.info("transfer: %d base classes learn every stage; %d novel classes (%s) are "
                    "held out of them all", len(base), len(novel), ", ".join(novel))
        self.novel = Pipeline(with_values(cfg, {"data.classes": list(novel)}), self.cache.root,
                              _split=False)
        return with_values(cfg, {"data.classes": list(base)})

    @property
    def novel_stages(self) -> tuple[str, ...]:
        """The stages the novel images go through: the dataset, regions and features (no
        learnt stage; empty without novel classes)."""
        if self.novel is None:
            return ()
        stages = self.novel.stages
        last = "multiscale" if "multiscale" in stages else "features"
        return stages[:stages.index(last) + 1]

    @property
    def parts_source(self) -> "Pipeline":
        """With ``transfer.parts_from``, the pipeline whose ``parts`` entry this one reads:
        a run directory's recorded config on its own store, or a pipeline file's on this
        run's store, at this pipeline's seed. Its backbone and feature settings must be
        this run's (a part is a direction in that feature space)."""
        if self._source is None:
            self._source = _parts_source(self.cfg, self.cache.root, self._parent is None)
        return self._source

    @property
    def parts_classes(self) -> list[str]:
        """The names of the classes the ``parts`` stage's parts belong to: this dataset's
        (kept) classes, or ``transfer.parts_from``'s."""
        pipe, _ = self._where("parts")
        return list(pipe.kept_manifest.classes)

    def _where(self, name: str) -> tuple["Pipeline", str]:
        """The pipeline and stage that provide ``name``: this one for a stage, the
        overridden config's for a sub-input (``features@672``) or another seed's stage,
        the parent's for a stage a seed's pipeline shares."""
        if name in self._shared:
            return self._parent._where(name)
        if name == "parts" and self.cfg.transfer.parts_from:
            return self.parts_source, "parts"
        if name not in self._subs:
            if name not in BY_NAME:
                raise ConfigError(f"unknown stage {name!r}; stages are {', '.join(NAMES)}")
            return self, name
        stage, values = self._subs[name]
        which = json.dumps(values, sort_keys=True)  # one pipeline per overridden config
        if which not in self._sub_pipes:
            self._sub_pipes[which] = Pipeline(with_values(self.cfg, values), self.cache.root,
                                              _parent=self, _seed_of=set(values) == {"seed"})
        return self._sub_pipes[which], stage

    def per_seed(self, stage: str) -> list[tuple[int, str]]:
        """``(seed, name)`` of a stage for each of the run's seeds (``seeds``, or ``seed``
        alone): ``classifier``, ``classifier@seed=1``, ...; a shared stage's one name."""
        names = self._seeded.get(stage, [stage])
        return list(zip(self.seeds, names)) if len(names) > 1 else [(self.seeds[0], stage)]

    def entries(self) -> list[tuple[str, str]]:
        """``(stage, key)`` of every cache entry this config's run uses."""
        out = []
        for name in self.stages:
            pipe, stage = self._where(name)
            out.append((stage, pipe.key(stage)))
        for name in self.novel_stages:
            pipe, stage = self.novel._where(name)
            out.append((stage, pipe.key(stage)))
        return out

    # ---- what the stages see

    @property
    def manifest(self) -> datasets.Manifest:
        """The dataset as its annotations list it (before the bad-image policy)."""
        if self._parent is not None:
            return self._parent.manifest
        if self._manifest is None:
            d = self.cfg.data
            self._manifest = datasets.read_dataset(d.root, format=d.format, csv=d.csv,
                                                   classes=d.classes)
        return self._manifest

    @property
    def backbone(self):
        if self._parent is not None:
            return self._parent.backbone
        if self._backbone is None:
            from .features import shared_backbone

            b = self.cfg.backbone
            self._backbone = shared_backbone(b.name, b.weights, b.tap, b.mean, b.std)
        return self._backbone

    @property
    def backend(self):
        """Where the stages' independent tasks run (``partlearn.backend``), started on first
        use and stopped when ``run`` ends (``close``)."""
        if self._parent is not None:  # one backend per run, stopped by the run's close
            return self._parent.backend
        if self._backend is None:
            from .backend import from_config

            self._backend = from_config(self.cfg)
        return self._backend

    def close(self) -> None:
        """Stop the backend's cluster, if this pipeline started one."""
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def device(self, setting: str | None = None):
        from ._device import resolve_device

        return resolve_device(setting or self.cfg.features.device)

    def device_name(self, setting: str) -> str:
        return device_name(setting)

    def resolve(self, name: str, consumer: str | None = None) -> str:
        """The stage that provides input ``name`` to ``consumer`` in this run: the last
        stage before ``consumer`` that replaces it (``features`` is ``pca`` when that
        stage runs, ``multiscale`` for ``pca`` itself when both run), or ``name``."""
        if consumer is not None and BY_NAME[consumer].exact_inputs:
            return name
        before = STAGES[:NAMES.index(consumer)] if consumer is not None else STAGES
        for s in reversed(before):
            if s.replaces == name and s.name in self.stages:
                return s.name
        return name

    @property
    def features_stage(self) -> str:
        return self.resolve("features")

    @property
    def dataset(self):
        """The kept images (``partlearn.stages.dataset.Dataset``)."""
        return self.load("dataset")

    @property
    def kept_manifest(self) -> datasets.Manifest:
        return self.dataset.manifest

    # ---- keys

    def inputs(self, stage: str) -> dict[str, str]:
        """``{input stage: its key}`` of ``stage`` in this run."""
        names = BY_NAME[stage].input_names(self.cfg)
        resolved = [self.resolve(n, stage) for n in names]
        return {n: self.key(n) for n in resolved}

    def key(self, stage: str) -> str:
        pipe, base = self._where(stage)
        if pipe is not self:
            return pipe.key(base)
        if stage not in self._keys:
            s = BY_NAME[stage]
            params = s.params(self.cfg)
            if s.derive is not None:
                params |= s.derive(Context(self, s))
            inputs = self.inputs(stage)
            libs = {name: package_version(name) for name in s.libs}
            self._desc[stage] = {"version": s.version, "params": params, "inputs": inputs,
                                 "libs": libs}
            self._keys[stage] = make_key(stage, s.version, params, inputs, libs)
        return self._keys[stage]

    def owner(self, name: str) -> tuple["Pipeline", str]:
        """``_where`` followed to the pipeline that computes ``name`` itself (its store
        holds the entry: ``transfer.parts_from``'s parts are in the source's)."""
        pipe, stage = self, name
        while True:
            p, s = pipe._where(stage)
            if p is pipe:
                return p, s
            pipe, stage = p, s

    def status(self) -> list[dict]:
        """Each entry of the run (the novel images' stages too, named ``novel STAGE``):
        cached, damaged, partial or stale."""
        rows = []
        names = [*self.stages, *(f"novel {n}" for n in self.novel_stages)]
        owners = [self.owner(n) for n in self.stages]
        owners += [self.novel.owner(n) for n in self.novel_stages]
        for name, (pipe, stage) in zip(names, owners):
            cache, key = pipe.cache, pipe.key(stage)
            partial = cache.root / stage / (key + ".partial")
            state, reason = cache.check(stage, key)  # cached, damaged or missing
            if state == "damaged":
                state = f"damaged ({reason}; a run recomputes it)"
            elif state == "missing" and partial.is_dir():
                done = len([p for p in partial.glob("shard_*") if p.suffix != ".tmp"])
                state = f"partial ({done} shards done; a run resumes it)"
            elif state == "missing":
                state = "stale (a run computes it)"
            rows.append({"stage": name, "key": key, "state": state})
        return rows

    # ---- values

    def entry(self, stage: str) -> Entry:
        pipe, base = self._where(stage)
        if pipe is not self:
            return pipe.entry(base)
        entry = self.cache.get(stage, self.key(stage))
        if entry is None:
            raise DataError(f"stage {stage!r} is not cached yet for this config; run "
                            f"`partlearn run` (or Pipeline.run) first")
        return entry

    def load(self, stage: str):
        """The typed value of ``stage`` (see the class), read from the cache once."""
        pipe, base = self._where(stage)
        if pipe is not self:
            return pipe.load(base)
        parent = self._parent  # the stages a sub-input shares with its parent (the dataset)
        if (parent is not None and stage in parent.stages and stage not in self._values
                and parent._where(stage)[0] is parent and parent.key(stage) == self.key(stage)):
            self._values[stage] = parent.load(stage)
        if stage not in self._values:
            s = BY_NAME[stage]
            self._values[stage] = s.load(Context(self, s), self.entry(stage))
        return self._values[stage]

    # ---- running

    def variant(self, values: dict) -> "Pipeline":
        """This run's config with ``values`` (``{"section.key": value}``) set, on the same
        cache, sharing this pipeline's manifest and backbone: e.g. the perturbed copy of the
        features (``features.noise``) that the interpretability evaluator reads."""
        return Pipeline(with_values(self.cfg, values), self.cache.root, _parent=self)

    def ensure(self, stage: str):
        """``stage``'s value, first computing it and the stages it reads (all the way
        back) into the cache where they are missing (no run directory, no evaluation);
        the backend is stopped after."""
        todo = self._todo(stage, ())[0]
        need = {stage}
        for name in reversed(todo):  # an input comes before its readers
            if name in need:
                pipe, base = self._where(name)
                need.update(pipe.resolve(n, base) for n in BY_NAME[base].input_names(pipe.cfg))
        try:
            with contextlib.ExitStack() as pins:
                for name in [n for n in todo if n in need]:
                    owner, base = self.owner(name)
                    pins.enter_context(owner.cache.pin(base, owner.key(base)))
                    self._compute(name, False)
                    self.load(name)
                return self.load(stage)
        finally:
            self.close()

    def _compute(self, stage: str, force: bool, label: str | None = None
                 ) -> tuple[Entry, bool]:
        pipe, base = self._where(stage)
        if pipe is not self:
            if pipe is self._source and pipe.cache.get(base, pipe.key(base)) is None:
                logger.info("%s: learnt by transfer.parts_from=%s first (its dataset, "
                            "regions and features)", label or stage,
                            self.cfg.transfer.parts_from)
                pipe.ensure(base)
            return pipe._compute(base, force and pipe is not self._source, label=label or stage)
        label = label or stage
        s = BY_NAME[stage]
        key = self.key(stage)
        entry = self.cache.get(stage, key)
        if entry is not None and not force:
            logger.info("%s: cached %s (%s)", label, key, human_size(_size(entry.path)))
            return entry, True
        if entry is not None:
            logger.info("%s: --force, recomputing %s", label, key)
            shutil.rmtree(entry.path)
            self._values.pop(stage, None)
        else:
            logger.info("%s: not cached, computing %s", label, key)
        computed = False
        try:
            with self.cache.writer(stage, key, self._desc[stage]) as w:
                if w is not None:
                    s.compute(Context(self, s), w)
                    computed = True
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT, None):
                raise
            raise self._disk_full(stage, key, e) from e
        if not computed:
            logger.info("%s: another run computed %s meanwhile; reusing it", label, key)
        return self.cache.get(stage, key), not computed

    def _disk_full(self, stage: str, key: str, e: OSError) -> CacheError:
        """A full disk met while computing ``stage`` (also numpy's short write, an
        ``OSError`` without errno): the entry's path, what the disk has free, and what
        the stage had written, which it needs more than."""
        partial = self.cache.root / stage / f"{key}.partial"
        written = _size(partial) if partial.exists() else 0
        try:
            free = human_size(shutil.disk_usage(self.cache.root).free)
        except OSError:
            free = "unknown"
        return CacheError(
            f"cannot write the cache entry {self.cache.root / stage / key}: the disk is full "
            f"({e.strerror or e}); {free} free there, and {stage} needs more than the "
            f"{human_size(written)} it had written; free space on that disk or point "
            "--cache-dir elsewhere; finished shards are kept and a re-run resumes")

    def _todo(self, until: str | None, force) -> tuple[list[str], set[str]]:
        until = until or self.stages[-1]
        if until not in self.stages:
            raise ConfigError(f"--until {until!r}: stages of this pipeline are "
                              f"{', '.join(self.stages)}")
        bad = [s for s in force if s not in NAMES]
        if bad:
            raise ConfigError(f"--force {bad[0]!r}: stages are {', '.join(NAMES)}")
        forced = set()
        for s in force:  # forcing a stage recomputes everything after it too
            forced.update(NAMES[NAMES.index(s):])
        stop = self.stages.index(until) + 1  # and the stage's other seeds'
        while stop < len(self.stages) and self.stages[stop].startswith(f"{until}@seed="):
            stop += 1
        return list(self.stages[:stop]), forced

    def recorded_config(self) -> Config:
        """The config a run directory records: absolute ``data.root`` and the store this
        pipeline used as ``cache_dir``, so that ``partlearn explain RUN_DIR`` finds both
        from anywhere."""
        d, t = self.user_cfg.data, self.user_cfg.transfer
        return dataclasses.replace(
            self.user_cfg, cache_dir=str(self.cache.root.resolve()),
            data=dataclasses.replace(d, root=os.path.abspath(d.root)) if d.root else d,
            transfer=dataclasses.replace(t, parts_from=os.path.abspath(t.parts_from))
            if t.parts_from else t)

    def _run_stages(self, todo, forced, summary: dict, pins, memory, out: Path,
                    label: str = "") -> None:
        """Run ``todo`` through the cache, recording each stage in ``summary`` (as
        ``label + stage``) and leaving its run files in ``out``."""
        out.mkdir(parents=True, exist_ok=True)
        for stage in todo:
            memory.mark()
            owner, base = self.owner(stage)
            pins.enter_context(owner.cache.pin(base, owner.key(base)))
            t0, c0 = time.perf_counter(), time.process_time()
            entry, cached = self._compute(stage, base in forced)
            s = BY_NAME[base]
            try:
                self.load(stage)  # a stage's value must load before the next one runs
            finally:
                if s.write_run_files is not None:
                    s.write_run_files(Context(owner, s), entry, owner._values.get(base), out)
            summary["timings"][label + stage] = round(time.perf_counter() - t0, 3)
            # every thread of this process: the work, whatever else the cores ran
            summary["cpu_seconds"][label + stage] = round(time.process_time() - c0, 3)
            summary["memory"]["stages"][label + stage] = memory.mark()
            # seconds: the entry's own compute time, whichever run made it (a cold cost)
            summary["stages"][label + stage] = {"key": entry.key, "cached": cached,
                                                "seconds": entry.meta.get("seconds")}
            if stage == "dataset":  # what the later stages cannot use, before they run
                for later in todo:
                    pipe, base = self._where(later)
                    if base == "parts" and self.cfg.transfer.parts_from:
                        continue  # another run's parts: their data was checked there
                    if BY_NAME[base].check is not None:
                        BY_NAME[base].check(Context(pipe, BY_NAME[base]))

    def run(self, until: str | None = None, force=(), out: str | Path | None = None,
            report: bool = True) -> dict:
        """Run the stages up to ``until`` (default: all) into the cache, then (when the
        classifier ran, or in a retrieval-only run every stage, and ``report``) the
        evaluators and the report; write the run
        directory ``out`` (default ``runs/NAME-TIMESTAMP``). Returns the summary that
        is also ``results.json``."""
        from .evaluation import evaluate

        todo, forced = self._todo(until, force)
        evaluated = report and ("classifier" in todo if "classifier" in self.stages
                                else len(todo) == len(self.stages))
        for stage in todo:  # every key before the run dir: a wrong data.root or backbone fails
            self.key(stage)  # here (the dataset's reads the annotations)
        for stage in self.novel_stages if evaluated else ():
            self.novel.key(stage)
        if self.cfg.backend == "dask" and self.cfg.dask.scheduler:
            self.backend  # an unreachable scheduler, too (a LocalCluster starts when needed)
        if not out and (not self.cfg.name or Path(self.cfg.name).name != self.cfg.name
                        or self.cfg.name in (".", "..")):
            raise ConfigError(f"name={self.cfg.name!r} names the run directory "
                              "runs/NAME-TIMESTAMP: give a plain name (no '/', not '..'), "
                              "or the run directory with --out")
        out = Path(out) if out else Path("runs") / f"{self.cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        out.mkdir(parents=True, exist_ok=True)
        _files.write_text(out / "config.toml", dump_toml(self.recorded_config()))
        logger.info("run directory: %s", out)
        summary = {"name": self.cfg.name, "dataset": self.cfg.data.root,
                   "backbone": self.cfg.backbone.name, "machine": machine(),
                   "methods": {}, "timings": {},
                   "cpu_seconds": {}, "stages": {}}
        pins = contextlib.ExitStack()  # gc and rm leave this run's entries alone until it ends
        memory = PeakSampler().start()  # per stage: peak RSS, anonymous and unique memory
        summary["memory"] = {"stages": {}}
        try:
            self._run_stages(todo, forced, summary, pins, memory, out)
            if evaluated and self.novel is not None:  # the novel images: no learnt stage
                self.novel._run_stages(self.novel_stages, forced, summary, pins, memory,
                                       out / "novel", label="novel ")
            if evaluated:
                memory.mark()
                c0 = time.process_time()
                found = evaluate(self, out)
                summary["cpu_seconds"]["evaluate"] = round(time.process_time() - c0, 3)
                summary["memory"]["stages"]["evaluate"] = memory.mark()
                summary["timings"].update(found.pop("timings"))
                summary.update(found)
        finally:
            pins.close()
            self.close()
            summary["peak_memory_mb"] = peak_memory_mb()
            memory.stop()
            summary["memory"].update(memory.overall())
            _files.write_text(out / "results.json", json.dumps(summary, indent=1))
        if evaluated:
            from .report import write_results

            write_results(summary, out, memo=self.cache.root / "_memo")
        return summary
