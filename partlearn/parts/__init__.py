"""Discriminative parts: the LDA background, graduated assignment per class under part
constraints, and the groups of classes of a hierarchy (``partlearn.parts.hierarchy``).

``PartLearner`` is the scikit-learn transformer the pipeline's parts stages run;
``learn_class_parts`` learns one class's parts from arrays. This package does not import
torch.
"""

from . import hierarchy
from ._learner import (PartLearner, fit_background, learn_class_parts, learn_classes,
                       negative_pool)

__all__ = ["PartLearner", "fit_background", "hierarchy", "learn_class_parts", "learn_classes",
           "negative_pool"]
