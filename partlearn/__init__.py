"""partlearn: part-based image classification over cached pipeline stages.

Dense regions -> frozen CNN region features -> learned discriminative parts
-> part-response encoding -> linear SVMs (Sicre & Jurie, CVIU 2015; Sicre et
al., CVPR 2017), compared against a global CNN feature and DP-Net.
"""

from .config import Config, load_config
from ._validation import ConfigError, DataError, PartlearnError

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "DataError", "PartlearnError", "load_config", "__version__"]
