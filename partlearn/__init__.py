"""partlearn: part-based image classification over cached pipeline stages.

Dense regions -> frozen CNN region features -> learned discriminative parts
-> part-response encoding -> linear SVMs (Sicre & Jurie, CVIU 2015; Sicre et
al., CVPR 2017), compared against a global CNN feature and DP-Net.

The public API: ``load_config`` and ``Pipeline`` (run a config, read its cached
stage outputs with ``Pipeline.load``), the estimators ``PartLearner`` and
``PartEncoder``, ``read_dataset``, ``fit_svm``, ``train_dpnet`` (imported on first
use: it needs torch) and the errors.
"""

from ._validation import ConfigError, DataError, PartlearnError
from .classify import fit_svm
from .config import Config, load_config
from .datasets import read_dataset
from ._encoder import PartEncoder
from .encoding import ImageRegions
from ._learner import PartLearner
from .runner import Pipeline

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "DataError", "ImageRegions", "PartEncoder", "PartLearner",
           "PartlearnError", "Pipeline", "fit_svm", "load_config", "read_dataset",
           "train_dpnet", "__version__"]


def __getattr__(name):
    if name == "train_dpnet":  # torch is imported only by those who train DP-Net
        from .dpnet import train_dpnet

        return train_dpnet
    raise AttributeError(f"module 'partlearn' has no attribute {name!r}")
