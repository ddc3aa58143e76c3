"""Region features: dense regions, frozen backbones, RoI pooling, the image pyramid, PCA.

``dense_regions`` lays the multi-scale windows over an image; ``create_backbone`` builds a
frozen CNN (EfficientNet-Lite rebuilt for inference, or a torchvision model by weights
enum); ``extract_features`` runs it once per image and pools every region
(``ops.roi_align``) or crops them; ``multiscale`` picks each region's scale of a pyramid;
``fit_pca``/``apply_pca`` the PCA (or PCA-whitening) of region rows.
"""

from . import multiscale
from ._backbones import Backbone, available_backbones, create_backbone, lite_package_model, \
    shared_backbone, weights_sha256
from ._extract import amp_dtype, extract_features
from ._pca import apply_pca, fit_pca
from ._regions import dense_regions, regions_for_images

__all__ = ["Backbone", "amp_dtype", "apply_pca", "available_backbones", "create_backbone",
           "dense_regions", "extract_features", "fit_pca", "lite_package_model", "multiscale",
           "regions_for_images", "shared_backbone", "weights_sha256"]
