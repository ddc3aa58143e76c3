"""The report's plots: matplotlib figures of a run's summary, as PNG ``data:`` URIs.

``_figures`` draws them (Agg backend) in the order the report shows them, the run's
own PNG files last; ``_figures_memo`` keeps them on disk, keyed by what they show.
Used by ``partlearn.report``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

import numpy as np

from ..cache import load_memo, save_memo


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figures(summary: dict, run: Path | None = None) -> list[tuple[str, str]]:
    """``[(title, PNG data URI)]`` of the report's plots."""
    import matplotlib

    matplotlib.use("Agg")  # before pyplot, which the plots below import

    methods = summary.get("methods") or {}
    classes = summary.get("classes") or []
    return (_top1_plot(methods) + _parts_curve_plot(summary.get("parts_curve") or {})
            + _per_class_plot(methods, classes) + _participation_plots(summary)
            + _confusion_plots(methods, classes) + _retrieval_plot(summary.get("retrieval"))
            + _hierarchy_plot(summary.get("hierarchy")) + _transfer_plot(summary.get("transfer"))
            + _deletion_plot(summary.get("interpretability"))
            + _run_figures(summary, run))


def _deletion_plot(found: dict | None) -> list[tuple[str, str]]:
    """Deletion: the mean probability of the predicted class against the mean area
    removed, per method, its part regions (solid) and random boxes (dashed)."""
    import matplotlib.pyplot as plt

    rows = {k: v["deletion"] for k, v in (found or {}).items()
            if k not in ("about", "constraints") and "deletion" in v}
    if not rows:
        return []
    fig, ax = plt.subplots(figsize=(6, 3.6))
    colours = plt.get_cmap("tab10")
    for k, (name, d) in enumerate(rows.items()):
        for key, ls, label in (("curve", "-", f"{name}: part regions, AUC {d['auc']:.3f}"),
                               ("curve_random", "--",
                                f"{name}: random boxes, AUC {d['auc_random']:.3f}")):
            ax.plot(d[key]["area"], d[key]["probability"], marker="o", ms=3, ls=ls,
                    color=colours(k % 10), label=label)
    ax.set_xlabel("fraction of the image's area removed")
    ax.set_ylabel("probability of the predicted class")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    n = next(iter(rows.values()))["images"]
    return [(f"Deletion: the predicted class's probability as the top part regions are "
             f"removed, against random boxes of the same sizes (mean over {n} test images)",
             _png(fig))]


def _transfer_plot(transfer: dict | None) -> list[tuple[str, str]]:
    """Few-shot accuracy on the novel classes against the shots, one line per method and
    classifier (95% intervals as error bars)."""
    import matplotlib.pyplot as plt

    rows = (transfer or {}).get("few_shot") or []
    if not rows:
        return []
    fig, ax = plt.subplots(figsize=(6, 3.6))
    colours = plt.get_cmap("tab10")
    for clf, ls in (("ncm", "-"), ("logreg", "--")):  # a method's colour, a classifier's line
        for k, m in enumerate(dict.fromkeys(r["method"] for r in rows)):
            mine = sorted((r for r in rows if r["method"] == m and r["classifier"] == clf),
                          key=lambda r: r["shots"])
            if mine:
                y = np.array([100 * r["mean"] for r in mine])
                err = np.array([[y[i] - 100 * r["ci95"][0], 100 * r["ci95"][1] - y[i]]
                                for i, r in enumerate(mine)]).T
                ax.errorbar([r["shots"] for r in mine], y, yerr=err, marker="o", ls=ls,
                            capsize=2, color=colours(k % 10), label=f"{m} ({clf})")
    ax.set_xscale("log", base=2)
    shots = sorted({r["shots"] for r in rows})
    ax.set_xticks(shots, [str(k) for k in shots])
    ax.set_xlabel("shots per class (K)")
    ax.set_ylabel(f"{transfer['ways']}-way accuracy, novel classes (%)")
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return [("Transfer: few-shot accuracy on classes outside every method's training",
             _png(fig))]


def _hierarchy_plot(hier: dict | None) -> list[tuple[str, str]]:
    """Per method: class and group top-1; the share of its mistakes that keep the right
    group against what a wrong class drawn at random would give."""
    import matplotlib.pyplot as plt

    levels = (hier or {}).get("levels") or {}
    if not levels:
        return []
    names = list(levels)
    x = np.arange(len(names))
    fig, (a, b) = plt.subplots(1, 2, figsize=(2.5 + 1.2 * len(names), 3.4))
    for ax, keys, labels, ylabel in (
            (a, ("class_top1", "group_top1"), ("class", "group"), "test top-1 (%)"),
            (b, ("errors_in_group", "errors_in_group_chance"), ("measured", "chance"),
             "mistakes in the right group (%)")):
        for k, (key, label) in enumerate(zip(keys, labels)):
            ax.bar(x + (k - 0.5) * 0.38, [100 * (levels[n][key] or 0) for n in names], 0.38,
                   label=label, color=("#4a7ab5", "#bbb")[k])
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    lo = min(100 * min(v["class_top1"], v["group_top1"]) for v in levels.values())
    a.set_ylim(max(0, lo - 5), 100)
    fig.tight_layout()
    return [("Hierarchy: accuracy per level, and mistakes that stay in the group", _png(fig))]


def _retrieval_plot(retrieval: dict | None) -> list[tuple[str, str]]:
    """Recall@K (category level) or Medium mP@K (instance level) of every descriptor,
    plain (solid) and re-ranked (dashed)."""
    import matplotlib.pyplot as plt

    if not retrieval:
        return []
    ks, instance = retrieval["ks"], retrieval["protocol"] == "instance level"
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for r in retrieval["rows"]:
        y = r["mp"]["medium"] if instance else r["recall"]
        ax.plot(ks, [100 * y[str(k)] for k in ks], marker="o",
                ls="-" if r["rerank"] == "none" else "--",
                label=f"{r['descriptor']}" + ("" if r["rerank"] == "none" else f" +{r['rerank']}"))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("K")
    ax.set_ylabel("mean precision@K, Medium (%)" if instance else "recall@K (%)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    what = "mP@K" if instance else "recall@K"
    return [(f"Retrieval: {what} ({retrieval['protocol']})", _png(fig))]


def _top1_plot(methods: dict) -> list[tuple[str, str]]:
    import matplotlib.pyplot as plt

    if not methods:
        return []
    names = list(methods)
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(names), 3.2))
    top1 = [100 * methods[n]["top1"] for n in names]
    err = [100 * methods[n].get("top1_std", 0.0) for n in names]
    ax.bar(range(len(names)), top1,
           color=["#888" if n == "global" else "#4a7ab5" for n in names])
    seeded = [k for k, n in enumerate(names) if len(methods[n].get("seeds", ())) > 1]
    if seeded:
        ax.errorbar(seeded, [top1[k] for k in seeded], yerr=[err[k] for k in seeded],
                    fmt="none", ecolor="k", capsize=3)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("test top-1 (%)")
    lo = min(t - e for t, e in zip(top1, err))
    ax.set_ylim(max(0, lo - 5), min(100, max(top1) + 3))
    ax.grid(axis="y", alpha=0.3)
    return [("Top-1 per method (with several seeds: mean ± std over them)", _png(fig))]


def _parts_curve_plot(curve: dict) -> list[tuple[str, str]]:
    import matplotlib.pyplot as plt

    if not any(len(v) > 1 for v in curve.values()):
        return []
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for name, points in curve.items():
        points = sorted(points)
        ax.plot([p for p, _ in points], [100 * a for _, a in points], "o-", label=name)
    ax.set_xlabel("parts per class")
    ax.set_ylabel("test top-1 (%)")
    ax.legend()
    ax.grid(alpha=0.3)
    return [("Accuracy against the number of parts per class", _png(fig))]


def _per_class_plot(methods: dict, classes: list) -> list[tuple[str, str]]:
    import matplotlib.pyplot as plt

    if not ("global" in methods and len(methods) > 1 and classes):
        return []
    base = np.array([np.nan if a is None else a
                     for a in methods["global"]["per_class_accuracy"]])
    others = [n for n in methods if n != "global" and "per_class_accuracy" in methods[n]]
    fig, ax = plt.subplots(figsize=(max(5, 0.35 * len(classes) * len(others) ** 0.5), 3.4))
    width = 0.8 / len(others)
    for k, n in enumerate(others):
        acc = np.array([np.nan if a is None else a for a in methods[n]["per_class_accuracy"]])
        ax.bar(np.arange(len(classes)) + k * width, 100 * (acc - base), width, label=n)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=60,
                  ha="right", fontsize=7)
    ax.set_ylabel("per-class accuracy − global (points)")
    ax.legend(fontsize=7)
    return [("Per-class accuracy, difference from global", _png(fig))]


def _participation_plots(summary: dict) -> list[tuple[str, str]]:
    import matplotlib.pyplot as plt

    out = []
    for key, model in (("participation", "parts SVM"), ("participation_dpnet", "DP-Net")):
        participation = summary.get(key) or []
        if not participation:
            continue
        fig, ax = plt.subplots(figsize=(max(5, 0.3 * len(participation)), 3))
        ax.bar(range(len(participation)), [100 * p["borrowed"] for p in participation])
        ax.set_xticks(range(len(participation)), [p["class"] for p in participation],
                      rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("borrowed (% of positive participation)")
        out.append((f"Which parts a class borrows ({model}): the share of its participation "
                    "that comes from other classes' parts", _png(fig)))
        shown = participation[:6]
        fig, axes = plt.subplots(len(shown), 1, figsize=(6, 1.9 * len(shown)), squeeze=False)
        for ax, p in zip(axes[:, 0], shown):
            ax.barh(range(len(p["parts"]))[::-1], p["participation"],
                    color=["#4a7ab5" if own else "#e08a2c" for own in p["own"]])
            ax.set_yticks(range(len(p["parts"]))[::-1], p["parts"], fontsize=6)
            ax.set_title(p["class"], fontsize=8)
        axes[-1, 0].set_xlabel("participation (classifier weight x mean response; blue: own "
                               "parts, orange: borrowed)")
        fig.tight_layout()
        out.append((f"Each class's most participating parts ({model}; first classes)",
                    _png(fig)))
    return out


def _confusion_plots(methods: dict, classes: list) -> list[tuple[str, str]]:
    import matplotlib.pyplot as plt

    out = []
    for n in [m for m in methods if "confusion" in methods[m]][:4]:
        conf = np.asarray(methods[n]["confusion"], float)
        conf = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
        fig, ax = plt.subplots(figsize=(4.2, 3.8))
        im = ax.imshow(conf, cmap="Blues", vmin=0, vmax=1)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if len(classes) <= 25:
            ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=6)
            ax.set_yticks(range(len(classes)), classes, fontsize=6)
        fig.colorbar(im, ax=ax, fraction=0.046)
        out.append((f"Confusion matrix: {n} (rows: true class, fraction)", _png(fig)))
    return out


def _run_figures(summary: dict, run: Path | None) -> list[tuple[str, str]]:
    """The run's own PNG files listed in ``summary["figures"]`` (galleries, heatmaps)."""
    out = []
    for name in summary.get("figures") or []:
        if run is not None and (Path(run) / name).is_file():
            uri = base64.b64encode((Path(run) / name).read_bytes()).decode("ascii")
            title = (f"Heatmap: where the parts fire in a test image, weighted by the "
                     f"predicted class ({name})" if "heatmap" in name else
                     f"Part gallery: best test regions of a class's most participating "
                     f"parts ({name})")
            out.append((title, "data:image/png;base64," + uri))
    return out


def _figures_memo(summary: dict, run: Path | None, memo: Path | None):
    if memo is None:
        return _figures(summary, run)
    volatile = ("timings", "cpu_seconds", "stages", "peak_memory_mb", "memory")
    shown = {k: v for k, v in summary.items() if k not in volatile}
    h = hashlib.sha256(b"figures v2" + json.dumps(shown, sort_keys=True, default=str).encode())
    for name in summary.get("figures") or []:
        if run is not None and (Path(run) / name).is_file():
            h.update((Path(run) / name).read_bytes())
    file = Path(memo) / f"figures-{h.hexdigest()[:24]}.json"
    drawn = load_memo(file, list)
    if drawn is not None:
        return [tuple(f) for f in drawn]
    figures = _figures(summary, run)
    save_memo(file, figures)
    return figures


def tune_plot(result: dict) -> list[tuple[str, str]]:
    """``partlearn tune``'s CV accuracy per trial (a bar each, the chosen one dark, the
    config's own as a dashed line), each bar labelled by its changes from the config."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = result.get("trials") or []
    if not trials:
        return []
    cv = [100 * t["cv_accuracy"] for t in trials]
    labels = [f"{t['number']}: " + ("\n".join(t["changes"]) or "(config)") for t in trials]
    fig, ax = plt.subplots(figsize=(2 + 0.9 * len(trials), 4.2))
    bars = ax.bar(range(len(trials)), cv, color=["#1f3f73" if t["number"] == result["chosen_trial"]
                                                 else "#8fb0dc" for t in trials])
    ax.bar_label(bars, [f"{c:.2f}" for c in cv], fontsize=7)
    ax.axhline(cv[0], color="#888", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(trials)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(f"CV accuracy of {result['method']} (%)")
    span = max(cv) - min(cv)
    ax.set_ylim(max(0, min(cv) - max(1.0, span)), min(100, max(cv) + max(0.5, span / 2)))
    ax.grid(axis="y", alpha=0.3)
    return [(f"CV accuracy of {result['method']} per trial (training split; dark: chosen, "
             "dashed: the config as given)", _png(fig))]
