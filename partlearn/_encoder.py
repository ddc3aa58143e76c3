"""``PartEncoder``: the part-response encoding as a scikit-learn transformer over images.

Built on a ``PartLearner`` (fitted here, or ``prefit`` as ``SelectFromModel`` takes
one); ``fit_transform`` gives the training images leave-one-out codes, as
``TargetEncoder.fit_transform`` cross-fits; ``transform`` codes by the learnt parts.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils.validation import check_is_fitted

from ._arrays import signed_sqrt_l2
from ._validation import DataError
from .config import EncodingConfig
from .encoding import ImageRegions, encode, feature_names

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
        from ._region_input import _sequence_form, _validate_regions

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
        from ._learner import PartLearner

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
