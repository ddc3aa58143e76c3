"""What an evaluator declares, and the view of a finished run it gets.

An ``Evaluator`` names the stages it needs and a function ``applies(ctx)``
that returns None when it applies or the reason it does not (no keypoints in
the dataset, no DP-Net in the run); ``run(ctx)`` returns what it adds to the
run's results (``figures``: files it wrote under the run directory). The
evaluators run in order over the cached stage outputs; a later one may read an
earlier one's results (``ctx.results``).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .. import _files
from ..cache import keep_files, make_key, memo_files
from ..explain import PartModel
from ..stages.dpnet import method_name


@dataclass(frozen=True)
class Evaluator:
    name: str
    needs: tuple[str, ...]
    run: Callable[["EvalContext"], dict]
    applies: Callable[["EvalContext"], str | None] = lambda ctx: None


class EvalContext:
    """A finished run: its pipeline (``load``), run directory ``out``, the results so
    far, and what several evaluators share (the part models, their best regions)."""

    def __init__(self, pipe, out: Path):
        self.pipe, self.out = pipe, Path(out)
        self.cfg = pipe.cfg
        self.results: dict = {}
        self._models = None
        self._best = None

    def load(self, stage: str):
        return self.pipe.load(stage)

    def has(self, stage: str) -> bool:
        return stage in self.pipe.stages

    @property
    def data(self):
        return self.pipe.load("dataset")

    @property
    def test(self) -> np.ndarray:
        return self.load("classifier").test_images

    def dpnet_runs(self) -> dict:
        return self.load("dpnet").runs if self.has("dpnet") else {}

    def part_models(self) -> dict[str, PartModel]:
        """The run's part models: ``parts`` (two-stage, when its SVM ran, and learnt on this
        dataset's classes: not ``transfer.parts_from``'s, whose parts no class of this
        dataset owns) and each DP-Net variant's first seed (``dpnet``, ``dpnet[cs]``, ...)."""
        if self._models is None:
            self._models = {}
            if "parts" in self.cfg.classifier.methods and not self.cfg.transfer.parts_from:
                self._models["parts"] = PartModel.of_learner(self.load("parts"))
            for variant in self.dpnet_runs():
                self._models[method_name(variant)] = PartModel.of_dpnet(
                    self.load("dpnet").model(variant))
        return self._models

    def best_regions(self) -> dict:
        """``{model: (boxes (n_test, P, 4), scores (n_test, P))}``: each part's best own
        region (not the mirrored image's) in each test image."""
        if self._best is None:
            self._best = self.best_regions_of(self.part_models())
        return self._best

    def best_regions_of(self, models: dict, feats=None) -> dict:
        """``best_regions`` of other part models (``{name: PartModel}``), in the run's
        region features or ``feats`` (the same regions: ``perturbed_features``)."""
        feats = feats if feats is not None else self.load(self.pipe.features_stage)
        out = {name: (np.empty((len(self.test), len(p.weights), 4), np.float32),
                      np.empty((len(self.test), len(p.weights)), np.float32))
               for name, p in models.items()}
        for j, i in enumerate(self.test):
            x, boxes = feats.own(i)
            for name, p in models.items():
                s = p.responses(x)
                k = s.argmax(axis=0)
                out[name][0][j] = boxes[k]
                out[name][1][j] = s[k, np.arange(s.shape[1])]
        return out

    def perturbed_features(self, noise: float):
        """The run's region features of a perturbed copy of every image (Gaussian noise of
        σ ``noise`` on the network input: ``features.noise``): its own cache entries,
        computed by the runner the first time (``Pipeline.variant``, ``ensure``)."""
        pipe = self.pipe.variant({"features.noise": noise})
        return pipe.ensure(pipe.features_stage)

    def memo(self, kind: str, what: dict) -> Path:
        """Where a rendered ``kind`` showing ``what`` is kept across runs (``_memo``)."""
        key = make_key(kind, 1, what, {"features": self.pipe.key(self.pipe.features_stage)}, {})
        return self.pipe.cache.root / "_memo" / f"{kind}-{key}"

    @property
    def memo_needs(self) -> list[tuple[str, str]]:
        """The cache entry a memo is drawn from (``cache gc`` drops the memo with it)."""
        pipe, base = self.pipe._where(self.pipe.features_stage)
        return [(base, pipe.key(base))]


def digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, np.float32).tobytes())
    return h.hexdigest()


def keep(files: list[Path], memo: Path, needs=()) -> None:
    """Copy ``files`` into the memo folder ``memo``, with their hashes, all at once
    (``partlearn.cache.keep_files``). When a concurrent run has written ``memo`` first,
    its copy is kept."""
    keep_files(files, memo, needs)


def restore(memo: Path, out: Path) -> list[str] | None:
    """Copy a memo folder's figures into ``out/figures`` (each file atomically); their
    run-relative names. None when there is no memo, or one that does not verify (it is
    removed, with a warning) or went away meanwhile: the caller draws the figures."""
    files = memo_files(memo)
    if files is None:
        return None
    (out / "figures").mkdir(parents=True, exist_ok=True)
    try:
        for f in files:
            _files.copy(f, out / "figures" / f.name)
    except FileNotFoundError:  # removed by another process (gc) meanwhile
        return None
    return [f"figures/{f.name}" for f in files]


def keep_value(value: dict, memo: Path, needs=()) -> None:
    """Keep the JSON value ``value`` (a computed result, not a figure) in the memo folder
    ``memo``, as ``keep`` keeps files; ``recall`` reads it back."""
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "value.json"
        file.write_text(json.dumps(value), encoding="utf-8")
        keep_files([file], memo, needs)


def recall(memo: Path) -> dict | None:
    """The value ``keep_value`` kept in ``memo``; None when there is none (or one that does
    not verify: removed, with a warning, by ``memo_files``)."""
    files = memo_files(memo)
    try:
        return json.loads(files[0].read_text(encoding="utf-8")) if files else None
    except FileNotFoundError:  # removed by another process (gc) meanwhile
        return None
