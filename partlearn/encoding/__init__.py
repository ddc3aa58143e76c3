"""Part-response encoding: how strongly each learnt part fires in each image, over a
spatial pyramid (``encode``), and ``PartEncoder``, the same as a scikit-learn transformer."""

from ._encoder import (ImageRegions, PartEncoder, cells, encode, feature_names, part_names,
                       part_responses)

__all__ = ["ImageRegions", "PartEncoder", "cells", "encode", "feature_names", "part_names",
           "part_responses"]
