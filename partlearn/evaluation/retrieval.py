"""Image retrieval over the run's descriptors (``partlearn.retrieval``).

Category level, the deep-metric-learning protocol: every test image queries the
other test images; mAP and recall@K. Instance level, where the dataset has ground
truth (the revisited-Oxford layout): each query, cropped to its box, ranks the
database (the training split); mAP under the Medium and Hard protocols, per-query
APs, revisitop's mP@K. Both draw example queries with their top results. The descriptors (``retrieval.descriptors``):
``global`` (the classification baseline's pooled map), ``parts``, ``parts[unsup]`` and
``parts[hier]`` (the part codes of the per-class, unsupervised and hierarchical parts; ``+w`` whitens
them, learnt on the training split),
the pools of the ``descriptors`` stage (``mac``, ``gem``, ``spoc``, their whitened
``+w`` forms, ``rmac``) and concatenations such as ``parts+rmac`` (each block
L2-normalised, the whole scaled to unit norm). Each is ranked plainly and re-ranked
as ``retrieval.rerank`` asks: average query expansion (``qe``), α-weighted
(``aqe``), diffusion on a reciprocal k-NN graph of the test images (``diffusion``).
Timings go to ``results["timings"]["retrieval"]``.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from .. import _files
from .._arrays import l2_normalize
from ..data import GND_LISTS
from .._validation import DataError
from ..classify import CODE_STAGES, descriptor_blocks as blocks
from ..retrieval import category_retrieval, diffusion, instance_map, query_expansion, search
from ..stages.descriptors import whiten, whitening
from ._base import EvalContext, Evaluator

logger = logging.getLogger(__name__)


def _block(ctx: EvalContext, block: str) -> np.ndarray:
    """``(N, d)`` float32 rows of one block for every image of the run."""
    base = block.removesuffix("+w")
    if base == "global":
        x = ctx.load("features").global_features(ctx.cfg.encoding.flip_average)
    elif base in CODE_STAGES:
        x = ctx.load(CODE_STAGES[base]).codes
    else:  # the pools, whitened or not, come whitened from the descriptors stage
        return np.asarray(ctx.load("descriptors")[block], np.float32)
    x = np.asarray(x, np.float32)
    if block.endswith("+w"):  # learnt on the training split (the database), never the queries
        r = ctx.cfg.retrieval
        x = whiten(x, whitening(x[ctx.data.train], r.whiten_shrinkage, ctx.cfg.seed))
    return x


def descriptor(ctx: EvalContext, name: str, images) -> np.ndarray:
    """``(len(images), d)`` unit rows of descriptor ``name`` (see the module)."""
    out = [l2_normalize(_block(ctx, block)[images], axis=1) for block in blocks(name)]
    return np.concatenate(out, axis=1) / np.sqrt(len(out))


def applies(ctx: EvalContext) -> str | None:
    r, m = ctx.cfg.retrieval, ctx.data.manifest
    if not r.descriptors:
        return "retrieval.descriptors is empty"
    if m.gnd is not None and not any(m.image_id[i] in m.gnd for i in ctx.data.test):
        return "no test image is a query with ground truth"
    if m.gnd is not None and len(ctx.data.train) < 2:
        return "the database (training split) holds fewer than 2 images"
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


def _ranking(q, db, r, rerank: str, seed: int) -> np.ndarray:
    """``(nq, n_db)``: the database ranked for each query (instance level), by the
    ``retrieval.index`` search (IVF-PQ: the visited cells only, ``-1`` after them)."""
    if rerank == "diffusion":
        f = diffusion(q, db, k=min(r.diffusion_k, len(db) - 1), alpha=r.diffusion_alpha,
                      gamma=r.diffusion_gamma)
        return np.argsort(-f, axis=1, kind="stable")
    find = lambda x, k=None: search(  # noqa: E731
        x, db, k, index=r.index, seed=seed,
        nprobe=None if r.index == "flat" else r.nprobe)[1]
    if rerank in ("qe", "aqe"):
        n = min(r.qe_neighbours, len(db))
        top = find(q, n)
        if (top < 0).any():
            raise DataError(f"retrieval: the {r.index} search found fewer than "
                            f"{n} results for a query; raise retrieval.nprobe")
        q = query_expansion(q, db, top, n=n, alpha=r.aqe_alpha if rerank == "aqe" else 0.0)
    return find(q)


def _instance_setup(ctx: EvalContext):
    """Database (the training split), queries (test images with ground truth) and the
    ground truth as positions in the database; ids of images not kept are dropped."""
    m, db = ctx.data.manifest, ctx.data.train
    where = {m.image_id[i]: j for j, i in enumerate(db)}
    queries, gnd, dropped = [], [], 0
    for i in ctx.data.test:
        g = m.gnd.get(m.image_id[i])
        if g is None:
            continue
        lists = {k: [where[x] for x in g[k] if x in where] for k in GND_LISTS}
        dropped += sum(len(g[k]) - len(lists[k]) for k in GND_LISTS)
        queries.append(int(i))
        gnd.append(lists)
    if dropped:
        logger.warning("retrieval: %d ground-truth images are not in the database (not kept "
                       "by the dataset stage); they count as absent", dropped)
    return db, np.asarray(queries, np.intp), gnd


def _status(gnd: dict, j: int) -> str:
    return ("right" if j in gnd["easy"] or j in gnd["hard"]
            else "junk" if j in gnd["junk"] else "wrong")


def _instance(ctx: EvalContext) -> dict:
    r = ctx.cfg.retrieval
    db, queries, gnd = _instance_setup(ctx)
    m = ctx.data.manifest
    rows, timings, best = [], {}, None
    for name in r.descriptors:
        x = descriptor(ctx, name, np.concatenate([db, queries]))
        xb, xq = x[: len(db)], x[len(db):]
        for rerank in r.rerank:
            t0 = time.perf_counter()
            ranks = _ranking(xq, xb, r, rerank, ctx.cfg.seed)
            seconds = time.perf_counter() - t0
            timings[f"{name} {rerank}"] = {"seconds": round(seconds, 3), "ms_per_query":
                                           round(1000 * seconds / len(queries), 3)}
            found = {p: instance_map(ranks, gnd, p, kappas=r.ks) for p in ("medium", "hard")}
            rows.append({"descriptor": name, "rerank": rerank, "dim": int(x.shape[1]),
                         "index_mb": round(xb.nbytes / 2 ** 20, 2),
                         "map": {p: f["map"] for p, f in found.items()},
                         "mp": {p: {str(k): v for k, v in f["mp@k"].items()}
                                for p, f in found.items()},
                         "ap": {p: f["ap"] for p, f in found.items()}})
            if best is None or rows[-1]["map"]["medium"] > best[0]:
                best = (rows[-1]["map"]["medium"], f"{name} {rerank}", ranks)
    strips = [(m.image_id[q], q, [(int(db[j]), _status(g, j)) for j in row[:_STRIP]])
              for q, g, row in zip(queries, gnd, best[2])][:_STRIP_QUERIES]
    figure = _strip_figure(ctx, f"retrieval_{_slug(best[1])}", strips)
    return {"timings": {"retrieval": timings}, "figures": [figure], "retrieval": {
        "protocol": "instance level", "n_queries": int(len(queries)), "ks": list(r.ks),
        "queries": [m.image_id[q] for q in queries], "n_database": int(len(db)),
        "examples": {"descriptor": best[1], "figure": figure},
        "about": "Each query (cropped to its box) ranks the database (the training split); "
                 "revisited-Oxford protocols: Medium counts easy and hard images as right, "
                 "Hard only hard ones (easy ignored); junk is ignored in both. Queries with "
                 "no right image are left out of the mean. Whitening (+w, rmac) and "
                 "unsupervised parts learnt on the database images. mP@K: revisitop's mean "
                 "precision at K.",
        "rows": rows}}


def _category(ctx: EvalContext) -> dict:
    r = ctx.cfg.retrieval
    test = ctx.data.test
    labels = ctx.data.manifest.label[test]
    rows, timings, best = [], {}, None
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
            if rerank == "none" and (best is None or found["map"] > best[0]):
                best = (found["map"], name, x)
    # example queries spread over the test set, ranked by the best plain descriptor
    m, x = ctx.data.manifest, best[2]
    picks = np.linspace(0, len(test) - 1, min(_STRIP_QUERIES, len(test))).astype(int)
    strips = []
    for t in picks:
        sim = x @ x[t]
        sim[t] = -np.inf
        top = np.argsort(-sim, kind="stable")[:_STRIP]
        strips.append((m.classes[labels[t]], int(test[t]), [
            (int(test[j]), "right" if labels[j] == labels[t] else "wrong") for j in top]))
    figure = _strip_figure(ctx, f"retrieval_{_slug(best[1])}", strips)
    return {"timings": {"retrieval": timings}, "figures": [figure], "retrieval": {
        "protocol": "category level", "n_queries": int(len(test)), "ks": list(r.ks),
        "examples": {"descriptor": best[1], "figure": figure},
        "about": "Every test image queries the other test images; a result is right when "
                 "it shares the query's class. Whitening (+w, rmac) learnt on the training "
                 "images only. mAP: non-interpolated; R@K: a right image among the top K.",
        "rows": rows}}


_STRIP, _STRIP_QUERIES = 8, 6  # results shown per query, queries shown
_FRAME = {"right": (40, 170, 60), "wrong": (210, 40, 40), "junk": (150, 150, 150)}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def _strip_figure(ctx: EvalContext, stem: str, strips, size: int = 112) -> str:
    """``figures/<stem>.png``: one row per query, the query (framed black) then its top
    results framed green (right), red (wrong) or grey (junk: ignored)."""
    from PIL import Image, ImageDraw, ImageOps

    pad, text, frame = 6, 14, 4
    cell = size + 2 * frame
    canvas = Image.new("RGB", (pad + (_STRIP + 1) * (cell + pad) + pad,
                               pad + len(strips) * (cell + text + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for row, (title, query, results) in enumerate(strips):
        y = pad + row * (cell + text + pad)
        draw.text((pad, y), str(title)[:40], fill="black")
        for col, (i, status) in enumerate([(query, "query")] + results):
            try:
                tile = ImageOps.pad(ctx.data.image(i), (size, size), color="white")
            except Exception:  # noqa: BLE001 (a picture, not a result: grey, not a crash)
                tile = Image.new("RGB", (size, size), (128, 128, 128))
            x = pad + col * (cell + pad) + (pad if col else 0)
            draw.rectangle((x, y + text, x + cell - 1, y + text + cell - 1),
                           fill=_FRAME.get(status, (0, 0, 0)))
            canvas.paste(tile, (x + frame, y + text + frame))
    name = f"figures/{stem}.png"
    (ctx.out / "figures").mkdir(exist_ok=True)
    with _files.replacing(ctx.out / name) as tmp:
        canvas.save(tmp)
    return name


def run(ctx: EvalContext) -> dict:
    return _instance(ctx) if ctx.data.manifest.gnd is not None else _category(ctx)


EVALUATOR = Evaluator(name="retrieval", needs=(), run=run, applies=applies)
