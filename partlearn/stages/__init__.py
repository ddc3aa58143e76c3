"""The pipeline's stages, one module each, in the order a run computes them.

Each module declares a ``STAGE`` (``partlearn.stages._base.Stage``); registering a
new stage is one line here. ``partlearn.runner`` wires them.
"""

from ._base import NOT_KEYED, Context, Stage
from . import (classifier, dataset, descriptors, dpnet, encoding, encoding_cv,
               encoding_hier, encoding_unsup, features, groups, hierarchy, multiscale, parts, parts_class,
               parts_group, parts_unsup, pca, regions)

STAGES: tuple[Stage, ...] = (
    dataset.STAGE, regions.STAGE, features.STAGE, multiscale.STAGE, pca.STAGE, parts.STAGE,
    encoding.STAGE, encoding_cv.STAGE, groups.STAGE, parts_unsup.STAGE, encoding_unsup.STAGE,
    hierarchy.STAGE, parts_group.STAGE, parts_class.STAGE, encoding_hier.STAGE,
    classifier.STAGE, dpnet.STAGE, descriptors.STAGE)
BY_NAME = {s.name: s for s in STAGES}
NAMES = tuple(BY_NAME)


__all__ = ["BY_NAME", "Context", "NAMES", "NOT_KEYED", "STAGES", "Stage"]
