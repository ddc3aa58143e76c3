"""``PartlearnModel``: a finished run's model applied to new images, computed as the run
computes its test images: the same regions (``stages.regions.params``), the same
extraction of each short side of the pyramid on the same backbone, one torch thread per
task on the CPU (``stages.features.extract_images``, ``cpu_tasks``), the same float16
rows and scale choice (``stages.multiscale``), the same encoding (``encoding.encode``)
and the run's classifiers. Images are paths or PIL images."""

from __future__ import annotations

import logging
import os

import numpy as np

from .._validation import ConfigError, DataError, PartlearnError
from ..config import from_dict, with_values
from ..stages.multiscale import ImageFeatures

logger = logging.getLogger(__name__)


def _as_list(images) -> list:
    if isinstance(images, (str, os.PathLike)) or hasattr(images, "convert"):
        return [images]
    return list(images)


def open_image(image):
    """A path (read by ``data.load_image``: a ``BadImageError`` when it cannot be used) or
    a PIL image, as 8-bit RGB."""
    from .. import data as datasets

    if hasattr(image, "convert"):
        return image if image.mode == "RGB" else image.convert("RGB")
    return datasets.load_image(image)


class PartlearnModel:
    """A model (``load_model``): ``classes``, ``methods`` (the run's classifier methods;
    ``method`` is the default, the last of them), ``predict(images)``,
    ``decision_function(images)``, ``transform(images)`` (part codes), and
    ``features(images)`` (``ImageFeatures``, the step all of them start from)."""

    def __init__(self, meta: dict, arrays: dict, where: str = "model", *,
                 weights: str | None = None, device: str | None = None, n_jobs: int = -1):
        from ..classify import method_blocks
        from ..explain import PartModel
        from ..stages.classifier import model_class

        values = {"n_jobs": n_jobs}  # the caller's: their errors are theirs, below
        if weights is not None:
            values["backbone.weights"] = str(weights)
        if device is not None:
            values |= {"features.device": device, "encoding.device": device}
        try:
            cfg = from_dict(meta["settings"], where)
            self.meta = meta
            self.classes = list(meta["classes"])
            self.methods = {}
            for method, m in meta["methods"].items():
                cls = model_class(method)
                self.methods[method] = cls.from_saved(
                    method, {a: arrays[f"{m['file']}_{a}"] for a in cls.ARRAYS}, m["info"])
            self.blocks = {}
            for block, sets in meta["blocks"].items():
                self.blocks[block] = [
                    (PartModel(arrays[f"{s['parts']}_weights"], arrays[f"{s['parts']}_bias"],
                               arrays[f"{s['parts']}_part_class"]), list(s["class_names"]))
                    for s in sets]
            self.backbone_identity = dict(meta["backbone"])
        except PartlearnError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{where}: damaged or incomplete ({type(e).__name__}: {e}); export "
                            "the model again") from None
        if not self.methods:
            raise DataError(f"{where}: holds no classifier method")
        self.cfg = with_values(cfg, values)
        for method in self.methods:
            missing = set(method_blocks(method)) - {"global"} - set(self.blocks)
            if missing:
                raise DataError(f"{where}: method {method!r} reads {sorted(missing)}, whose "
                                "parts the model lacks; export the model again")
        self.where = where
        self.method = list(self.methods)[-1]
        self._backend = None
        self._checked = False

    # ---- the backbone, checked against the one the run used

    @property
    def backbone(self):
        """The backbone, built as the run built it; its weights must be the run's (the
        sha256 of the network's state): other weights are a ``ConfigError``."""
        from ..features import shared_backbone, weights_sha256

        b = self.cfg.backbone
        backbone = shared_backbone(b.name, b.weights, b.tap, b.mean, b.std)
        if not self._checked:
            want = self.backbone_identity.get("sha256")
            got = weights_sha256(backbone.model)
            if got != want:
                raise ConfigError(
                    f"{self.where}: backbone {b.name} with weights {b.weights!r} "
                    f"({backbone.weights_id}) has {got[:19]}..., the model was trained with "
                    f"{str(want)[:19]}... ({self.backbone_identity.get('weights_id')}): "
                    "other weights give other features; give the run's weights file "
                    "(--weights / load_model(..., weights=PATH))")
            self._checked = True
        return backbone

    @property
    def backend(self):
        if self._backend is None:
            from ..backend import LocalBackend

            self._backend = LocalBackend(self.cfg.n_jobs)
        return self._backend

    # ---- images to features, codes, scores

    def features(self, images) -> list[ImageFeatures]:
        """Every image's region and global features, as the run's ``features`` (and
        ``multiscale``) stages store them."""
        return self.features_of([open_image(im) for im in _as_list(images)])

    def features_of(self, pils: list) -> list[ImageFeatures]:
        """``features`` of RGB PIL images (``stages.multiscale.image_features``)."""
        from ..stages.multiscale import image_features

        if not pils:
            return []
        self.backbone  # built and checked once, before the work  # noqa: B018
        return image_features(self.cfg, pils, self.backend)

    def codes_of(self, feats: list[ImageFeatures], block: str = "parts") -> np.ndarray:
        """``(n, cells * P)`` the part codes of block ``block`` of ``features``' output, as
        the run's encoding stages make a test image's."""
        from ..encoding import ImageRegions, encode
        from .._device import resolve_device
        from ..stages.encoding_hier import join

        if block not in self.blocks:
            raise ConfigError(f"{self.where}: no part codes {block!r}; the model has "
                              f"{sorted(self.blocks) or 'none'}")
        e = self.cfg.encoding
        images = [ImageRegions(x.regions, x.boxes, x.size, x.flips) for x in feats]
        codes = [encode(images, parts.weights, parts.bias, pyramid=e.pyramid, top_k=e.top_k,
                        flip_average=e.flip_average, batch_images=e.batch_images,
                        device=str(resolve_device(e.device)))
                 for parts, _ in self.blocks[block]]
        return codes[0] if len(codes) == 1 else join(*codes)

    def inputs_of(self, feats: list[ImageFeatures], method: str | None = None) -> np.ndarray:
        """``(n, D)`` the classifier input of ``method`` (default: ``self.method``)."""
        from ..classify import CODE_STAGES, method_blocks, method_features
        from ..stages.features import global_features

        method = self.resolve_method(method)
        blocks = method_blocks(method)
        glob = None
        if "global" in blocks:
            flip = [x.global_flip for x in feats]
            glob = global_features(np.stack([x.global_ for x in feats]),
                                   None if flip[0] is None else np.stack(flip),
                                   self.cfg.encoding.flip_average)
        codes = [self.codes_of(feats, b) if b in blocks else None for b in CODE_STAGES]
        return method_features(method, glob, *codes)

    def scores_of(self, feats: list[ImageFeatures], method: str | None = None) -> np.ndarray:
        """``(n, len(classifier.classes))`` the ``method`` classifier's scores (the run's
        ``test_scores`` for its test images)."""
        method = self.resolve_method(method)
        if not feats:
            return np.zeros((0, len(self.classes)), np.float32)
        return self.methods[method].decision_function(self.inputs_of(feats, method))

    def resolve_method(self, method: str | None) -> str:
        """``method``, or the default when None; one the model lacks is a ``ConfigError``."""
        method = self.method if method is None else method
        if method not in self.methods:
            raise ConfigError(f"method {method!r} is not one of the model's: "
                              f"{', '.join(self.methods)}")
        return method

    # ---- the scikit-learn-like face

    def decision_function(self, images, method: str | None = None) -> np.ndarray:
        """``(n, classes)`` scores of ``method`` (default ``self.method``); columns in the
        order of ``classes``."""
        scores = self.scores_of(self.features(images), method)
        return self.class_scores(scores, method)

    def predict(self, images, method: str | None = None) -> np.ndarray:
        """The predicted class name of every image."""
        scores = self.decision_function(images, method)
        return np.asarray(self.classes, dtype=object)[scores.argmax(axis=1)]

    def transform(self, images, block: str = "parts") -> np.ndarray:
        """``(n, cells * P)`` the part codes of every image (block ``parts``, or
        ``parts[unsup]``/``parts[hier]`` where the run had them)."""
        return self.codes_of(self.features(images), block)

    def class_scores(self, scores: np.ndarray, method: str | None) -> np.ndarray:
        """Scores with their columns put in class order (a model's ``classes`` are the
        label indices it was fitted on)."""
        labels = np.asarray(self.methods[self.resolve_method(method)].classes)
        if np.array_equal(labels, np.arange(len(self.classes))):
            return scores
        out = np.full((len(scores), len(self.classes)), -np.inf, np.float32)
        out[:, labels] = scores
        return out
