"""Parts as an embedding for classes never seen in training (``[transfer]``).

The run's pipeline is the base classes' (``Pipeline.novel`` holds the novel
classes' images): parts, background, groups, hierarchy, whitenings and every C were
learnt on the base classes' training images only. The novel images go through the
same regions, backbone and features, and are encoded by the base parts as unseen test
images are (``descriptor``); then, per ``transfer.methods`` descriptor:

* **few-shot classification**: ``transfer.episodes`` N-way K-shot episodes per shot
  count (``episodes``: classes and images drawn from the novel images with the seed
  ``(transfer.seed, K)``, support and queries disjoint), classified by the nearest
  class mean (cosine) and by L2-regularised multinomial logistic regression (``logreg``)
  whose C is chosen by the same episodes drawn from the base classes' training
  images (never on a novel class). All episodes at once, as batched products of one
  Gram matrix. Mean accuracy with a 95% interval (normal, over episodes), and per
  method the paired difference to ``global`` over the same episodes.
* **unseen-class retrieval**: every novel image queries all the others; recall@K,
  mAP and MAP@R (Musgrave et al. 2020), plain and with average query expansion,
  each with the paired difference to ``global`` over the same queries.
"""

from __future__ import annotations

import logging
import time
from typing import NamedTuple

import numpy as np

from .._arrays import l2_normalize
from .._validation import DataError
from ..classify import CODE_STAGES, descriptor_blocks as blocks
from ..stages import BY_NAME, Context
from ..stages.descriptors import whiten, whitening
from ._base import EvalContext, Evaluator
from .retrieval import _block as _base_block, _rank

logger = logging.getLogger(__name__)

#: the fitted learners behind a code block, in the order their codes are concatenated
LEARNERS = {"parts": ("parts",), "parts[unsup]": ("parts_unsup",),
            "parts[hier]": ("parts_group", "parts_class")}
_STEPS = 300  # logistic regression's accelerated gradient steps (converged: see the test)
_Z95 = 1.959964


class Episodes(NamedTuple):
    """``classes`` ``(E, ways)``: each episode's classes (indices into the sorted labels);
    ``support`` ``(E, ways, shots)`` and ``query`` ``(E, ways, queries)``: row indices,
    way ``j`` of episode ``e`` being class ``classes[e, j]``."""

    classes: np.ndarray
    support: np.ndarray
    query: np.ndarray


def episodes(labels, ways: int, shots: int, queries: int, n: int, seed) -> Episodes:
    """``n`` episodes drawn at once from the rows of ``labels`` by ``numpy``'s generator
    seeded with ``seed``: ``ways`` distinct classes each, and per class ``shots +
    queries`` distinct images, the first ``shots`` the support. Every class needs that
    many images (a ``DataError`` names the first that has fewer)."""
    labels = np.asarray(labels)
    names, lab = np.unique(labels, return_inverse=True)
    lab = lab.ravel()
    counts = np.bincount(lab, minlength=len(names))
    need = shots + queries
    if len(names) < ways:
        raise DataError(f"transfer: {ways}-way episodes need {ways} classes, the images have "
                        f"{len(names)}")
    if (counts < need).any():
        c = int(np.flatnonzero(counts < need)[0])
        raise DataError(f"transfer: class {str(names[c])!r} has {counts[c]} images; {shots}-shot "
                        f"episodes with {queries} queries per class need {need} (lower "
                        "transfer.queries)")
    table = np.full((len(names), counts.max()), -1, np.int64)  # each class's rows, padded
    order = np.argsort(lab, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    for c in range(len(names)):
        table[c, :counts[c]] = order[starts[c]:starts[c + 1]]
    rng = np.random.default_rng(seed)
    classes = np.argsort(rng.random((n, len(names))), axis=1)[:, :ways]
    rows = table[classes]  # (n, ways, max count)
    keys = np.where(rows >= 0, rng.random(rows.shape), 2.0)  # padding sorts last
    picked = np.take_along_axis(rows, np.argsort(keys, axis=2)[..., :need], axis=2)
    return Episodes(classes, picked[..., :shots], picked[..., shots:])


def _grams(gram: np.ndarray, ep: Episodes) -> tuple[np.ndarray, np.ndarray]:
    """``(E, n_support, n_support)`` and ``(E, n_query, n_support)`` blocks of ``gram``."""
    s = ep.support.reshape(len(ep.support), -1)
    q = ep.query.reshape(len(ep.query), -1)
    return gram[s[:, :, None], s[:, None, :]], gram[q[:, :, None], s[:, None, :]]


def ncm_scores(gram: np.ndarray, ep: Episodes) -> np.ndarray:
    """``(E, n_query, ways)``: each query's cosine to each way's mean support descriptor
    (rows of unit norm, ``gram`` their inner products)."""
    e, ways, shots = ep.support.shape
    kss, kqs = _grams(gram, ep)
    dots = kqs.reshape(e, -1, ways, shots).sum(axis=3)  # query . sum of the way's support
    norm2 = kss.reshape(e, ways, shots, ways, shots).sum(axis=(2, 4))  # |sum|^2 on the diag
    return dots / np.sqrt(np.maximum(np.diagonal(norm2, axis1=1, axis2=2), 1e-12))[:, None]


def logreg_scores(gram: np.ndarray, ep: Episodes, C) -> np.ndarray:
    """``(len(C), E, n_query, ways)``: the logits of L2-regularised multinomial logistic
    regression fitted on each episode's support, one fit per C (scikit-learn's
    objective: ``C * sum of log-losses + |W|^2 / 2``, the intercept not penalised).

    The weights stay in the span of the support rows (``W = X^T A``), so the fit needs
    the Gram blocks only: ``_STEPS`` accelerated gradient steps on ``A`` and the
    intercept, the step ``1 / (1 + lambda)`` (the loss's gradient is
    ``(1 + lambda)``-Lipschitz for unit rows with a constant column)."""
    e, ways, shots = ep.support.shape
    n = ways * shots
    kss, kqs = _grams(gram, ep)
    kss, kqs = kss.astype(np.float64), kqs.astype(np.float64)
    lam = 1.0 / (np.asarray(C, np.float64) * n)[:, None, None, None]  # mean loss + lam/2 |W|^2
    y = np.repeat(np.eye(ways), shots, axis=0)  # (n, ways), way-major like the support
    step = 1.0 / (1.0 + lam)
    a = np.zeros((len(lam), e, n, ways))
    b = np.zeros((len(lam), e, 1, ways))
    a_look, b_look = a, b
    for t in range(_STEPS):
        z = kss @ a_look + b_look
        z -= z.max(axis=3, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=3, keepdims=True)
        r = (p - y) / n
        a_new = a_look - step * (r + lam * a_look)
        b_new = b_look - step * r.sum(axis=2, keepdims=True)
        m = t / (t + 3)
        a_look, b_look = a_new + m * (a_new - a), b_new + m * (b_new - b)
        a, b = a_new, b_new
    return kqs @ a + b


def accuracies(scores: np.ndarray, ep: Episodes) -> np.ndarray:
    """Each episode's query accuracy (``scores`` ``(..., E, n_query, ways)``)."""
    truth = np.repeat(np.arange(ep.query.shape[1]), ep.query.shape[2])
    return (scores.argmax(axis=-1) == truth).mean(axis=-1)


def interval(values) -> dict:
    """Mean and normal 95% interval of per-episode (or per-query) values."""
    v = np.asarray(values, np.float64)
    half = _Z95 * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "ci95": [float(v.mean() - half), float(v.mean() + half)]}


# ------------------------------------------------------------------ descriptors


def _codes_of_novel(ctx: EvalContext, block: str) -> np.ndarray:
    """The novel images' codes by the base pipeline's parts of ``block``: every image by
    the full parts (none was a training image), as the encoding stages encode test
    images."""
    from ..stages.encoding import encoder, image_regions

    novel = ctx.pipe.novel
    data, feats = novel.load("dataset"), novel.load(novel.features_stage)
    regions = image_regions(data, feats)
    stage_ctx = Context(ctx.pipe, BY_NAME["encoding"])
    codes = [encoder(stage_ctx, ctx.load(s)).fit().codes(regions) for s in LEARNERS[block]]
    return (np.concatenate(codes, axis=1) / np.float32(np.sqrt(len(codes)))
            if len(codes) > 1 else codes[0])


def _novel_block(ctx: EvalContext, block: str, memo: dict) -> np.ndarray:
    """``(n_novel, d)`` float32 rows of one block for the novel images; ``+w``: whitened
    by the whitening learnt on the base classes' training images."""
    if block in memo:
        return memo[block]
    novel = ctx.pipe.novel
    base = block.removesuffix("+w")
    feats = novel.load(novel.features_stage)
    if base == "global":
        x = feats.global_features(ctx.cfg.encoding.flip_average)
    elif base in CODE_STAGES:
        x = _codes_of_novel(ctx, base)
    else:
        x = feats.pools[base]
    x = np.asarray(x, np.float32)
    if block.endswith("+w"):
        r = ctx.cfg.retrieval  # the same whitening as the base images' (descriptors stage)
        plain = _base_block(ctx, base)[ctx.data.train]
        x = whiten(x, whitening(np.asarray(plain, np.float32), r.whiten_shrinkage, ctx.cfg.seed))
    memo[block] = x
    return x


def _join(parts: list[np.ndarray]) -> np.ndarray:
    """Blocks L2-normalised, concatenated, scaled to unit rows (as retrieval's)."""
    return np.concatenate([l2_normalize(p, axis=1) for p in parts], axis=1) / np.sqrt(len(parts))


def descriptors(ctx: EvalContext, name: str, memo: dict) -> tuple[np.ndarray, np.ndarray]:
    """Descriptor ``name`` of the novel images (all of them) and of the base classes'
    training images (they choose C), unit rows."""
    novel = _join([_novel_block(ctx, b, memo) for b in blocks(name)])
    base = _join([_base_block(ctx, b)[ctx.data.train] for b in blocks(name)])
    return novel, base


# ------------------------------------------------------------------ the evaluator


def applies(ctx: EvalContext) -> str | None:
    return None if ctx.pipe.novel is not None else (
        "no novel classes (transfer.novel_classes / transfer.n_novel)")


class _AtSeed:
    """The evaluation context with every seeded stage read as the ``k``-th seed's
    (``parts`` as ``parts@seed=1``; a stage shared by the seeds as it is)."""

    def __init__(self, ctx: EvalContext, k: int):
        self._ctx, self._k = ctx, k

    def load(self, stage: str):
        names = self._ctx.pipe.per_seed(stage)
        return self._ctx.load(names[self._k][1] if len(names) > 1 else stage)

    def __getattr__(self, name):
        return getattr(self._ctx, name)


def _mean_found(founds: list[dict]) -> dict:
    """One method's retrieval over several seeds: every figure, and every query's, the
    mean over the seeds (the queries are the same; a query left out is left out in all)."""
    if len(founds) == 1:
        return founds[0]

    def per_query(key):
        rows = [np.array([np.nan if v is None else v for v in f[key]], np.float64)
                for f in founds]
        mean = np.mean(rows, axis=0)
        return [None if np.isnan(v) else float(v) for v in mean]

    return {"map": float(np.mean([f["map"] for f in founds])),
            "map@r": float(np.mean([f["map@r"] for f in founds])),
            "recall@k": {k: float(np.mean([f["recall@k"][k] for f in founds]))
                         for k in founds[0]["recall@k"]},
            "ap": per_query("ap"), "ap@r": per_query("ap@r"),
            "hits": np.mean([np.asarray(f["hits"], np.float64) for f in founds],
                            axis=0).tolist()}


def _few_shot(t, x, labels, xb, base_labels, shots: int) -> dict:
    """One method's episodes at ``shots``: per classifier, each episode's accuracy, and
    for ``logreg`` the C the base classes chose."""
    out = {}
    ep = episodes(labels, t.ways, shots, t.queries, t.episodes, (t.seed, shots))
    gram = x @ x.T
    if "ncm" in t.classifiers:
        out["ncm"] = (accuracies(ncm_scores(gram, ep), ep), None)
    if "logreg" in t.classifiers:
        eb = episodes(base_labels, t.ways, shots, t.queries, t.episodes, (t.seed, shots))
        chosen = accuracies(logreg_scores(xb @ xb.T, eb, t.C), eb).mean(axis=1)
        c = float(t.C[int(np.argmax(chosen))])
        out["logreg"] = (accuracies(logreg_scores(gram, ep, [c])[0], ep),
                         {"C": c, "base_accuracy": {str(k): float(a)
                                                    for k, a in zip(t.C, chosen)}})
    return out


def run(ctx: EvalContext) -> dict:
    t, r = ctx.cfg.transfer, ctx.cfg.retrieval
    novel = ctx.pipe.novel.load("dataset")
    labels = novel.manifest.label
    base_labels = ctx.data.manifest.label[ctx.data.train]
    n_seeds = len(ctx.pipe.seeds)
    memos: list[dict] = [{} for _ in range(n_seeds)]  # per seed: its blocks of the novel images
    timings: dict = {}
    rows, acc = [], {}  # acc[(shots, classifier)][method]: per-episode accuracies
    retrieval, per_query = [], {}
    for name in t.methods:
        # a method that reads part codes: once per seed of part learning, its per-episode
        # (per-query) figures the mean over the seeds, as the run's own methods report
        seeded = any(b.removesuffix("+w") in CODE_STAGES for b in blocks(name))
        views = [_AtSeed(ctx, k) for k in range(n_seeds)] if seeded else [ctx]
        t0 = time.perf_counter()
        found = [descriptors(v, name, memos[k]) for k, v in enumerate(views)]
        timings[f"{name} descriptors"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        for shots in t.shots:
            per_seed = [_few_shot(t, x, labels, xb, base_labels, shots) for x, xb in found]
            for clf in per_seed[0]:
                a = np.mean([ps[clf][0] for ps in per_seed], axis=0)
                extra = per_seed[0][clf][1] or {}
                if len(views) > 1:
                    extra = extra | {"seeds": len(views),
                                     "per_seed": [float(ps[clf][0].mean()) for ps in per_seed]}
                    if clf == "logreg":
                        extra["C_per_seed"] = [ps[clf][1]["C"] for ps in per_seed]
                acc.setdefault((shots, clf), {})[name] = a
                rows.append({"method": name, "shots": shots, "classifier": clf,
                             "dim": int(found[0][0].shape[1]), **interval(a), **extra})
        timings[f"{name} episodes"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        for rerank in ("none", "qe"):
            result = _mean_found([_rank(x, labels, r, rerank) for x, _ in found])
            per_query[(name, rerank)] = result
            retrieval.append({"method": name, "rerank": rerank, "map": result["map"],
                              "map@r": result["map@r"], "seeds": len(views),
                              "recall": {str(k): v for k, v in result["recall@k"].items()}})
        timings[f"{name} retrieval"] = round(time.perf_counter() - t0, 3)
    reference = "global" if "global" in t.methods else t.methods[0]
    for row in rows:
        a = acc[(row["shots"], row["classifier"])]
        row["vs_" + reference] = interval(a[row["method"]] - a[reference])
    for row in retrieval:
        mine, ref = per_query[(row["method"], row["rerank"])], per_query[(reference,
                                                                          row["rerank"])]
        ok = [i for i, v in enumerate(mine["ap"]) if v is not None]
        row["vs_" + reference] = {
            f"r@{r.ks[0]}": interval([mine["hits"][i][0] - ref["hits"][i][0] for i in ok]),
            "map@r": interval([mine["ap@r"][i] - ref["ap@r"][i] for i in ok])}
    base_classes = list(ctx.data.manifest.classes)
    logger.info("transfer: %d methods on %d novel classes (%d images) never seen by any "
                "learnt stage; parts, whitenings and C learnt on %d base classes",
                len(t.methods), len(novel.manifest.classes), len(labels), len(base_classes))
    return {"timings": {"transfer": timings}, "transfer": {
        "about": "Evaluated on NOVEL classes, outside every method's training: parts, "
                 "background, groups, whitenings and every C were learnt on the base "
                 "classes' training images only; the novel images are encoded as unseen "
                 "images. Few-shot: N-way K-shot episodes drawn from all the novel images "
                 "(seed (transfer.seed, K)), nearest class mean (cosine) and logistic "
                 "regression with C chosen by the same episodes on the base classes' "
                 "training images; mean accuracy, 95% interval over episodes; differences "
                 "paired over the same episodes. Retrieval: every novel image queries all "
                 "the other novel images; differences paired over the same queries. With "
                 "several seeds of part learning, a method that reads part codes runs once "
                 "per seed and every per-episode and per-query figure is the mean over them.",
        "base_classes": base_classes, "novel_classes": list(novel.manifest.classes),
        "n_novel_images": int(len(labels)), "ways": t.ways, "queries": t.queries,
        "episodes": t.episodes, "seed": t.seed, "shots": list(t.shots),
        "part_seeds": list(ctx.pipe.seeds),
        "reference": reference, "ks": list(r.ks), "few_shot": rows, "retrieval": retrieval}}


EVALUATOR = Evaluator(name="transfer", needs=(), run=run, applies=applies)
