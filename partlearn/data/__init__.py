"""Datasets: readers for five layouts -> one ``Manifest``, image loading, the audit, the demo.

``read_dataset(root, format="auto")`` detects the layout (CUB, MIT Indoor-67, revisited
Oxford, a CSV manifest, class folders) or generates the demo set (``partlearn.data.demo``);
``audit_dataset`` opens every image once and ``apply_bad_image_policy`` decides what
happens to the bad ones.
"""

from . import demo
from ._audit import (Audit, apply_bad_image_policy, audit_dataset, audit_markdown,
                     clip_boxes)
from ._dataset import read_dataset, split_classes
from ._images import BadImageError, load_image, probe_image
from ._manifest import GND_LISTS, Manifest
from ._planted import make_planted_regions
from ._readers import IMAGE_EXTENSIONS, read_csv, read_folders, read_mit67
from ._cub import read_cub

__all__ = ["GND_LISTS", "IMAGE_EXTENSIONS", "Audit", "BadImageError", "Manifest", "apply_bad_image_policy",
           "audit_dataset", "audit_markdown", "clip_boxes", "demo", "load_image",
           "make_planted_regions", "probe_image", "read_csv", "read_cub", "read_dataset",
           "read_folders", "read_mit67", "split_classes"]
