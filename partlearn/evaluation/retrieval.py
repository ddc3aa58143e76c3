"""Image retrieval over the run's descriptors (``partlearn.retrieval``).

Category level, the deep-metric-learning protocol: every test image queries the
other test images; mAP and recall@K. The descriptors (``retrieval.descriptors``):
``global`` (the classification baseline's pooled map), ``parts`` and ``parts[unsup]``
(the part codes of the per-class and of the unsupervised parts),
the pools of the ``descriptors`` stage (``mac``, ``gem``, ``spoc``, their whitened
``+w`` forms, ``rmac``) and concatenations such as ``parts+rmac`` (each block
L2-normalised, the whole scaled to unit norm). Each is ranked plainly and re-ranked
as ``retrieval.rerank`` asks: average query expansion (``qe``), α-weighted
(``aqe``), diffusion on a reciprocal k-NN graph of the test images (``diffusion``).
Timings go to ``results["timings"]["retrieval"]``.
"""

from __future__ import annotations

import time

import numpy as np

from .._arrays import l2_normalize
from ..retrieval import category_retrieval, diffusion, query_expansion, search
from ._base import EvalContext, Evaluator


def blocks(name: str) -> list[str]:
    """``"parts+gem+w"`` → ``["parts", "gem+w"]``: ``+w`` belongs to the block before it."""
    out: list[str] = []
    for piece in name.split("+"):
        if piece == "w" and out:
            out[-1] += "+w"
        else:
            out.append(piece)
    return out


def descriptor(ctx: EvalContext, name: str, images) -> np.ndarray:
    """``(len(images), d)`` unit rows of descriptor ``name`` (see the module)."""
    out = []
    for block in blocks(name):
        if block == "global":
            feats = ctx.load("features")
            x = feats.global_features(ctx.cfg.encoding.flip_average)[images]
        elif block in ("parts", "parts[unsup]"):
            x = ctx.load("encoding" if block == "parts" else "encoding_unsup").codes[images]
        else:
            x = ctx.load("descriptors")[block][images]
        out.append(l2_normalize(np.asarray(x, np.float32), axis=1))
    return np.concatenate(out, axis=1) / np.sqrt(len(out))


def applies(ctx: EvalContext) -> str | None:
    r = ctx.cfg.retrieval
    if not r.descriptors:
        return "retrieval.descriptors is empty"
    for block, stage in (("parts", "encoding"), ("parts[unsup]", "encoding_unsup")):
        if any(block in blocks(d) for d in r.descriptors) and not ctx.has(stage):
            return f"a {block!r} descriptor needs a {block!r} method in classifier.methods"
    return None


def _rank(x, labels, r, rerank: str) -> dict:
    if rerank == "none":
        return category_retrieval(x, labels, r.ks)
    # its first result is the query itself, or a byte-identical duplicate (same vector:
    # the same expansion), skipped
    if rerank in ("qe", "aqe"):
        n = min(r.qe_neighbours, len(x) - 1)
        _, ranks = search(x, x, n + 1)
        q = query_expansion(x, x, ranks[:, 1:], n=n,
                            alpha=r.aqe_alpha if rerank == "aqe" else 0.0)
        return category_retrieval(x, labels, r.ks, queries=q)
    f = diffusion(x, x, k=min(r.diffusion_k, len(x) - 1), alpha=r.diffusion_alpha,
                  gamma=r.diffusion_gamma)
    return category_retrieval(x, labels, r.ks, scores=f)


def run(ctx: EvalContext) -> dict:
    r = ctx.cfg.retrieval
    test = ctx.data.test
    labels = ctx.data.manifest.label[test]
    rows, timings = [], {}
    for name in r.descriptors:
        x = descriptor(ctx, name, test)
        for rerank in r.rerank:
            t0 = time.perf_counter()
            found = _rank(x, labels, r, rerank)
            seconds = time.perf_counter() - t0
            timings[f"{name} {rerank}"] = {"seconds": round(seconds, 3), "ms_per_query":
                                           round(1000 * seconds / len(test), 3)}
            rows.append({"descriptor": name, "rerank": rerank, "dim": int(x.shape[1]),
                         "map": found["map"],
                         "recall": {str(k): float(v) for k, v in found["recall@k"].items()}})
    return {"timings": {"retrieval": timings}, "retrieval": {
        "protocol": "category level", "n_queries": int(len(test)), "ks": list(r.ks),
        "about": "Every test image queries the other test images; a result is right when "
                 "it shares the query's class. Whitening (+w, rmac) learnt on the training "
                 "images only. mAP: non-interpolated; R@K: a right image among the top K.",
        "rows": rows}}


EVALUATOR = Evaluator(name="retrieval", needs=(), run=run, applies=applies)
