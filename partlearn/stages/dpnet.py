"""``dpnet``: DP-Net (``partlearn.dpnet``) on the cached region features, every variant
once per seed, each (variant, seed) a shard: an interrupted run keeps the ones it
finished."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .._validation import ConfigError
from ._base import Stage

logger = logging.getLogger(__name__)

_ARRAYS = ("U", "V", "bias", "part_class", "test_scores", "test_pred", "val_accuracy",
           "val_loss", "train_seconds", "best_epoch")


def method_name(variant: str) -> str:
    return "dpnet" if variant == "wo" else f"dpnet[{variant}]"


@dataclass(frozen=True)
class DPNetRuns:
    """``runs[variant]``: a list of ``(seed, arrays)``, arrays as in ``_ARRAYS``
    (the model ``U``, ``V``, ``bias``, ``part_class``; test scores and predictions;
    training figures); ``test_images`` (kept indices)."""

    runs: dict
    test_images: np.ndarray

    def model(self, variant: str, k: int = 0) -> dict:
        """The ``k``-th seed's model of ``variant`` in ``partlearn.dpnet``'s form."""
        arrays = self.runs[variant][k][1]
        return {"U": arrays["U"], "V": arrays["V"], "bias": arrays["bias"],
                "part_class": arrays["part_class"],
                "classes": np.arange(len(arrays["V"]))}


def inputs(cfg) -> tuple[str, ...]:
    return ("dataset", "features") + (("parts",) if cfg.dpnet.init_from_parts else ())


def compute(ctx, w) -> None:
    from ..dpnet import settings

    d = ctx.cfg.dpnet
    data, feats = ctx.get("dataset"), ctx.get("features")
    m, train, test = data.manifest, data.train, data.test
    init = None
    if d.init_from_parts:
        learner = ctx.get("parts")
        if len(learner.part_class_) != d.parts_per_class * len(m.classes):
            raise ConfigError(f"dpnet.init_from_parts: the parts stage has "
                              f"{len(learner.part_class_)} parts, DP-Net needs "
                              f"dpnet.parts_per_class x classes = "
                              f"{d.parts_per_class * len(m.classes)}; set parts.n_parts to "
                              f"{d.parts_per_class}")
        init = learner.parts_  # LDA directions in the feature space, class by class
    runs = [(v, seed) for v in d.variants for seed in d.seeds]
    for k, (variant, seed) in enumerate(runs):
        if w.shard_done(k):
            logger.info("dpnet: %s, seed %d: cached in this entry", variant, seed)
    items = [{"shard": k, "settings": settings(d, variant), "seed": seed}
             for k, (variant, seed) in enumerate(runs) if not w.shard_done(k)]
    shared = {"train_x": feats.images(train), "labels": m.label[train],
              "test_x": feats.images(test), "init": init, "device": d.device, "writer": w}
    for k, (accuracy, seconds) in ctx.backend.map(train_run, items, shared=shared,
                                                  threads=False):
        variant, seed = runs[items[k]["shard"]]
        logger.info("dpnet: %s, seed %d: held-out accuracy %.4f, %.1f s", variant, seed,
                    accuracy, seconds)
    w.meta.update(n_shards=len(runs), runs=[list(r) for r in runs], test_images=test.tolist())


def train_run(item: dict, train_x, labels, test_x, init, device: str, writer):
    """Train one (variant, seed) run (``item``: its ``shard``, ``settings``, ``seed``) and
    save it into ``writer``'s entry: a backend's task. Returns (held-out accuracy, s)."""
    from .._device import resolve_device
    from ..dpnet import predict_scores, train_dpnet

    device = str(resolve_device(device))
    model = train_dpnet(train_x, labels, **item["settings"], seed=item["seed"], device=device,
                        init_parts=init)
    scores = predict_scores(model, test_x, device=device)
    writer.save_shard(item["shard"], {
        "U": model["U"], "V": model["V"], "bias": model["bias"],
        "part_class": model["part_class"], "test_scores": scores,
        "test_pred": np.asarray(model["classes"])[scores.argmax(axis=1)].astype(np.int64),
        "val_accuracy": np.asarray(model["val_accuracy"]),
        "val_loss": np.asarray(model["val_loss"]),
        "train_seconds": np.asarray(model["train_seconds"]),
        "best_epoch": np.asarray(model["best_epoch"])})
    return float(model["val_accuracy"]), float(model["train_seconds"])


def load(ctx, entry) -> DPNetRuns:
    runs: dict = {}
    for k, (variant, seed) in enumerate(entry.meta["runs"]):
        arrays = {a: entry.shard_array(k, a, mmap=False) for a in _ARRAYS}
        runs.setdefault(variant, []).append((seed, arrays))
    return DPNetRuns(runs, np.asarray(entry.meta["test_images"], np.int64))


# dpnet.device changes no result beyond float rounding
STAGE = Stage(
    name="dpnet", version=2, inputs=inputs,
    fields=tuple(f"dpnet.{k}" for k in (
        "variants", "seeds", "parts_per_class", "lr", "weight_decay", "epochs", "batch_size",
        "val_fraction", "patience", "refit", "lambda_orth", "lambda_assign", "lambda_cs",
        "assign_temperature", "init_from_parts")),
    libs=("torch", "numpy"), compute=compute, load=load,
    applies=lambda cfg: bool(cfg.dpnet.variants))
