"""Part-response encoding: how strongly each learned part fires in each image.

Stage two of the method's input (Sicre & Jurie, CVIU 2015): an image is
described by the response of every part of every class, over a spatial
pyramid. A part scores a region ``x`` as ``x @ w + b``; a cell's response is
the max (``top_k=1``) or the mean of the ``top_k`` best scores among the
image's regions whose centre falls in that cell (0 for a cell without one). Levels of the pyramid are grid
sides (``(1, 2)``: the whole image, then 2x2 cells). With ``flip_average``,
the regions flagged as coming from the mirrored image are encoded as an image
of their own (cells in its own frame) and the two codes are averaged. Then
signed square root and L2 over the whole vector.

Layout of a code: ``cells x parts``, cell-major; ``feature_names`` says which
class, part and cell each column is. The products run by blocks of images
(regions x parts, one matrix product per block): numpy on the CPU, torch on a
GPU. This module imports torch only for the GPU.

``PartEncoder``: the encoding as a scikit-learn transformer over a
``PartLearner`` (fitted by it, or given fitted: ``prefit``); its
``fit_transform`` returns the leave-one-out training codes (each training
image by its class's parts learnt without it).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils.validation import check_is_fitted

from .._arrays import signed_sqrt_l2
from .._validation import ConfigError, DataError
from ..config import EncodingConfig

_E = EncodingConfig


class ImageRegions(NamedTuple):
    """One image for the encoder: region features ``(R, D)``, boxes ``(R, 4)``
    ``x0, y0, x1, y1`` in pixels, ``size`` ``(width, height)``, and ``flips``
    ``(R,)`` bool (regions of the mirrored image) or None."""

    features: np.ndarray
    boxes: np.ndarray
    size: tuple
    flips: np.ndarray | None = None


def cells(boxes: np.ndarray, width, height, pyramid) -> np.ndarray:
    """``(R, levels)`` int: the cell of each region's centre at every pyramid level,
    numbered row-major within a level and offset so that all levels' cells are
    distinct (level sides ``(1, 2)``: cell 0, then cells 1-4)."""
    boxes = np.asarray(boxes, np.float32)
    cx = (boxes[:, 0] + boxes[:, 2]) / (2 * np.asarray(width, np.float32))
    cy = (boxes[:, 1] + boxes[:, 3]) / (2 * np.asarray(height, np.float32))
    out = np.empty((len(boxes), len(pyramid)), np.int64)
    offset = 0
    for level, g in enumerate(pyramid):
        col = np.clip((cx * g).astype(np.int64), 0, g - 1)
        row = np.clip((cy * g).astype(np.int64), 0, g - 1)
        out[:, level] = offset + row * g + col
        offset += g * g
    return out


def n_cells(pyramid) -> int:
    return int(sum(g * g for g in pyramid))


def part_responses(scores: np.ndarray, image: np.ndarray, cell: np.ndarray, n_images: int,
                   n_cell: int, top_k: int = 1) -> np.ndarray:
    """``(n_images, n_cell, P)``: per (image, cell), the max (``top_k=1``) or the
    mean of the ``top_k`` best of the ``scores`` ``(rows, P)`` of the rows there.

    ``image`` ``(rows,)`` and ``cell`` ``(rows, levels)`` say where each row
    belongs (every row counts once per level). A cell where no region's centre
    falls gets 0: part scores are background z-scores, so 0 is what the
    background gives on average.
    """
    rows, p = scores.shape
    out = np.zeros((n_images * n_cell, p), np.float32)
    for level in range(cell.shape[1]):
        group = image * n_cell + cell[:, level]
        order = np.argsort(group, kind="stable")
        g = group[order]
        starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        s = scores[order]
        if top_k == 1:
            values = np.maximum.reduceat(s, starts, axis=0)
        else:
            values = _top_k_mean(s, starts, top_k)
        out[g[starts]] = values
    return out.reshape(n_images, n_cell, p)


def _top_k_mean(s: np.ndarray, starts: np.ndarray, k: int) -> np.ndarray:
    """Mean of the ``k`` largest rows of each group (all of them when fewer)."""
    sizes = np.diff(np.r_[starts, len(s)])
    n, width = len(starts), int(sizes.max())
    pad = np.full((n, width, s.shape[1]), -np.inf, np.float32)
    within = np.arange(len(s)) - np.repeat(starts, sizes)
    pad[np.repeat(np.arange(n), sizes), within] = s
    kk = min(k, width)
    top = -np.partition(-pad, kk - 1, axis=1)[:, :kk]  # (n, kk, P), -inf where short
    top[np.isinf(top)] = 0.0
    return top.sum(axis=1) / np.minimum(sizes, kk)[:, None]


def encode(images, weights, bias, *, pyramid=_E.pyramid, top_k: int = _E.top_k,
           flip_average: bool = _E.flip_average, normalize: bool = True,
           batch_images: int = _E.batch_images, device: str = "cpu") -> np.ndarray:
    """Codes ``(n, n_cells * P)`` of a sequence of ``ImageRegions`` (see the module).

    ``weights`` ``(P, D)``, ``bias`` ``(P,)``. Images come by blocks of
    ``batch_images``; their float16 features are converted per block, so a
    memory-mapped feature cache streams. ``device``: "cpu" or a torch CUDA
    device for the products and the max.
    """
    weights = np.ascontiguousarray(weights, np.float32)
    bias = np.asarray(bias, np.float32)
    if weights.ndim != 2 or bias.shape != (len(weights),):
        raise DataError(f"encode: weights {weights.shape} and bias {bias.shape} should be "
                        "(P, D) and (P,)")
    n_cell = n_cells(pyramid)
    product = _Product(weights, bias, device)
    codes = []
    block: list = []
    for k, item in enumerate(images):
        block.append(_check_image(k, item, weights.shape[1]))
        if len(block) == batch_images:
            codes.append(_encode_block(block, product, pyramid, n_cell, top_k, flip_average))
            block = []
    if block:
        codes.append(_encode_block(block, product, pyramid, n_cell, top_k, flip_average))
    if not codes:
        return np.zeros((0, n_cell * len(weights)), np.float32)
    out = np.concatenate(codes).reshape(-1, n_cell * len(weights))
    return signed_sqrt_l2(out, axis=1) if normalize else out


def _check_image(k: int, item, dim: int) -> ImageRegions:
    item = ImageRegions(*item)
    shape = np.shape(item.features)
    if len(shape) != 2 or shape[0] < 1 or shape[1] != dim:
        raise DataError(f"encode: image {k}: features should be (R, {dim}) with R >= 1, got "
                        f"{shape}")
    if np.shape(item.boxes) != (shape[0], 4):
        raise DataError(f"encode: image {k}: boxes should be ({shape[0]}, 4), got "
                        f"{np.shape(item.boxes)}")
    if item.flips is not None and np.shape(item.flips) != (shape[0],):
        raise DataError(f"encode: image {k}: flips should be ({shape[0]},), got "
                        f"{np.shape(item.flips)}")
    return item


def _encode_block(block, product, pyramid, n_cell, top_k, flip_average) -> np.ndarray:
    """``(n, n_cell, P)`` raw responses of one block of images."""
    x, image, cell, views = [], [], [], 0
    view_of = []  # per image: its views (the image, and its mirror when averaged)
    for item in block:
        flips = (np.zeros(len(item.boxes), bool) if item.flips is None
                 else np.asarray(item.flips, bool))
        c = cells(item.boxes, item.size[0], item.size[1], pyramid)
        parts = [~flips, flips] if flip_average and flips.any() and (~flips).any() \
            else [np.ones(len(flips), bool)]
        mine = []
        for rows in parts:
            x.append(np.asarray(item.features)[rows])
            image.append(np.full(int(rows.sum()), views))
            cell.append(c[rows])
            mine.append(views)
            views += 1
        view_of.append(mine)
    x = np.concatenate(x).astype(np.float32, copy=False)
    image, cell = np.concatenate(image), np.concatenate(cell)
    responses = product(x, image, cell, views, n_cell, top_k)  # (views, n_cell, P)
    return np.stack([responses[v].mean(axis=0) for v in view_of])


class _Product:
    """Scores of rows against the parts and their per-(image, cell) pooling."""

    def __init__(self, weights, bias, device: str, backend: str | None = None):
        self.weights, self.bias, self.device = weights, bias, device
        self.backend = backend or ("numpy" if device == "cpu" else "torch")
        if self.backend == "torch":
            import torch

            self.torch = torch
            self.w = torch.from_numpy(weights).to(device)
            self.b = torch.from_numpy(bias).to(device)

    def __call__(self, x, image, cell, n_images, n_cell, top_k):
        if self.backend == "numpy":
            return part_responses(x @ self.weights.T + self.bias, image, cell, n_images,
                                  n_cell, top_k)
        torch = self.torch
        s = torch.from_numpy(x).to(self.device, non_blocking=True) @ self.w.T + self.b
        if top_k > 1:  # the top-k mean's padding is done by numpy
            return part_responses(s.cpu().numpy(), image, cell, n_images, n_cell, top_k)
        p = s.shape[1]
        out = torch.full((n_images * n_cell, p), float("nan"), device=self.device)
        for level in range(cell.shape[1]):
            group = torch.from_numpy(image * n_cell + cell[:, level]).to(self.device)
            out.scatter_reduce_(0, group[:, None].expand(-1, p), s, reduce="amax",
                                include_self=False)
        out = torch.nan_to_num(out, nan=0.0)  # cells without a region, as part_responses
        return out.reshape(n_images, n_cell, p).cpu().numpy()


def part_names(part_class, class_names=None) -> list[str]:
    """``<class>/part<j>`` of every part: ``j`` counts the parts of its class in order; a
    part's class is ``class_names[part_class[p]]``, or ``part_class[p]`` itself."""
    part_class = np.asarray(part_class)
    index = np.zeros(len(part_class), np.int64)
    for c in np.unique(part_class):
        index[part_class == c] = np.arange(int((part_class == c).sum()))
    return [f"{c if class_names is None else class_names[c]}/part{j}"
            for c, j in zip(part_class.tolist(), index.tolist())]


def feature_names(part_class, pyramid, class_names=None) -> np.ndarray:
    """Names of the code's columns: ``<class>/part<j>/<g>x<g>:<row>,<col>`` (cell-major,
    see ``part_names``)."""
    parts = part_names(part_class, class_names)
    names = [f"{p}/{g}x{g}:{r},{col}" for g in pyramid for r in range(g) for col in range(g)
             for p in parts]
    return np.asarray(names, dtype=object)


_E = EncodingConfig


def _is_image_list(X) -> bool:
    """``X`` is a sequence of ``ImageRegions`` (or of such tuples), not an array."""
    if isinstance(X, np.ndarray) or hasattr(X, "__array__") or not hasattr(X, "__len__") \
            or not hasattr(X, "__getitem__"):
        return False
    if len(X) == 0:
        return True
    first = X[0]
    return isinstance(first, ImageRegions) or (
        isinstance(first, tuple) and len(first) in (3, 4) and np.ndim(first[0]) == 2)


class _WholeImages:
    """The images of an ``(N, R, D)`` array as ``ImageRegions`` (a sequence): every
    region's box the whole image, ``(0, 0, 1, 1)`` in an image of size ``(1, 1)``."""

    def __init__(self, x: np.ndarray):
        self.x = x
        self.boxes = np.tile(np.array([[0, 0, 1, 1]], np.float32), (x.shape[1], 1))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i) -> ImageRegions:
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"_WholeImages indices must be integers, not {type(i).__name__}")
        return ImageRegions(self.x[i], self.boxes, (1, 1))

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def _n_features(images) -> int | None:
    if isinstance(images, _WholeImages):
        return images.x.shape[2]
    return np.shape(ImageRegions(*images[0]).features)[-1] if len(images) else None


class PartEncoder(TransformerMixin, BaseEstimator):
    """Part-response codes (see the module) as a scikit-learn transformer.

    The parts come from ``learner`` (a ``PartLearner``): ``fit(X, y)`` fits a
    clone of it (default ``PartLearner()``) on ``X``'s region features and
    boxes; with ``prefit=True`` the given learner, already fitted, is used as
    it is (as ``SelectFromModel(estimator, prefit=True)``; it is not copied).
    The other parameters are ``EncodingConfig``'s (``device`` "cpu" or a torch
    CUDA device, for the products of ``transform``).

    ``X``: a sequence of ``ImageRegions`` (features ``(R, D)``, boxes, image
    size, flips), or an ``(N, R, D)`` array / an ``(N, D)`` array (one region
    per image), whose regions' boxes are the whole image (``(0, 0, 1, 1)``,
    size ``(1, 1)``; the learner then learns without boxes: no NMS).

    ``transform(X)``: every image encoded by the learner's parts
    (``codes(X)``). ``fit_transform(X, y)``: the training codes, leave-one-out
    with ``leave_one_out`` (``codes(X, train=np.arange(len(X)))``): each
    training image encoded by its class's parts learnt without it
    (``loo_directions``) and the other classes' parts, so that a classifier
    trained on them sees the responses an unseen image would get. Hence
    ``fit_transform(X, y)`` differs from ``fit(X, y).transform(X)`` on purpose,
    as scikit-learn's ``TargetEncoder.fit_transform`` (cross fitting) does.

    Fitted: ``learner_``, ``classes_`` and ``n_features_in_`` (the learner's).
    """

    def __init__(self, learner=None, *, prefit=False, pyramid=_E.pyramid, top_k=_E.top_k,
                 flip_average=_E.flip_average, leave_one_out=_E.leave_one_out,
                 batch_images=_E.batch_images, device="cpu"):
        self.learner = learner
        self.prefit = prefit
        self.pyramid = pyramid
        self.top_k = top_k
        self.flip_average = flip_average
        self.leave_one_out = leave_one_out
        self.batch_images = batch_images
        self.device = device

    @classmethod
    def from_config(cls, encoding_cfg: EncodingConfig, learner=None, *, prefit=False,
                    device="cpu") -> PartEncoder:
        """An unfitted encoder with the parameters of ``encoding_cfg`` (the encoding
        section, an ``EncodingConfig``); ``device``: the one its ``device`` setting
        resolves to (``"cpu"``, ``"cuda:0"``), which the caller knows."""
        if not isinstance(encoding_cfg, EncodingConfig):
            raise ConfigError(f"PartEncoder.from_config takes the encoding section, an "
                              f"EncodingConfig, got {type(encoding_cfg).__name__}")
        params = {f.name: getattr(encoding_cfg, f.name)
                  for f in dataclasses.fields(EncodingConfig) if f.name != "device"}
        return cls(learner, prefit=prefit, device=device, **params)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True  # one region per image
        tags.input_tags.three_d_array = True  # (images, regions, features)
        tags.target_tags.required = not self.prefit  # a prefit learner needs no y to fit
        tags.transformer_tags.preserves_dtype = ["float32"]  # codes are float32
        return tags

    def _images(self, X, y="no_validation", *, reset: bool):
        """``(images, y, boxes)``: ``X`` as a sequence of ``ImageRegions``; ``boxes``
        for the learner (None for the array forms, whose boxes are made up)."""
        from ..parts._input import _sequence_form, _validate_regions

        if _is_image_list(X):
            _sequence_form(self, y, reset)
            return X, y, [ImageRegions(*item).boxes for item in X] if reset else None
        x, y, form = _validate_regions(self, X, y, reset=reset, min_samples=2 if reset else 1)
        if form == "list":
            raise DataError("PartEncoder: X should be a sequence of ImageRegions (the regions "
                            "with their boxes and image size) or an (N, R, D) or (N, D) "
                            "array, got a list of region arrays without boxes")
        return _WholeImages(x), y, None

    def fit(self, X=None, y=None):
        """Fit a clone of ``learner`` on ``X, y``, or, with ``prefit=True``, take the
        fitted ``learner`` as it is (``X``, optional then, is only checked against
        its number of features). Returns ``self``."""
        from ..parts import PartLearner

        EncodingConfig(**{f.name: getattr(self, f.name)  # the declared checks, once
                          for f in dataclasses.fields(EncodingConfig) if f.name != "device"})
        if X is None and not self.prefit:
            raise DataError("PartEncoder.fit needs X, the training images (or prefit=True "
                            "with a fitted learner)")
        if X is not None:
            images, y, boxes = self._images(X, y, reset=True)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        if self.prefit:
            if self.learner is None:
                raise DataError("PartEncoder(prefit=True) needs a fitted learner, got None")
            check_is_fitted(self.learner)
            learner = self.learner
            n = None if X is None else _n_features(images)
            if n is not None and n != learner.n_features_in_:
                raise ValueError(f"X has {n} features, but {type(self).__name__} is expecting "
                                 f"{learner.n_features_in_} features as input.")
        else:
            learner = clone(self.learner if self.learner is not None else PartLearner())
            learner.fit([ImageRegions(*item).features for item in images], y, boxes=boxes)
        self.learner_ = learner
        self.n_features_in_ = learner.n_features_in_
        self.classes_ = learner.classes_
        return self

    def fit_transform(self, X, y=None) -> np.ndarray:
        """``fit(X, y)``, then the leave-one-out training codes ``codes(X,
        train=np.arange(len(X)))``: not ``fit(X, y).transform(X)`` (see the
        class). With ``prefit=True``, ``X, y`` must be the learner's training
        set, in its order (``DataError`` otherwise)."""
        self.fit(X, y)
        images, _, _ = self._images(X, reset=False)
        if self.prefit:
            self._check_training_set(len(images), y)
        return self._codes(images, np.arange(len(images)))

    def _check_training_set(self, n: int, y) -> None:
        learner = self.learner_
        n_train = sum(len(p) for p in learner.positive_images_)
        if y is None:
            raise DataError("PartEncoder(prefit=True).fit_transform needs y: the training "
                            "codes are those of the learner's training images")
        y = np.asarray(y)
        same = n == n_train and y.shape == (n,) and all(
            np.array_equal(np.flatnonzero(y == c), p)
            for c, p in zip(learner.classes_, learner.positive_images_))
        if not same:
            raise DataError(f"PartEncoder(prefit=True).fit_transform: X, y should be the "
                            f"learner's training set ({n_train} images, each class's at the "
                            f"positions of learner.positive_images_), got {n} images whose "
                            "labels differ; use transform for other images")

    def codes(self, X, train=None) -> np.ndarray:
        """Codes ``(n, n_cells * P)`` float32 of the images ``X``, all in one stream.

        ``train`` (with ``leave_one_out``): the indices into ``X`` of the
        learner's training images, in its training order (``X[train[j]]`` is
        the j-th image it was fitted on); each of them is encoded by its
        class's parts learnt without it (``loo_directions`` of
        ``class_results_``) and the other classes' full parts. Without
        ``train``, every image by the full parts (``transform``).
        """
        check_is_fitted(self, "learner_")
        images, _, _ = self._images(X, reset=False)
        return self._codes(images, train)

    def _codes(self, images, train) -> np.ndarray:
        learner = self.learner_
        kw = dict(pyramid=self.pyramid, top_k=self.top_k, flip_average=self.flip_average,
                  normalize=False)
        raw = encode(images, learner.parts_, learner.part_bias_,
                     batch_images=self.batch_images, device=self.device, **kw)
        if self.leave_one_out and train is not None:
            train = np.asarray(train)
            n_train = sum(len(p) for p in learner.positive_images_)
            if train.shape != (n_train,) or not np.issubdtype(train.dtype, np.integer) or (
                    n_train and (train.min() < 0 or train.max() >= len(raw))):
                raise DataError(f"codes: train should hold the indices into X of the learner's "
                                f"{n_train} training images, got {train.shape} "
                                f"{train.dtype} values for {len(raw)} images")
            raw = raw.reshape(len(raw), -1, len(learner.parts_))
            whitener, mean = learner.background_["whitener"], learner.background_["mean"]
            for c, result in enumerate(learner.class_results_):
                cols = np.flatnonzero(learner.part_class_ == c)
                for j, i in enumerate(train[learner.positive_images_[c]]):
                    loo = np.asarray(result["loo_directions"][j], np.float32) @ whitener
                    raw[i][:, cols] = encode([images[i]], loo, -(loo @ mean),
                                             **kw)[0].reshape(-1, len(cols))
            raw = raw.reshape(len(raw), -1)
        return signed_sqrt_l2(raw, axis=1)

    def transform(self, X) -> np.ndarray:
        """``(n, n_cells * P)``: every image by the learner's full parts."""
        return self.codes(X)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """``<class>/part<j>/<g>x<g>:<row>,<col>`` for every column (``feature_names``)."""
        check_is_fitted(self, "learner_")
        return feature_names(self.learner_.part_class_, self.pyramid, self.learner_.classes_)
