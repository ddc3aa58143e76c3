"""Linear SVMs on image codes with C chosen by training-split CV, late fusion, two-level
decisions, and the method names that say which codes a method reads."""

from ._classify import (FUSION_WEIGHTS, cv_splits, decision, descriptor_blocks, fit_late_fusion,
                        fit_svm, fit_two_level, fused, method_blocks, method_features, predict,
                        two_level, uses)

__all__ = ["FUSION_WEIGHTS", "cv_splits", "decision", "descriptor_blocks", "fit_late_fusion",
           "fit_svm", "fit_two_level", "fused", "method_blocks", "method_features", "predict",
           "two_level", "uses"]
