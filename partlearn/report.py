"""Readable reports of a run, from its ``results.json`` summary.

``results.md`` / ``report.md``: the methods, their paired differences, per-class
accuracy and the stages, as Markdown. ``report.html``: the same tables with
plots (matplotlib, embedded as PNG ``data:`` URIs: the file is self-contained
and references nothing on the network): top-1 per method, accuracy against
the number of parts per class (when the summary holds runs at several part
counts, see ``partlearn compare``), per-class differences from ``global``, and
confusion matrices. ``external_rows`` scores another implementation's test
predictions (``image_id,predicted_label``) on the same split.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import os
from pathlib import Path

import numpy as np

from ._validation import DataError
from .evaluation import metrics, paired_comparison


def _pct(x, std=None) -> str:
    if x is None:
        return "—"
    return f"{100 * x:.1f}%" if std is None else f"{100 * x:.1f} ± {100 * std:.1f}%"


def results_markdown(summary: dict) -> str:
    """The run's methods, their paired differences and its stages, as Markdown."""
    lines = [f"# {summary.get('name', 'run')}: results", "",
             f"Dataset `{summary.get('dataset')}`, backbone `{summary.get('backbone')}`.", ""]
    methods = summary.get("methods") or {}
    if methods:
        n_test = next(iter(methods.values()))["n_test"]
        lines += [f"## Methods ({n_test} test images)", "",
                  "SVM methods: C chosen by cross-validation on the training split (its "
                  "accuracy shown). DP-Net: mean ± std over seeds, early stopping on a "
                  "held-out slice of the training split (its accuracy shown); dim is the "
                  "number of parts.", "",
                  "| method | top-1 | mean class accuracy | C | CV / held-out accuracy | dim | "
                  "train s |", "|---|---|---|---|---|---|---|"]
        for name, m in methods.items():
            if "C" in m:
                edge = " ⚠ at the grid's edge" if m.get("C_at_edge") else ""
                c, check = f"{m['C']:g}{edge}", m["cv_accuracy"]
            else:
                c, check = "—", m.get("val_accuracy")
            lines.append(f"| {name} | {_pct(m['top1'], m.get('top1_std'))} | "
                         f"{_pct(m['mean_class_accuracy'], m.get('mean_class_accuracy_std'))} | "
                         f"{c} | {_pct(check)} | {m['dim']} | {m['train_seconds']:.1f} |")
        lines.append("")
    comparisons = summary.get("comparisons") or []
    if comparisons:
        lines += ["## Paired differences (same test images)", "",
                  "Top-1 of the first method minus the second; 95% paired bootstrap "
                  "interval; exact McNemar p on the images only one of them gets right.", "",
                  "| a − b | difference | 95% interval | McNemar p | right by a only | "
                  "by b only |", "|---|---|---|---|---|---|"]
        for c in comparisons:
            lo, hi = c["ci95"]
            lines.append(f"| {c['a']} − {c['b']} | {100 * c['diff']:+.1f} | "
                         f"[{100 * lo:+.1f}, {100 * hi:+.1f}] | {c['mcnemar_p']:.3g} | "
                         f"{c['a_only']} | {c['b_only']} |")
        lines.append("")
    if methods and summary.get("classes"):
        names = list(methods)
        lines += ["## Per-class accuracy", "", "| class | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        for k, cls in enumerate(summary["classes"]):
            lines.append(f"| {cls} | " + " | ".join(
                _pct(methods[n]["per_class_accuracy"][k]) for n in names) + " |")
        lines.append("")
    loc = summary.get("localization") or {}
    if loc:
        lines += ["## Are the parts real parts? (annotated keypoints, test images)", "",
                  "Keypoint consistency: how often a part's best box in an image of its class "
                  "holds the keypoint it holds most often, mean over parts; inside object: "
                  "best boxes at least half inside the object's box. Control: the same boxes "
                  "at random places.", "",
                  "| parts of | keypoint consistency | random boxes | inside object | "
                  "random boxes | parts |", "|---|---|---|---|---|---|"]
        for name, v in loc.items():
            lines.append(f"| {name} | {_pct(v['keypoint_consistency'])} | "
                         f"{_pct(v['random_keypoint_consistency'])} | "
                         f"{_pct(v['inside_object'])} | {_pct(v['random_inside_object'])} | "
                         f"{v['n_parts']} |")
        lines.append("")
    notes = [(name, e) for name, e in (summary.get("evaluations") or {}).items()
             if e["status"] != "done"]
    if notes:
        lines += ["## Not shown", ""] + [
            f"- {name}: {'skipped, ' + e['reason'] if e['status'] == 'skipped' else 'FAILED, ' + e['error']}"
            for name, e in notes] + [""]
    lines += ["## Stages", "", "| stage | key | cached | seconds |", "|---|---|---|---|"]
    for stage, info in summary.get("stages", {}).items():
        lines.append(f"| {stage} | `{info['key']}` | {'yes' if info['cached'] else 'no'} | "
                     f"{summary['timings'].get(stage, 0):.2f} |")
    lines += ["", f"Peak memory: {summary.get('peak_memory_mb', 0):.0f} MB.", ""]
    return "\n".join(lines)


def write_results(summary: dict, out: Path, memo: Path | None = None) -> None:
    """``results.md``, ``report.md`` and ``report.html`` into the run directory ``out``.
    ``memo``: a directory where the rendered plots are kept, keyed by what they show,
    so that a re-run with the same results does not draw them again."""
    text = results_markdown(summary)
    (Path(out) / "results.md").write_text(text)
    (Path(out) / "report.md").write_text(text)
    (Path(out) / "report.html").write_text(report_html(summary, out, memo))


# ------------------------------------------------------------------ external rows


def read_predictions(run: Path) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """A run's ``predictions.csv``: ``(paths, labels, {method: predicted labels})``."""
    file = Path(run) / "predictions.csv"
    try:
        with open(file, newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise DataError(f"{file} is missing: is {run} a run directory of `partlearn run`?") \
            from None
    header, rows = rows[0], rows[1:]
    return ([r[0] for r in rows], [r[1] for r in rows],
            {m: [r[k] for r in rows] for k, m in enumerate(header[2:], start=2)})


def external_rows(summary: dict, run: Path, externals: dict[str, Path],
                  n_bootstrap: int = 10_000, seed: int = 0) -> None:
    """Add each ``{name: csv}`` of ``image_id,predicted_label`` rows to ``summary``'s
    methods, scored on the run's test images (``image_id``: the image's path as in
    the run's ``predictions.csv``, or its file name when that is unique), with a
    paired comparison against ``global`` when the run has it."""
    paths, labels, preds = read_predictions(run)
    classes = summary["classes"]
    index = {c: k for k, c in enumerate(classes)}
    by_path = {p: k for k, p in enumerate(paths)}
    names = [Path(p).name for p in paths]
    by_name = {n: k for k, n in enumerate(names) if names.count(n) == 1}
    y = np.array([index[c] for c in labels])
    for name, file in externals.items():
        got = {}
        try:
            with open(file, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                missing = {"image_id", "predicted_label"} - set(reader.fieldnames or [])
                if missing:
                    raise DataError(f"{file}, line 1: columns {sorted(missing)} are missing; "
                                    "expected image_id,predicted_label")
                for row in reader:
                    key, label = row["image_id"].strip(), row["predicted_label"].strip()
                    k = by_path.get(key, by_name.get(key))
                    if k is None:
                        raise DataError(f"{file}, line {reader.line_num}: image_id {key!r} is "
                                        f"not a test image of {run}")
                    if label not in index:
                        raise DataError(f"{file}, line {reader.line_num}: predicted_label "
                                        f"{label!r} is not one of the {len(classes)} classes")
                    got[k] = index[label]
        except FileNotFoundError:
            raise DataError(f"external results {file} do not exist") from None
        if len(got) != len(paths):
            raise DataError(f"{file}: predictions for {len(got)} of the {len(paths)} test "
                            "images; every test image needs one")
        pred = np.array([got[k] for k in range(len(paths))])
        summary["methods"][name] = metrics(y, pred, len(classes)) | {"external": str(file)}
        if "global" in preds:
            g = np.array([index[c] for c in preds["global"]])
            summary.setdefault("comparisons", []).append(
                {"a": name, "b": "global"} | paired_comparison(pred == y, g == y,
                                                               n_bootstrap, seed))


# ------------------------------------------------------------------ HTML


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figures(summary: dict, run: Path | None = None) -> list[tuple[str, str]]:
    """``[(title, PNG data URI)]`` of the report's plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = summary.get("methods") or {}
    out = []
    if methods:
        names = list(methods)
        fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(names), 3.2))
        top1 = [100 * methods[n]["top1"] for n in names]
        err = [100 * methods[n].get("top1_std", 0.0) for n in names]
        ax.bar(range(len(names)), top1,
               color=["#888" if n == "global" else "#4a7ab5" for n in names])
        seeded = [k for k, n in enumerate(names) if "top1_std" in methods[n]]
        if seeded:
            ax.errorbar(seeded, [top1[k] for k in seeded], yerr=[err[k] for k in seeded],
                        fmt="none", ecolor="k", capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_ylabel("test top-1 (%)")
        lo = min(t - e for t, e in zip(top1, err))
        ax.set_ylim(max(0, lo - 5), min(100, max(top1) + 3))
        ax.grid(axis="y", alpha=0.3)
        out.append(("Top-1 per method (DP-Net: mean ± std over seeds)", _png(fig)))
    curve = summary.get("parts_curve") or {}
    if any(len(v) > 1 for v in curve.values()):
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        for name, points in curve.items():
            points = sorted(points)
            ax.plot([p for p, _ in points], [100 * a for _, a in points], "o-", label=name)
        ax.set_xlabel("parts per class")
        ax.set_ylabel("test top-1 (%)")
        ax.legend()
        ax.grid(alpha=0.3)
        out.append(("Accuracy against the number of parts per class", _png(fig)))
    classes = summary.get("classes") or []
    if "global" in methods and len(methods) > 1 and classes:
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
        out.append(("Per-class accuracy, difference from global", _png(fig)))
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
    for name in summary.get("figures") or []:  # the run's PNG files, last
        if run is not None and (Path(run) / name).is_file():
            uri = base64.b64encode((Path(run) / name).read_bytes()).decode("ascii")
            title = (f"Heatmap: where the parts fire in a test image, weighted by the "
                     f"predicted class ({name})" if "heatmap" in name else
                     f"Part gallery: best test regions of a class's most participating "
                     f"parts ({name})")
            out.append((title, "data:image/png;base64," + uri))
    return out


def _md_table_html(block: list[str]) -> str:
    rows = [[html.escape(c.strip().replace("`", "")) for c in line.strip().strip("|").split("|")]
            for line in block if not set(line.replace("|", "").strip()) <= set("-")]
    head, body = rows[0], rows[1:]
    return ("<table><thead><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr></thead>"
            "<tbody>" + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>"
                                for r in body) + "</tbody></table>")


def _figures_memo(summary: dict, run: Path | None, memo: Path | None):
    if memo is None:
        return _figures(summary, run)
    shown = {k: v for k, v in summary.items() if k not in ("timings", "stages", "peak_memory_mb")}
    h = hashlib.sha256(b"figures v2" + json.dumps(shown, sort_keys=True, default=str).encode())
    for name in summary.get("figures") or []:
        if run is not None and (Path(run) / name).is_file():
            h.update((Path(run) / name).read_bytes())
    file = Path(memo) / f"figures-{h.hexdigest()[:24]}.json"
    if file.is_file():
        return [tuple(f) for f in json.loads(file.read_text())]
    figures = _figures(summary, run)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(figures))
    os.replace(tmp, file)
    return figures


def report_html(summary: dict, run: Path | None = None, memo: Path | None = None) -> str:
    """A self-contained HTML page: the Markdown report's tables and the plots (and the
    run directory's figure files listed in ``summary["figures"]``, embedded)."""
    parts, table = [], []
    for line in results_markdown(summary).splitlines() + [""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            parts.append(_md_table_html(table))
            table = []
        if line.startswith("# "):
            parts.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            parts.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.strip():
            parts.append(f"<p>{html.escape(line).replace('`', '')}</p>")
    drawn = _figures_memo(summary, run, memo)
    if run is not None:  # the plots as PNG files too (galleries and heatmaps already are)
        (Path(run) / "figures").mkdir(exist_ok=True)
        files = sum((Path(run) / n).is_file() for n in summary.get("figures") or [])
        for k, (title, uri) in enumerate(drawn[:len(drawn) - files]):
            (Path(run) / "figures" / f"plot_{k:02d}.png").write_bytes(
                base64.b64decode(uri.split(",", 1)[1]))
    figures = "".join(f'<figure><img alt="{html.escape(t)}" src="{uri}">'
                      f"<figcaption>{html.escape(t)}</figcaption></figure>"
                      for t, uri in drawn)
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}th{background:#f2f2f2}"
             "td:first-child,th:first-child{text-align:left}figure{display:inline-block;"
             "margin:1em}img{max-width:100%}")
    title = html.escape(f"{summary.get('name', 'run')}: report")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}'
            f"</title><style>{style}</style></head><body>{''.join(parts[:1])}"
            f"<h2>Plots</h2>{figures}{''.join(parts[1:])}</body></html>\n")


# ------------------------------------------------------------------ compare


def compare_runs(runs, externals: dict | None = None, out=None) -> dict:
    """Rebuild the report from finished run directories (their ``results.json``,
    ``predictions.csv`` and ``config.toml``; nothing is recomputed) into ``out``
    (default: the first run). Several runs must share the dataset and test split;
    their methods are then named ``<run>:<method>``, and the top-1 of ``parts``
    and ``dpnet`` against each run's parts per class becomes the
    accuracy-vs-parts plot. ``externals``: ``{name: csv}``, see ``external_rows``."""
    from .config import load_config

    runs = [Path(r) for r in runs]
    summaries = []
    for run in runs:
        file = run / "results.json"
        try:
            summaries.append(json.loads(file.read_text()))
        except FileNotFoundError:
            raise DataError(f"{file} is missing: is {run} a run directory of "
                            "`partlearn run`?") from None
        if not summaries[-1].get("methods"):
            raise DataError(f"{file} holds no methods: run the pipeline to its end first")
    first = summaries[0]
    tests = [read_predictions(run)[0] for run in runs]
    for run, s, t in zip(runs[1:], summaries[1:], tests[1:]):
        if s.get("dataset") != first.get("dataset") or t != tests[0]:
            raise DataError(f"{run} and {runs[0]} were not run on the same dataset and test "
                            "images; only runs on the same split can be compared")
    if len(runs) == 1:
        summary = dict(first)
    else:
        summary = {k: first.get(k) for k in ("dataset", "backbone", "classes")}
        summary.update(name="comparison", methods={}, comparisons=[], stages={}, timings={})
        for run, s in zip(runs, summaries):
            summary["methods"].update({f"{run.name}:{m}": v for m, v in s["methods"].items()})
            summary["comparisons"] += [c | {"a": f"{run.name}:{c['a']}",
                                            "b": f"{run.name}:{c['b']}"}
                                       for c in s.get("comparisons", [])]
    curve: dict[str, list] = {}
    for run, s in zip(runs, summaries):
        cfg = load_config(run / "config.toml")
        if "parts" in s["methods"]:
            curve.setdefault("parts", []).append((cfg.parts.n_parts, s["methods"]["parts"]["top1"]))
        if "dpnet" in s["methods"]:
            curve.setdefault("dpnet", []).append((cfg.dpnet.parts_per_class,
                                                  s["methods"]["dpnet"]["top1"]))
    summary["parts_curve"] = curve
    if externals:
        external_rows(summary, runs[0], externals)
    out = Path(out) if out else runs[0]
    out.mkdir(parents=True, exist_ok=True)
    write_results(summary, out)
    return summary
