"""PCA on region descriptors: ``fit_pca`` and ``apply_pca`` (import them from
``partlearn.features``). numpy and scikit-learn only."""

from __future__ import annotations

import numpy as np

from .._validation import ConfigError, DataError


def fit_pca(x, n_components: int, whiten: bool = False, random_state=0) -> dict:
    """PCA of the rows of ``x``: ``{"mean", "components", "explained_variance"}`` (float32).

    ``whiten`` does not change the fitted arrays (``apply_pca`` whitens); it is
    accepted so that a stage's parameters can be passed through unchanged.
    """
    from sklearn.decomposition import PCA

    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise DataError(f"PCA needs a 2-D array of row vectors, got shape {x.shape}")
    if not 1 <= n_components <= min(x.shape):
        raise ConfigError(f"n_components={n_components} should be in 1..{min(x.shape)} "
                          f"for {x.shape[0]} rows of dimension {x.shape[1]}")
    solver = "covariance_eigh" if x.shape[0] > x.shape[1] else "full"
    pca = PCA(n_components=n_components, svd_solver=solver, random_state=random_state).fit(x)
    return {
        "mean": pca.mean_.astype(np.float32),
        "components": pca.components_.astype(np.float32),
        "explained_variance": pca.explained_variance_.astype(np.float32),
    }


def apply_pca(x, pca: dict, whiten: bool = False, normalize: bool = True) -> np.ndarray:
    """Project rows of ``x`` on ``pca``'s components (divided by their standard deviation
    with ``whiten``), then L2-normalise rows (unless ``normalize=False``). float32."""
    x = np.asarray(x, dtype=np.float32)
    mean, components = pca["mean"], pca["components"]
    if x.ndim != 2 or x.shape[1] != mean.shape[0]:
        raise DataError(f"apply_pca: rows of dimension {mean.shape[0]} expected, got {x.shape}")
    y = (x - mean) @ components.T
    if whiten:
        var = np.asarray(pca["explained_variance"], dtype=np.float32)
        y /= np.sqrt(np.maximum(var, np.finfo(np.float32).eps))
    if normalize:
        norm = np.linalg.norm(y, axis=1, keepdims=True)
        y /= np.where(norm > 0, norm, 1.0)
    return y.astype(np.float32, copy=False)
