"""A two-level hierarchy over classes, and what it is measured by.

A hierarchy is ``class_group`` ``(C,)``: the group of each class, groups numbered
0..G-1 in order of their first class. It comes from a taxonomy file
(``read_taxonomy``: a CSV ``class,group``), or without extra labels from the class
means of the global descriptor (``cluster_classes``: agglomerative, average linkage,
cosine) or from unsupervised image groups mapped to classes by majority
(``groups_to_classes``); ``shuffle_hierarchy`` is the control, the classes dealt at
random into groups of the same sizes. ``sibling_negatives`` draws a class's negative
images mostly from its siblings (the other classes of its group), for the class
parts that must tell a group's classes apart.

Measured properties, over the test images: ``specificity`` (the labels among a
part's best-scoring test images: their entropy, and the share in the part's own
class or group) and ``containment`` (how often a class part's best box lies
inside one of its group parts' best boxes).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .._validation import DataError, did_you_mean


def renumber(class_group) -> np.ndarray:
    """Groups numbered 0..G-1 in order of their first class (``(C,)`` int64)."""
    g = np.asarray(class_group)
    _, first, inverse = np.unique(g, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first, kind="stable"), kind="stable")
    return order[inverse].astype(np.int64)


def read_taxonomy(path, classes) -> tuple[np.ndarray, list[str]]:
    """``(class_group, group_names)`` from a CSV with a header ``class,group`` and a row
    for every class of ``classes`` (the dataset's class names). Rows of other classes
    are left out (a taxonomy of a whole dataset serves its subsets); a class without a
    row is an error that names the close spellings among them. Group names are in
    order of the groups' first class."""
    path = Path(path)
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"hierarchy.taxonomy: {path} does not exist; expected a CSV with "
                        "columns class,group") from None
    with f:
        try:
            rows = [(n, [v.strip() for v in row]) for n, row in enumerate(csv.reader(f), 1)
                    if any(v.strip() for v in row)]
        except (csv.Error, UnicodeDecodeError) as e:
            raise DataError(f"{path}: not readable as CSV ({e})") from None
    if not rows or rows[0][1][:2] != ["class", "group"]:
        got = ",".join(rows[0][1]) if rows else "nothing"
        raise DataError(f"{path}, line 1: expected the header class,group, got {got!r}")
    group_of: dict[str, tuple[str, int]] = {}
    for line, row in rows[1:]:
        if len(row) != 2 or not all(row):
            raise DataError(f"{path}, line {line}: expected two fields class,group, got "
                            f"{','.join(row)!r}")
        name, group = row
        if name in group_of:
            first, at = group_of[name]
            raise DataError(f"{path}, line {line}: class {name!r} is in two groups, "
                            f"{first!r} (line {at}) and {group!r}")
        group_of[name] = (group, line)
    missing = [c for c in classes if c not in group_of]
    if missing:
        others = [c for c in group_of if c not in set(classes)]
        hint = did_you_mean(missing[0], others)
        raise DataError(f"{path}: {len(missing)} class(es) of the dataset have no row: "
                        f"{', '.join(missing[:10])}{', ...' if len(missing) > 10 else ''}"
                        f"{f'; for {missing[0]!r}{hint}' if hint else ''}")
    names = [group_of[c][0] for c in classes]
    order = list(dict.fromkeys(names))
    return np.asarray([order.index(n) for n in names], np.int64), order


def cluster_classes(class_means: np.ndarray, n_groups: int) -> np.ndarray:
    """``(C,)`` groups of the classes whose mean descriptors are ``class_means`` ``(C, D)``:
    agglomerative clustering, average linkage on the cosine distance, cut at
    ``n_groups`` groups (deterministic: no random draw)."""
    from scipy.cluster.hierarchy import fcluster, linkage

    c = len(class_means)
    if not 2 <= n_groups <= c - 1:
        raise DataError(f"hierarchy.n_groups={n_groups}: {c} classes can make 2..{c - 1} "
                        "groups (a group of every class, or one per class, is no hierarchy)")
    x = np.asarray(class_means, np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    tree = linkage(x, method="average", metric="cosine")
    return renumber(fcluster(tree, n_groups, criterion="maxclust"))


def groups_to_classes(image_group, image_label, n_classes: int) -> np.ndarray:
    """``(C,)``: each class in the unsupervised group that holds most of its training
    images (ties: the lower group), groups that got no class dropped and renumbered."""
    image_group, image_label = np.asarray(image_group), np.asarray(image_label)
    counts = np.zeros((n_classes, int(image_group.max()) + 1), np.int64)
    np.add.at(counts, (image_label, image_group), 1)
    return renumber(counts.argmax(axis=1))


def shuffle_hierarchy(class_group, seed: int) -> np.ndarray:
    """The control: the classes dealt at random (``seed``) into groups of the sizes of
    ``class_group``'s."""
    g = np.asarray(class_group)
    return renumber(g[np.random.default_rng(seed).permutation(len(g))])


def sibling_negatives(y, class_group, n: int, fraction: float, seed: int) -> list[np.ndarray]:
    """Per class ``k`` (``0..C-1``), sorted indices into ``y`` of ``n`` negative images (all
    there are, when fewer): ``round(fraction * n)`` of them from the sibling classes
    (same group, other class), as many as there are, and the rest from the other
    groups. Class ``k`` draws with ``default_rng(seed + k)``."""
    y, class_group = np.asarray(y), np.asarray(class_group)
    out = []
    for k in range(len(class_group)):
        rng = np.random.default_rng(seed + k)
        siblings = np.flatnonzero((class_group[y] == class_group[k]) & (y != k))
        others = np.flatnonzero(class_group[y] != class_group[k])
        a = min(len(siblings), int(round(fraction * n)))
        b = min(len(others), n - a)
        a = min(len(siblings), n - b)  # too few of the others: more siblings
        pick = np.concatenate([rng.choice(siblings, a, replace=False),
                               rng.choice(others, b, replace=False)])
        out.append(np.sort(pick).astype(np.int64))
    return out


def inside_best_boxes(x: np.ndarray, boxes: np.ndarray, weights: np.ndarray, bias: np.ndarray,
                      margin: float = 0.25, inside: float = 0.8) -> np.ndarray:
    """``(R,)`` bool: the regions of one image (``x`` ``(R, D)``, ``boxes`` ``(R, 4)``) at a
    finer scale inside a part's best region: at least ``inside`` of a region's area in one
    of the parts' (``weights`` ``(P, D)``, ``bias``) best boxes grown by ``margin`` of its
    sides, and no larger than that box. The best regions themselves are kept, so every
    part keeps one region at least."""
    best = boxes[np.argmax(np.asarray(x, np.float32) @ weights.T + bias, axis=0)]  # (P, 4)
    side = np.concatenate([best[:, 2:] - best[:, :2]] * 2, axis=1)
    grown = best + margin * side * np.array([-1, -1, 1, 1])
    lo = np.maximum(boxes[:, None, :2], grown[None, :, :2])
    hi = np.minimum(boxes[:, None, 2:], grown[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)  # (R, P)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)[:, None]
    best_area = np.prod(best[:, 2:] - best[:, :2], axis=1)[None, :]
    return ((inter >= inside * area) & (area <= best_area)).any(axis=1)


def entropy_bits(labels, n_labels: int) -> float:
    p = np.bincount(np.asarray(labels), minlength=n_labels) / max(len(labels), 1)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def specificity(best_scores: np.ndarray, label: np.ndarray, class_group: np.ndarray,
                part_owner: np.ndarray, level: str, k: int) -> dict:
    """Over each part's ``k`` best test images (``best_scores`` ``(n_test, P)``: each
    part's best region score per image; ``label`` the images' classes): the mean entropy
    (bits) of their class labels, the share of them in the part's own group and, for
    class parts (``level="class"``, ``part_owner`` their classes; ``"group"``: their
    groups), in its own class."""
    k = min(k, len(label))
    top = np.argsort(-best_scores, axis=0, kind="stable")[:k]  # (k, P)
    labels = label[top]
    n_classes = len(class_group)
    owner_group = part_owner if level == "group" else class_group[part_owner]
    out = {"k": int(k), "n_parts": int(best_scores.shape[1]),
           "class_entropy_bits": float(np.mean([entropy_bits(labels[:, p], n_classes)
                                                for p in range(labels.shape[1])])),
           "own_group_share": float((class_group[labels] == owner_group[None]).mean())}
    if level == "class":
        out["own_class_share"] = float((labels == part_owner[None]).mean())
    return out


def containment(class_boxes: np.ndarray, group_boxes: np.ndarray, image_group: np.ndarray,
                group_part_group: np.ndarray, image_size: np.ndarray,
                inside: float = 0.8) -> dict:
    """How often a class part's best box lies inside one of its group parts' best boxes
    in the same image: ``class_boxes`` ``(n, Pc, 4)`` (the image's own class's parts),
    ``group_boxes`` ``(n, Pg, 4)`` (every group part), ``image_group`` ``(n,)`` (the
    image's class's group), ``group_part_group`` ``(Pg,)``, ``image_size`` ``(n, 2)``
    width, height. "Inside": at least ``inside`` of the class box's area is in the group
    box. ``contained``: the share of (image, class part) pairs inside one of their own
    group's parts' boxes; ``control``: the same with the group parts' boxes of another
    image of the same group (the next one), in coordinates relative to the image: what
    the boxes' sizes and usual places give without the image's content;
    ``whole_image_share``: how many of the own group parts' best boxes cover at least
    90% of the image (trivial containers)."""
    n = len(image_group)
    scale = np.tile(np.asarray(image_size, np.float64), 2)[:, None, :]  # (n, 1, 4)
    cb, gb = class_boxes / scale, group_boxes / scale
    mine = group_part_group[None, :] == image_group[:, None]  # (n, Pg)
    nxt = np.arange(n)
    for g in np.unique(image_group):
        idx = np.flatnonzero(image_group == g)
        nxt[idx] = np.roll(idx, -1)

    def share(boxes):
        lo = np.maximum(cb[:, :, None, :2], boxes[:, None, :, :2])
        hi = np.minimum(cb[:, :, None, 2:], boxes[:, None, :, 2:])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=3)  # (n, Pc, Pg)
        area = np.prod(cb[..., 2:] - cb[..., :2], axis=2)[:, :, None]
        within = (inter >= inside * np.maximum(area, 1e-12)) & mine[:, None, :]
        return float(within.any(axis=2).mean())

    whole = (np.prod(gb[..., 2:] - gb[..., :2], axis=2) >= 0.9) & mine
    return {"contained": share(gb), "control": share(gb[nxt]), "inside_fraction": inside,
            "whole_image_share": float(whole.sum() / max(mine.sum(), 1))}


def two_level_scores(group_scores: np.ndarray, within_scores: np.ndarray,
                     class_group: np.ndarray) -> np.ndarray:
    """``(n, C)`` scores of the two-level decision: the group of the highest
    ``group_scores`` ``(n, G)``, then within it the class of the highest
    ``within_scores`` ``(n, C)``. The other classes keep their order below every class
    of the chosen group, so the argmax is the two-level decision and a ranking stays a
    ranking."""
    chosen = group_scores.argmax(axis=1)
    span = within_scores.max(axis=1) - within_scores.min(axis=1) + 1.0
    outside = class_group[None, :] != chosen[:, None]
    return (within_scores - outside * span[:, None]).astype(np.float32)
