"""partlearn: part-based image classification over cached pipeline stages.

Dense regions -> frozen CNN region features -> learned discriminative parts
-> part-response encoding -> linear SVMs (Sicre & Jurie, CVIU 2015; Sicre et
al., CVPR 2017), compared against a global CNN feature and DP-Net.

The public API: ``load_config`` and ``Pipeline`` (run a config, read its cached
stage outputs with ``Pipeline.load``), ``load_model`` (a finished run's model, exported
or not, applied to new images), the estimators ``PartLearner`` and
``PartEncoder``, ``read_dataset``, ``fit_svm`` and the errors; one package per
concept below them (``data``, ``features``, ``parts``, ``encoding``, ``classify``,
``retrieval``, ``dpnet``, ``report``). Importing ``partlearn`` does not import torch:
``features`` and ``dpnet`` do.
"""

from ._validation import ConfigError, DataError, PartlearnError
from .classify import fit_svm
from .config import Config, load_config
from .data import read_dataset
from .encoding import ImageRegions, PartEncoder
from .model import load_model
from .parts import PartLearner
from .runner import Pipeline

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "DataError", "ImageRegions", "PartEncoder", "PartLearner",
           "PartlearnError", "Pipeline", "fit_svm", "load_config", "load_model", "read_dataset",
           "__version__"]
