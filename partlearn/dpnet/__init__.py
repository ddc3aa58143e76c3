"""DP-Net (Sicre et al., ICIP 2023): parts and classifier learnt end to end on the frozen
region features; ``train_dpnet`` trains one (variant, seed), ``predict_scores`` applies it.
This package imports torch."""

from ._model import DPNet, assignment, class_specificity, orthogonality
from ._predict import part_responses, predict, predict_scores, settings
from ._train import train_dpnet

__all__ = ["DPNet", "assignment", "class_specificity", "orthogonality", "part_responses",
           "predict", "predict_scores", "settings", "train_dpnet"]
