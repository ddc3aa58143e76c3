"""Linear SVMs on image codes with C chosen by training-split CV (``_svm``), late fusion
(``_fusion``), two-level decisions (``_two_level``), and the method names that say which
codes a method reads (``methods``). Fitted models are frozen dataclasses of arrays with
``decision_function`` and ``predict``; the CV's settings, one ``CVSettings``."""

from ._fusion import FUSION_WEIGHTS, FusedSVM, fit_late_fusion
from ._svm import CVSettings, LinearSVM, cv_splits, fit_svm
from ._two_level import TwoLevelSVM, fit_two_level
from .methods import (CODE_STAGES, descriptor_blocks, fused, method_blocks, method_features,
                      two_level, uses)

__all__ = ["CODE_STAGES", "CVSettings", "FUSION_WEIGHTS", "FusedSVM", "LinearSVM",
           "TwoLevelSVM", "cv_splits", "descriptor_blocks", "fit_late_fusion", "fit_svm",
           "fit_two_level", "fused", "method_blocks", "method_features", "two_level", "uses"]
