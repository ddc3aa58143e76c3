"""Where the parts fire in one image: a heatmap of part responses and the top parts' boxes.

``part_heatmap``: the CAM-like map of an image: each part's map gives every
pixel the best response of the regions covering it (clipped at 0: only
evidence for the part), and the maps are summed weighted by the predicted
class's weights of those parts. ``explain_image`` runs one image (any file, in
the dataset or not) through a finished run's cached parts and classifier and
draws the heatmap and the best boxes of the top parts.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import _files
from ._arrays import l2_normalize
from ._validation import DataError


class PartModel(NamedTuple):
    """A set of parts as scorers of region features: ``responses(x)`` ``(R, P)`` is
    ``x @ weights.T + bias``, of unit-normalised rows when ``cosine`` (DP-Net's
    similarities ``S``). ``part_class``: each part's class. The one scoring of parts
    that the explanations, galleries and localisation use."""

    weights: np.ndarray
    bias: np.ndarray | float
    part_class: np.ndarray
    cosine: bool = False

    @classmethod
    def of_learner(cls, learner) -> "PartModel":
        """The two-stage parts of a fitted ``PartLearner`` (background z-scores)."""
        return cls(learner.parts_, learner.part_bias_, learner.part_class_, False)

    @classmethod
    def of_dpnet(cls, model: dict) -> "PartModel":
        """DP-Net's part layer ``U`` (a ``train_dpnet`` model): cosines."""
        return cls(np.asarray(model["U"], np.float32), 0.0, np.asarray(model["part_class"]),
                   True)

    def responses(self, x) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.cosine:
            x = l2_normalize(x, axis=1)
        return x @ self.weights.T + self.bias


def part_heatmap(boxes, responses, weights, size, grid: int = 64) -> np.ndarray:
    """``(grid_h, grid_w)`` map over an image of ``size`` (width, height): sum over parts
    ``p`` of ``weights[p] * max(0, max over regions r covering the cell of responses[r, p])``.

    ``boxes`` ``(R, 4)`` pixels, ``responses`` ``(R, P)``, ``weights`` ``(P,)``. The grid
    keeps the image's aspect ratio, ``grid`` cells along the long side.
    """
    width, height = size
    gw = max(1, int(round(grid * width / max(width, height))))
    gh = max(1, int(round(grid * height / max(width, height))))
    b = np.asarray(boxes, np.float32)
    r = np.clip(np.asarray(responses, np.float32), 0, None)
    xs = (np.arange(gw) + 0.5) * width / gw
    ys = (np.arange(gh) + 0.5) * height / gh
    cover_x = (xs[None, :] >= b[:, :1]) & (xs[None, :] <= b[:, 2:3])  # (R, gw)
    cover_y = (ys[None, :] >= b[:, 1:2]) & (ys[None, :] <= b[:, 3:4])  # (R, gh)
    out = np.zeros((gh, gw), np.float32)
    for p in np.flatnonzero(np.asarray(weights) != 0):
        part = np.zeros((gh, gw), np.float32)
        for k in np.flatnonzero(r[:, p] > 0):  # the regions where the part has evidence
            cell = cover_y[k][:, None] & cover_x[k][None, :]
            np.maximum(part, np.where(cell, r[k, p], 0), out=part)
        out += weights[p] * part
    return out


def explain_image(pipe, image_path, out: Path, top: int = 5, model: str = "parts") -> dict:
    """Explain ``image_path`` with a finished run's cached models: ``model`` "parts" (the
    two-stage parts and the ``parts`` SVM) or "dpnet" (the first DP-Net variant's first
    seed). Writes ``<out>/<stem>_explain.png`` (image, heatmap of the predicted class, the
    ``top`` parts' best boxes and scores) and returns what it drew."""
    from . import data as datasets
    from .classify import method_features
    from .encoding import PartEncoder
    from .encoding import ImageRegions
    from .backend import LocalBackend
    from .stages.multiscale import image_features

    cfg = pipe.cfg
    if model not in ("parts", "dpnet"):
        raise DataError(f"explain: model {model!r} is not 'parts' or 'dpnet'")
    if cfg.features.pca_dim:
        raise DataError("explain does not support features.pca_dim > 0 yet")
    if model == "parts" and "parts" not in cfg.classifier.methods:
        raise DataError("explain needs a run with the 'parts' method")
    if model == "dpnet" and "dpnet" not in pipe.stages:
        raise DataError("explain --model dpnet needs a run with dpnet.variants set")
    # a DataError naming the stage when the run did not finish
    trained = pipe.load("classifier") if model == "parts" else pipe.load("dpnet")
    path = Path(image_path)
    try:
        image = datasets.load_image(path)
    except Exception as e:  # noqa: BLE001 (any decoding failure is the user's file)
        raise DataError(f"{path}: cannot read this image ({e})") from None
    # the image's regions and features as the run's stages compute them (the pyramid too)
    feats, = image_features(cfg, [image], LocalBackend(cfg.n_jobs))
    own = ~np.asarray(feats.flips, bool)
    x, boxes = np.asarray(feats.regions, np.float32)[own], feats.boxes[own]
    if model == "parts":
        learner = pipe.load("parts")
        code = PartEncoder.from_config(cfg.encoding, learner, prefit=True).fit() \
            .transform([ImageRegions(feats.regions, feats.boxes, feats.size, feats.flips)])
        svm = trained.models["parts"]
        scores = method_features("parts", parts=code) @ svm["coef"].T + svm["intercept"]
        c = int(svm["classes"][scores.argmax()])
        parts, class_coef = PartModel.of_learner(learner), svm["coef"][c]
    else:
        dp = trained.model(next(iter(trained.runs)))
        parts = PartModel.of_dpnet(dp)
        c = int((dp["V"] @ parts.responses(x).max(axis=0) + dp["bias"]).argmax())
        class_coef = dp["V"][c]
    names = pipe.manifest.classes
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    file = out / f"{path.stem}_explain{'' if model == 'parts' else '_dpnet'}.png"
    part_classes = pipe.parts_classes if model == "parts" else names  # parts_from: theirs
    drawn = draw_explanation(image, boxes, parts.responses(x), class_coef, parts.part_class,
                             part_classes, f"{path.name}: {names[c]}?", file, top)
    return {"image": str(path), "model": model, "predicted": names[c], "parts": drawn,
            "figure": str(file)}


def draw_explanation(image, boxes, responses, class_coef, part_class, class_names, title,
                     file, top: int = 5) -> list[dict]:
    """Draw ``image`` with the heatmap of a class (``class_coef``: its classifier weights
    over the part code, cell-major) and its ``top`` parts' best boxes, into ``file``;
    ``responses`` ``(R, P)`` of the image's regions ``boxes``. Returns the boxes drawn."""
    weight = part_weights(class_coef, len(part_class))
    heat = part_heatmap(boxes, responses, np.clip(weight, 0, None), image.size)
    drawn = top_parts(boxes, responses, class_coef, part_class, class_names, top)
    _draw(image, heat, drawn, title, file)
    return drawn


def part_weights(class_coef, n_part: int) -> np.ndarray:
    """``(P,)`` a class's classifier weight of each part, summed over the code's cells
    (``class_coef``: its weights over the part code, cell-major)."""
    return np.asarray(class_coef).reshape(-1, n_part).sum(axis=0)


def top_parts(boxes, responses, class_coef, part_class, class_names, top: int = 5
              ) -> list[dict]:
    """The ``top`` parts that count most for a class (weight x best positive response; see
    ``part_weights``), each ``{"part": name, "box": its best box, "score": the response
    there}``; ``responses`` ``(R, P)`` of the image's regions ``boxes``."""
    from .encoding import part_names

    weight = part_weights(class_coef, len(part_class))
    best = responses.argmax(axis=0)
    share = weight * np.clip(responses.max(axis=0), 0, None)
    names = part_names(part_class, class_names)
    return [{"part": names[p], "box": np.asarray(boxes[best[p]]).tolist(),
             "score": float(responses[best[p], p])}
            for p in np.argsort(-share, kind="stable")[:top]]


def _draw(image, heat, drawn, title, file) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    axes[0].imshow(image)
    axes[0].imshow(heat, cmap="jet", alpha=0.45, extent=(0, image.width, image.height, 0))
    axes[0].set_title(title, fontsize=9)
    axes[1].imshow(image)
    for k, d in enumerate(drawn):
        x0, y0, x1, y1 = d["box"]
        color = plt.cm.tab10(k % 10)
        axes[1].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=2, ec=color))
        axes[1].text(x0, y0, f"{d['part'].split('/')[-1]} {d['score']:.1f}", color="white",
                     fontsize=7, bbox={"facecolor": color, "pad": 1, "lw": 0})
    axes[1].set_title("the top parts' best boxes", fontsize=9)
    for ax in axes:
        ax.axis("off")
    with _files.replacing(Path(file)) as tmp:  # a run directory's file: whole or not at all
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
