"""Part galleries: for each class, its most participating own parts and their best
regions over the test images, as a grid of crops per class (``figures/gallery_*.png``
for the two-stage parts, ``figures/gallery_dpnet_*.png`` for DP-Net's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import _files
from ..encoding import part_names
from ._base import EvalContext, Evaluator, digest, keep, restore


def gallery_figure(rows, file: Path, size: int = 96, load=None) -> None:
    """A grid of region crops: ``rows`` of ``(title, [(image, box, caption), ...])``,
    saved as a PNG at ``file`` (PIL, no plotting library: a gallery is pictures); an
    image is what ``load`` (default: ``load_image`` of a path) takes. An unreadable
    image leaves a grey tile."""
    from PIL import Image, ImageDraw

    from ..data import load_image

    load = load or load_image
    k = max((len(items) for _, items in rows), default=1)  # a class none of whose own
    # parts is among its top participants: an empty gallery, not a failed evaluator
    left, top, pad, text = 70, 18, 4, 12
    canvas = Image.new("RGB", (left + k * (size + pad), top + len(rows) * (size + text + pad)),
                       "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), rows[0][0].split("/")[0] if rows else "", fill="black")
    for r, (title, items) in enumerate(rows):
        y = top + r * (size + text + pad)
        draw.text((4, y + text + size // 2), title.split("/")[-1], fill="black")
        for c, (image, box, caption) in enumerate(items):
            try:
                crop = load(image).crop(tuple(int(round(v)) for v in box))
                crop = crop.resize((size, size))
            except Exception:  # noqa: BLE001 (a picture, not a result: grey, not a crash)
                crop = Image.new("RGB", (size, size), (128, 128, 128))
            x = left + c * (size + pad)
            draw.text((x, y), caption, fill="black")
            canvas.paste(crop, (x, y + text))
    with _files.replacing(file) as tmp:
        canvas.save(tmp)


def galleries(ctx: EvalContext, participation: list[dict], best: tuple, part_class,
              prefix: str, n_parts: int = 2, k: int = 8) -> list[str]:
    """``figures/<prefix>_<class>.png`` for every class: each of its ``n_parts`` most
    participating own parts, its ``k`` best regions over the test images (crops, with
    the image's class and the score). Returns the files, run-relative."""
    boxes, scores = best
    memo = ctx.memo("galleries", {"participation": participation, "n_parts": n_parts, "k": k,
                                  "prefix": prefix, "best": digest(scores)})
    restored = restore(memo, ctx.out)
    if restored is not None:  # drawn before from the same parts and participation
        return restored
    m, test = ctx.data.manifest, ctx.test
    names = part_names(part_class, m.classes)
    (ctx.out / "figures").mkdir(exist_ok=True)
    files = []
    column = {n: q for q, n in enumerate(names)}  # not names.index per part: P each
    for c, row in enumerate(participation):
        parts = [column[n] for n, own in zip(row["parts"], row["own"]) if own][:n_parts]
        rows = []
        for q in parts:
            top = np.argsort(-scores[:, q], kind="stable")[:k]
            rows.append((names[q], [(int(test[t]), boxes[t, q],
                                     f"{m.classes[m.label[test[t]]].split('.')[-1][:9]} "
                                     f"{scores[t, q]:.1f}") for t in top]))
        name = f"figures/{prefix}_{c:03d}.png"
        gallery_figure(rows, ctx.out / name, load=ctx.data.image)
        files.append(name)
    keep([ctx.out / f for f in files], memo, ctx.memo_needs)
    return files


def applies(ctx: EvalContext) -> str | None:
    if not {"participation", "participation_dpnet"} & set(ctx.results):
        return "no participation to choose the parts by"
    return None


def run(ctx: EvalContext) -> dict:
    figures = []
    for key, prefix in (("participation", "gallery"), ("participation_dpnet", "gallery_dpnet")):
        if key in ctx.results:
            name = "parts" if key == "participation" else next(
                n for n in ctx.part_models() if n.startswith("dpnet"))
            figures += galleries(ctx, ctx.results[key], ctx.best_regions()[name],
                                 ctx.part_models()[name].part_class, prefix)
    return {"figures": figures}


EVALUATOR = Evaluator(name="galleries", needs=("classifier",), run=run, applies=applies)
