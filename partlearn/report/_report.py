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
import collections
import csv
import html
import json
import os
from pathlib import Path

import numpy as np

from .. import _files
from ._plots import _figures_memo
from .._validation import DataError, did_you_mean
from ..evaluation import metrics, paired_comparison


def _pct(x, std=None) -> str:
    if x is None:
        return "—"
    return f"{100 * x:.1f}%" if std is None else f"{100 * x:.1f} ± {100 * std:.1f}%"


def _over_seeds(m: dict, key: str) -> str:
    """A method's figure: its value, or with several seeds the mean ± std [min–max]."""
    if len(m.get("seeds", ())) < 2:
        return _pct(m[key])
    return (f"{_pct(m[key], m.get(f'{key}_std'))} "
            f"[{100 * m[f'{key}_min']:.1f}–{100 * m[f'{key}_max']:.1f}]"
            if f"{key}_min" in m else _pct(m[key], m.get(f"{key}_std")))


def _seconds(x) -> str:
    return "—" if x is None else f"{x:.1f}"


def results_markdown(summary: dict) -> str:
    """The run's methods, their paired differences and its stages, as Markdown."""
    lines = [f"# {summary.get('name', 'run')}: results", "",
             f"Dataset `{summary.get('dataset')}`, backbone `{summary.get('backbone')}`.", ""]
    methods = summary.get("methods") or {}
    lines += _methods_md(methods)
    lines += _comparisons_md(summary.get("comparisons") or [])
    if methods and summary.get("classes"):
        lines += _per_class_md(methods, summary["classes"])
    lines += _localization_md(summary.get("localization") or {})
    lines += _interpretability_md(summary.get("interpretability") or {})
    lines += _retrieval_md(summary.get("retrieval") or {})
    lines += _hierarchy_md(summary.get("hierarchy") or {})
    lines += _transfer_md(summary.get("transfer") or {})
    lines += _not_shown_md(summary.get("evaluations") or {})
    lines += ["## Stages", "", "| stage | key | cached | seconds | peak resident MB "
              "| peak own (anonymous) MB |", "|---|---|---|---|---|---|"]
    mem = (summary.get("memory") or {}).get("stages", {})
    for stage, info in summary.get("stages", {}).items():
        m = mem.get(stage, {})
        lines.append(f"| {stage} | `{info['key']}` | {'yes' if info['cached'] else 'no'} | "
                     f"{summary['timings'].get(stage, 0):.2f} | {_mb(m.get('peak_rss_mb'))} "
                     f"| {_mb(m.get('peak_anon_mb'))} |")
    anon = (summary.get("memory") or {}).get("peak_anon_mb")
    own = f"; the process's own (anonymous): {anon:.0f} MB" if anon is not None else ""
    lines += ["", f"Peak memory: {summary.get('peak_memory_mb', 0):.0f} MB resident (with "
              f"the memory-mapped features' page cache){own}.", ""]
    return "\n".join(lines)


def _mb(value) -> str:
    return "—" if value is None else f"{value:.0f}"


def _methods_md(methods: dict) -> list[str]:
    if not methods:
        return []
    n_test = next(iter(methods.values()))["n_test"]
    lines = [f"## Methods ({n_test} test images)", "",
             "SVM methods: C chosen by cross-validation on the training split (its "
             "accuracy shown). DP-Net: early stopping on a held-out slice of the training "
             "split (its accuracy shown); dim is the number of parts. Seeds: how many "
             "seeds a method's figures rest on (part learning's `seeds`, DP-Net's "
             "`dpnet.seeds`); with several, mean ± std [min–max] over them, and C, CV "
             "accuracy and dim are the first seed's.", "",
             "| method | seeds | top-1 | mean class accuracy | C | CV / held-out accuracy | "
             "dim | train s |", "|---|---|---|---|---|---|---|---|"]
    for name, m in methods.items():
        if "weight" in m:  # a late fusion: its weight on the first SVM, both SVMs' C
            c, check = f"w = {m['weight']:g} (C {m['C']:g}, {m['C_b']:g})", m["cv_accuracy"]
        elif "C_within" in m:  # two-level: the group SVM's C, the within-group SVMs'
            c, check = f"{m['C']:g} / {m['C_within']:g}", m["cv_accuracy"]
        elif "C" in m:
            edge = " ⚠ at the grid's edge" if m.get("C_at_edge") else ""
            c, check = f"{m['C']:g}{edge}", m["cv_accuracy"]
        else:
            c, check = "—", m.get("val_accuracy")
        lines.append(f"| {name} | {len(m.get('seeds', ())) or 1} | {_over_seeds(m, 'top1')} | "
                     f"{_over_seeds(m, 'mean_class_accuracy')} | "
                     f"{c} | {_pct(check)} | {m.get('dim', '—')} | "
                     f"{_seconds(m.get('train_seconds'))} |")
    return lines + [""]


def _comparisons_md(comparisons: list) -> list[str]:
    if not comparisons:
        return []
    lines = ["## Paired differences (same test images)", "",
             "Top-1 of the first method minus the second; 95% paired bootstrap "
             "interval; p: exact McNemar on the images only one of them gets right, or, "
             "where a method has several seeds, a sign-flip test over images with every "
             "seed counted (an image counts by the fraction of seeds right; seeds: how many "
             "each side rests on). Holm: the p-values corrected for the "
             f"{len(comparisons)} comparisons of this table.", "",
             "| a − b | seeds | difference | 95% interval | p | p (Holm) | right by a only | "
             "by b only |", "|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        lo, hi = c["ci95"]
        p = c.get("p", c.get("mcnemar_p"))
        holm = c.get("p_holm")
        lines.append(f"| {c['a']} − {c['b']} | {c.get('seeds_a', 1)} / {c.get('seeds_b', 1)} | "
                     f"{100 * c['diff']:+.1f} | "
                     f"[{100 * lo:+.1f}, {100 * hi:+.1f}] | {p:.3g} | "
                     f"{'—' if holm is None else f'{holm:.3g}'} | "
                     f"{c.get('a_only', '—')} | {c.get('b_only', '—')} |")
    return lines + [""]


def _per_class_md(methods: dict, classes: list) -> list[str]:
    names = list(methods)
    seeds = [f"{n}: seed {m['per_class_seed']} of {len(m['seeds'])}" for n, m in methods.items()
             if "per_class_seed" in m and len(m.get("seeds", ())) > 1]
    lines = ["## Per-class accuracy", ""] + (
        [f"Methods trained with several seeds show one here ({'; '.join(seeds)}).", ""]
        if seeds else []) + ["| class | " + " | ".join(names) + " |",
                             "|---|" + "---|" * len(names)]
    for k, cls in enumerate(classes):
        lines.append(f"| {cls} | " + " | ".join(
            _pct(methods[n]["per_class_accuracy"][k]) for n in names) + " |")
    return lines + [""]


def _localization_md(loc: dict) -> list[str]:
    if not loc:
        return []
    lines = ["## Are the parts real parts? (annotated keypoints, test images)", "",
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
    return lines + [""]


def _interpretability_md(found: dict) -> list[str]:
    models = {k: v for k, v in found.items()
              if k not in ("about", "constraints") and "consistency" in v}
    deletion = {k: v["deletion"] for k, v in found.items()
                if k not in ("about", "constraints") and "deletion" in v}
    if not models and not deletion:
        return []
    lines = ["## Interpretability (test images)", "",
             "Each keypoint score with the random-box control in brackets.", ""]
    lines += [f"- {k}: {v}" for k, v in (found.get("about") or {}).items()]
    lines += _deletion_md(deletion)
    if not models:
        return lines + [""]
    lines += ["", "| parts of | consistency | consistency (peak box) | stability | purity | "
                  "pure parts | duplicate pairs | coverage | keypoint coverage | parts |",
              "|---|---|---|---|---|---|---|---|---|---|"]

    def both(v, key, fmt=_pct):
        return f"{fmt(v[key])} ({fmt(v['random'][key])})"

    for name, v in models.items():
        dup = v["duplicates"]
        lines.append(f"| {name} | {both(v, 'consistency')} | {both(v, 'consistency_peak')} | "
                     f"{_pct(v['stability'])} | {both(v, 'purity')} | "
                     f"{v['pure_parts']} ({v['random']['pure_parts']}) | "
                     f"{dup['either']} of {dup['pairs']} | {both(v, 'coverage')} | "
                     f"{both(v, 'keypoint_coverage')} | {v['n_parts']} |")
    table = found.get("constraints")
    if table and table["rows"]:
        lines += ["", f"Constraints against `{table['baseline']}` (difference, 95% interval "
                      f"by a bootstrap over {table['unit']}es):", "",
                  "| setting | " + " | ".join(next(iter(table["rows"].values()))) + " |",
                  "|---|" + "---|" * len(next(iter(table["rows"].values())))]
        for name, row in table["rows"].items():
            lines.append(f"| {name} | " + " | ".join(
                "—" if r["diff"] is None else
                f"{r['diff']:+.3f} [{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]"
                for r in row.values()) + " |")
    return lines + [""]


def _deletion_md(deletion: dict) -> list[str]:
    if not deletion:
        return []
    lines = ["", "Deletion (AUC of the predicted class's probability against the area "
             "removed; lower: the removed regions carry the decision):", "",
             "| method | images | steps | AUC, part regions | AUC, random boxes | "
             "parts − random [95% interval] |", "|---|---|---|---|---|---|"]
    for name, d in deletion.items():
        diff = d["difference"]
        lines.append(f"| {name} | {d['images']} | {d['steps']} | {d['auc']:.3f} | "
                     f"{d['auc_random']:.3f} | {diff['diff']:+.3f} "
                     f"[{diff['ci95'][0]:+.3f}, {diff['ci95'][1]:+.3f}] |")
    return lines


def _retrieval_md(retrieval: dict) -> list[str]:
    if not retrieval:
        return []
    ks, instance = retrieval["ks"], retrieval["protocol"] == "instance level"
    lines = [f"## Retrieval ({retrieval['protocol']}, {retrieval['n_queries']} queries)", "",
             retrieval["about"], ""]
    if instance:
        lines += ["| descriptor | re-ranking | dim | mAP Medium | mAP Hard | "
                  + " | ".join(f"mP@{k} M" for k in ks) + " |",
                  "|---|---|---|---|---|" + "---|" * len(ks)]
        for r in retrieval["rows"]:
            lines.append(f"| {r['descriptor']} | {r['rerank']} | {r['dim']} | "
                         f"{_pct(r['map']['medium'])} | {_pct(r['map']['hard'])} | "
                         + " | ".join(_pct(r["mp"]["medium"][str(k)]) for k in ks) + " |")
        lines += _per_query_md(retrieval)
    else:
        lines += ["| descriptor | re-ranking | dim | mAP | " + " | ".join(f"R@{k}" for k in ks)
                  + " |", "|---|---|---|---|" + "---|" * len(ks)]
        for r in retrieval["rows"]:
            lines.append(f"| {r['descriptor']} | {r['rerank']} | {r['dim']} | "
                         f"{_pct(r['map'])} | "
                         + " | ".join(_pct(r["recall"][str(k)]) for k in ks) + " |")
    if retrieval.get("examples"):
        e = retrieval["examples"]
        lines += ["", f"Example queries ranked by `{e['descriptor']}` (the best mAP): "
                  f"[{e['figure']}]({e['figure']})."]
    return lines + [""]


def _per_query_md(retrieval: dict) -> list[str]:
    """Medium / Hard AP of every query, one column per descriptor (not re-ranked)."""
    rows = [r for r in retrieval["rows"] if r["rerank"] == "none"] or retrieval["rows"][:1]
    lines = ["", "AP per query, Medium / Hard (— where the query has no right image under "
             "the protocol):", "",
             "| query | " + " | ".join(r["descriptor"] for r in rows) + " |",
             "|---|" + "---|" * len(rows)]
    for q, name in enumerate(retrieval["queries"]):
        lines.append(f"| {name} | " + " | ".join(
            f"{_pct(r['ap']['medium'][q])} / {_pct(r['ap']['hard'][q])}" for r in rows) + " |")
    return lines


def _diff(d: dict | None) -> str:
    if not d:
        return "—"
    lo, hi = d["ci95"]
    return f"{100 * d['mean']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def _ci(r: dict) -> str:
    lo, hi = r["ci95"]
    return f"{100 * r['mean']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _seeds_line(t: dict) -> list[str]:
    """With several seeds of part learning: that the part methods' figures are means."""
    seeds = t.get("part_seeds") or []
    if len(seeds) < 2:
        return []
    return [f"The methods that read part codes: each figure the mean over {len(seeds)} seeds "
            f"of part learning ({', '.join(map(str, seeds))}), per episode and per query.", ""]


def _transfer_md(t: dict) -> list[str]:
    if not t:
        return []
    ref = t["reference"]
    lines = [f"## Transfer: classes outside every method's training ({len(t['novel_classes'])} "
             f"novel classes, {t['n_novel_images']} images)", "", t["about"], "",
             f"Base classes ({len(t['base_classes'])}): {', '.join(t['base_classes'])}. "
             f"Novel classes: {', '.join(t['novel_classes'])}.", "",
             f"### Few-shot classification on the novel classes ({t['ways']}-way, "
             f"{t['queries']} queries per class, {t['episodes']} episodes, seed "
             f"({t['seed']}, K))", "", *_seeds_line(t),
             f"| method | classifier | K | accuracy % [95% CI] | vs {ref} (paired) | C (base) |",
             "|---|---|---|---|---|---|"]
    for r in sorted(t["few_shot"], key=lambda r: (r["classifier"], r["shots"])):
        lines.append(f"| {r['method']} | {r['classifier']} | {r['shots']} | {_ci(r)} | "
                     f"{_diff(r.get('vs_' + ref) if r['method'] != ref else None)} | "
                     f"{r.get('C', '—')} |")
    k = t["ks"][0]
    lines += ["", f"### Unseen-class retrieval (every novel image queries the others)", "",
              "| method | re-ranking | mAP | MAP@R | " + " | ".join(f"R@{k}" for k in t["ks"])
              + f" | R@{k} vs {ref} | MAP@R vs {ref} |", "|---|---|---|---|"
              + "---|" * len(t["ks"]) + "---|---|"]
    for r in t["retrieval"]:
        d = r.get("vs_" + ref) if r["method"] != ref else None
        lines.append(f"| {r['method']} | {r['rerank']} | {_pct(r['map'])} | "
                     f"{_pct(r['map@r'])} | "
                     + " | ".join(_pct(r["recall"][str(q)]) for q in t["ks"])
                     + f" | {_diff(d and d[f'r@{k}'])} | {_diff(d and d['map@r'])} |")
    return lines + [""]


def _hierarchy_md(hier: dict) -> list[str]:
    if not hier:
        return []
    lines = ["## Hierarchy of classes", "",
             "Groups: " + "; ".join(f"{g} ({', '.join(c)})" for g, c in hier["groups"].items())
             + ".", "",
             "Group top-1: the predicted class in the true class's group. Mistakes in "
             "the group: the share of the wrong predictions that keep the right group "
             "(chance: a wrong class drawn at random from the other classes).", "",
             "| method | class top-1 | group top-1 | mistakes | in the group | chance |",
             "|---|---|---|---|---|---|"]
    for name, v in hier["levels"].items():
        lines.append(f"| {name} | {_pct(v['class_top1'])} | {_pct(v['group_top1'])} | "
                     f"{v['errors']} | {_pct(v['errors_in_group'])} | "
                     f"{_pct(v['errors_in_group_chance'])} |")
    parts = hier.get("parts") or {}
    if parts:
        k = next(iter(parts.values()))["specificity"]["k"]
        lines += ["", f"Specificity over each part's {k} best test images (its best region "
                  "in each): the entropy of their classes (bits), and the share in the "
                  "part's own group and class. Containment: how often a class part's best "
                  "box lies inside one of its group parts' best boxes in the same image "
                  "(at least 80% of its area); control: the group parts' boxes of another "
                  "image of the group.", "",
                  "| set | parts | class entropy | own group | own class | contained | "
                  "control | group boxes covering the image |", "|---|---|---|---|---|---|---|---|"]
        for name, v in parts.items():
            sp, c = v["specificity"], v.get("containment") or {}
            lines.append(f"| {name} | {sp['n_parts']} | {sp['class_entropy_bits']:.2f} | "
                         f"{_pct(sp['own_group_share'])} | {_pct(sp.get('own_class_share'))} | "
                         f"{_pct(c.get('contained'))} | {_pct(c.get('control'))} | "
                         f"{_pct(c.get('whole_image_share'))} |")
    return lines + [""]


def _not_shown_md(evaluations: dict) -> list[str]:
    """The evaluations that were skipped or failed, with the reason."""
    notes = [(name, e) for name, e in evaluations.items() if e["status"] != "done"]
    if not notes:
        return []
    return ["## Not shown", ""] + [
        f"- {name}: " + (f"skipped, {e['reason']}" if e["status"] == "skipped"
                         else f"FAILED, {e['error']}")
        for name, e in notes] + [""]


def write_results(summary: dict, out: Path, memo: Path | None = None) -> None:
    """``results.md``, ``report.md`` and ``report.html`` into the run directory ``out``.
    ``memo``: a directory where the rendered plots are kept, keyed by what they show,
    so that a re-run with the same results does not draw them again."""
    text = results_markdown(summary)
    _files.write_text(Path(out) / "results.md", text)
    _files.write_text(Path(out) / "report.md", text)
    _files.write_text(Path(out) / "report.html", report_html(summary, out, memo))


# ------------------------------------------------------------------ external rows


def read_predictions(run: Path) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """A run's ``predictions.csv``: ``(paths, labels, {method: predicted labels})``."""
    file = Path(run) / "predictions.csv"
    try:
        with open(file, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise DataError(f"{file} is missing: is {run} a run directory of `partlearn run`?") \
            from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise DataError(f"{file} is not readable as CSV ({e}); re-run `partlearn run`") \
            from None
    if not rows or rows[0][:2] != ["path", "label"] or any(len(r) != len(rows[0])
                                                            for r in rows[1:]):
        raise DataError(f"{file} is damaged or cut short (expected a header path,label,... "
                        "and one full row per test image); re-run `partlearn run`")
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
    folded = {c.casefold(): k for k, c in enumerate(classes)}  # the name rule: case-insensitive
    by_path = {p: k for k, p in enumerate(paths)}
    names = [Path(p).name for p in paths]
    times = collections.Counter(names)  # not names.count per name: N x N
    by_name = {n: k for k, n in enumerate(names) if times[n] == 1}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise DataError(f"{Path(run) / 'predictions.csv'}: label {unknown[0]!r} is not a class "
                        f"of {Path(run) / 'results.json'}; the run directory is inconsistent")
    y = np.array([index[c] for c in labels])
    for name, file in externals.items():
        if name in summary["methods"]:
            raise DataError(f"--external {name}={file}: the report has a method {name!r} "
                            "already; give the external predictions another NAME")
        got, line_of = {}, {}
        try:
            with open(file, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                missing = {"image_id", "predicted_label"} - set(reader.fieldnames or [])
                if missing:
                    raise DataError(f"{file}, line 1: columns {sorted(missing)} are missing; "
                                    "expected image_id,predicted_label")
                for row in reader:
                    if None in row.values() or None in row:
                        raise DataError(f"{file}, line {reader.line_num}: expected "
                                        f"{len(reader.fieldnames)} fields "
                                        f"({','.join(reader.fieldnames)})")
                    key, label = row["image_id"].strip(), row["predicted_label"].strip()
                    k = by_path.get(key, by_name.get(key))
                    if k is None:
                        raise DataError(f"{file}, line {reader.line_num}: image_id {key!r} is "
                                        f"not a test image of {run}")
                    if k in got:
                        raise DataError(f"{file}, line {reader.line_num}: image_id {key!r} "
                                        f"is predicted already on line {line_of[k]}; one row "
                                        "per test image")
                    if label.casefold() not in folded:
                        raise DataError(f"{file}, line {reader.line_num}: predicted_label "
                                        f"{label!r} is not one of the {len(classes)} classes"
                                        f"{did_you_mean(label, classes)}")
                    got[k], line_of[k] = folded[label.casefold()], reader.line_num
        except FileNotFoundError:
            raise DataError(f"external results {file} do not exist") from None
        except IsADirectoryError:
            raise DataError(f"external results {file} is a folder; expected a CSV file") \
                from None
        except (csv.Error, UnicodeDecodeError) as e:
            raise DataError(f"{file} is not readable as UTF-8 CSV ({e})") from None
        if len(got) != len(paths):
            lost = [paths[k] for k in range(len(paths)) if k not in got]
            raise DataError(f"{file}: predictions for {len(got)} of the {len(paths)} test "
                            f"images; every test image needs one (missing: "
                            f"{', '.join(lost[:5])}{', ...' if len(lost) > 5 else ''})")
        pred = np.array([got[k] for k in range(len(paths))])
        summary["methods"][name] = metrics(y, pred, len(classes)) | {"external": str(file)}
        if "global" in preds:
            g = np.array([index[c] for c in preds["global"]])
            summary.setdefault("comparisons", []).append(
                {"a": name, "b": "global"} | paired_comparison(pred == y, g == y,
                                                               n_bootstrap, seed))


# ------------------------------------------------------------------ HTML


def _md_table_html(block: list[str]) -> str:
    rows = [[html.escape(c.strip().replace("`", "")) for c in line.strip().strip("|").split("|")]
            for line in block if not set(line.replace("|", "").strip()) <= set("-")]
    head, body = rows[0], rows[1:]
    return ("<table><thead><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr></thead>"
            "<tbody>" + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>"
                                for r in body) + "</tbody></table>")


def report_html(summary: dict, run: Path | None = None, memo: Path | None = None) -> str:
    """A self-contained HTML page: the Markdown report's tables and the plots (and the
    run directory's figure files listed in ``summary["figures"]``, embedded)."""
    drawn = _figures_memo(summary, run, memo)
    if run is not None:  # the plots as PNG files too (galleries and heatmaps already are)
        (Path(run) / "figures").mkdir(exist_ok=True)
        files = sum((Path(run) / n).is_file() for n in summary.get("figures") or [])
        for k, (title, uri) in enumerate(drawn[:len(drawn) - files]):
            (Path(run) / "figures" / f"plot_{k:02d}.png").write_bytes(
                base64.b64decode(uri.split(",", 1)[1]))
    return markdown_html(results_markdown(summary), drawn,
                         f"{summary.get('name', 'run')}: report")


def markdown_html(text: str, figures: list[tuple[str, str]], title: str) -> str:
    """A self-contained HTML page of a report's Markdown (headings, paragraphs, tables)
    with ``figures`` (``[(title, data URI)]``) under a "Plots" heading after the first
    heading."""
    parts, table = [], []
    for line in text.splitlines() + [""]:
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
    shown = "".join(f'<figure><img alt="{html.escape(t)}" src="{uri}">'
                    f"<figcaption>{html.escape(t)}</figcaption></figure>"
                    for t, uri in figures)
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}th{background:#f2f2f2}"
             "td:first-child,th:first-child{text-align:left}figure{display:inline-block;"
             "margin:1em}img{max-width:100%}")
    title = html.escape(title)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}'
            f"</title><style>{style}</style></head><body>{''.join(parts[:1])}"
            f"<h2>Plots</h2>{shown}{''.join(parts[1:])}</body></html>\n")


# ------------------------------------------------------------------ compare


def run_names(runs, names=None) -> list[str]:
    """The name of each run in a comparison: the one given (``names[i]``, None for none),
    else the shortest end of its path that no other run's path ends with (``a/run``,
    ``b/run``). Two runs with one name, or one folder given twice, is a ``DataError``."""
    runs = [Path(r) for r in runs]
    names = list(names or [None] * len(runs))
    where = [os.path.realpath(r) for r in runs]
    for i, w in enumerate(where):
        if w in where[:i]:
            raise DataError(f"run {runs[i]} is given twice (as {runs[where.index(w)]} too); "
                            "give each run once")
    out = list(names)
    for i, run in enumerate(runs):
        if out[i] is not None:
            continue
        parts = Path(os.path.abspath(run)).parts
        for n in range(1, len(parts) + 1):
            name = "/".join(parts[-n:])
            others = [Path(os.path.abspath(r)).parts for j, r in enumerate(runs) if j != i]
            if all("/".join(o[-n:]) != name for o in others):
                break
        out[i] = name
    seen: dict[str, int] = {}
    for i, name in enumerate(out):
        if name in seen:
            j = seen[name]
            raise DataError(f"runs {runs[j]} and {runs[i]} are both named {name!r} in the "
                            "comparison; give each its own NAME=RUN_DIR")
        seen[name] = i
    return out


def _results(run: Path) -> dict:
    """A run's ``results.json``; missing, damaged or not a summary: a ``DataError``."""
    file = Path(run) / "results.json"
    if Path(run).exists() and not Path(run).is_dir():
        raise DataError(f"{run} is a file; expected a run directory of `partlearn run`")
    try:
        summary = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{file} is missing: is {run} a run directory of "
                        "`partlearn run`?") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{file} does not parse ({e}); it is damaged or was cut short: "
                        "re-run `partlearn run` with the same --out") from None
    if not isinstance(summary, dict):
        raise DataError(f"{file} holds no run summary (a JSON object); re-run `partlearn run`")
    methods = summary.get("methods")
    if methods is not None and not isinstance(methods, dict):
        raise DataError(f"{file}: 'methods' is not a JSON object; re-run `partlearn run`")
    for name, m in (methods or {}).items():
        lacks = [k for k in _METHOD_KEYS if not isinstance(m, dict) or k not in m]
        if lacks:
            raise DataError(f"{file}: method {name!r} lacks {', '.join(lacks)}; the file was "
                            "changed or damaged: re-run `partlearn run`")
    if methods and not isinstance(summary.get("classes"), list):
        raise DataError(f"{file}: 'classes' is missing; re-run `partlearn run`")
    return summary


#: what every method of a results.json holds (``evaluation.metrics``), which the report reads
_METHOD_KEYS = ("top1", "mean_class_accuracy", "per_class_accuracy", "n_test")


def compare_runs(runs, externals: dict | None = None, out=None, names=None) -> dict:
    """Rebuild the report from finished run directories (their ``results.json``,
    ``predictions.csv`` and ``config.toml``; nothing is recomputed) into ``out``
    (default: the first run). Several runs must share the dataset and test split;
    their methods are then named ``<run>:<method>``, and the top-1 of ``parts``
    and ``dpnet`` against each run's parts per class becomes the
    accuracy-vs-parts plot. ``externals``: ``{name: csv}``, see ``external_rows``."""
    from ..config import load_config

    runs = [Path(r) for r in runs]
    labels = run_names(runs, names)
    summaries = []
    for run in runs:
        summaries.append(_results(run))
        if not summaries[-1].get("methods"):
            raise DataError(f"{run / 'results.json'} holds no methods: run the pipeline to "
                            "its end first")
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
        for label, s in zip(labels, summaries):
            summary["methods"].update({f"{label}:{m}": v for m, v in s["methods"].items()})
            summary["comparisons"] += [c | {"a": f"{label}:{c['a']}",
                                            "b": f"{label}:{c['b']}"}
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


# ------------------------------------------------------------------ headlines


def headline_markdown(runs, names=None, command: str | None = None) -> str:
    """Each finished run's headline figures in a few lines of Markdown, for a results page:
    every method's top-1 with its paired difference to ``global`` (95% interval, Holm p),
    DP-Net's best variant, retrieval mAP, and what the run cost cold. The runs may be on
    different datasets (one section each); nothing is recomputed. ``command``: the
    command line that made the page, said at its top."""
    runs = [Path(r) for r in runs]
    sections = []
    if command:
        sections.append(f"Made by `{command}` from the runs' `results.json`; the "
                        "measurements behind them are in BENCHMARKS.md.")
    for label, run in zip(run_names(runs, names), runs):
        sections.append("\n".join(_headline(label, _results(run))))
    return "\n\n".join(sections) + "\n"


def _headline(label: str, s: dict) -> list[str]:
    methods = s.get("methods") or {}
    n_test = next(iter(methods.values()))["n_test"] if methods else None
    seeds = max((len(m.get("seeds") or [0]) for m in methods.values()), default=1)
    about = [f"`{s.get('dataset')}`", f"backbone `{s.get('backbone')}`"]
    if n_test:
        about.append(f"{n_test} test images, {len(s.get('classes') or [])} classes")
    lines = [f"### {label}", "", ", ".join(about) + ".", ""]
    svm = {m: v for m, v in methods.items() if not m.startswith("dpnet")}
    dpnet = {m: v for m, v in methods.items() if m.startswith("dpnet")}
    if dpnet:  # DP-Net's best variant by its mean top-1 over seeds
        best = max(dpnet, key=lambda m: dpnet[m]["top1"])
        svm[best] = dpnet[best]
    if svm:
        against = {}
        for c in s.get("comparisons") or []:
            if c["b"] == "global":
                against[c["a"]] = c
        lines += ["| method | top-1 | − `global` [95% interval] | p (Holm) | seeds |",
                  "|---|---|---|---|---|"]
        for name, m in svm.items():
            c = against.get(name)
            diff = ("—" if c is None else f"{100 * c['diff']:+.1f} "
                    f"[{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}]")
            holm = "—" if c is None or c.get("p_holm") is None else f"{c['p_holm']:.2g}"
            best = " (DP-Net's best variant)" if name in dpnet else ""
            lines.append(f"| {name}{best} | {_pct(m['top1'], m.get('top1_std'))} | {diff} | "
                         f"{holm} | {len(m.get('seeds') or [0])} |")
        lines.append("")
    retrieval = s.get("retrieval") or {}
    if retrieval.get("rows"):
        instance = retrieval["protocol"] == "instance level"
        head = "mAP Medium / Hard" if instance else "mAP"
        lines += [f"Retrieval ({retrieval['protocol']}, {retrieval['n_queries']} queries):", "",
                  f"| descriptor | re-ranking | {head} |", "|---|---|---|"]
        for r in retrieval["rows"]:
            m = (f"{_pct(r['map']['medium'])} / {_pct(r['map']['hard'])}" if instance
                 else _pct(r["map"]))
            lines.append(f"| {r['descriptor']} | {r['rerank']} | {m} |")
        lines.append("")
    lines += _transfer_headline(s.get("transfer") or {})
    stages = s.get("stages") or {}
    recorded = [v["seconds"] for v in stages.values() if v.get("seconds") is not None]
    if stages and not recorded:
        lines.append(f"Cost cold: not recorded (the run predates it); peak memory "
                     f"{s.get('peak_memory_mb', 0):.0f} MB.")
    elif stages:
        cost = (f"{sum(recorded) / 60:.1f} min of stage computation (each cache entry's "
                f"recorded time, whichever run computed it"
                + (f"; {len(stages) - len(recorded)} of {len(stages)} stages unrecorded"
                   if len(recorded) < len(stages) else "") + ")")
        lines.append(f"Cost cold: {cost}; peak memory {s.get('peak_memory_mb', 0):.0f} MB.")
    machine = s.get("machine")
    if machine:
        lines.append(f"Machine: {machine['cpu']}, {machine['cores']} cores"
                     + (f", {machine['gpu']}" if machine.get("gpu") else ", no GPU") + ".")
    if seeds == 1 and svm:
        lines.append("One seed: a difference inside the spread between seeds or CPUs "
                     "(about a point on CUB c001–020) is no result.")
    return lines


def _transfer_headline(t: dict) -> list[str]:
    """Few-shot accuracy (logistic regression) per shot count and unseen-class R@1 /
    MAP@R per method, each with its paired difference to the reference (``global``)."""
    if not t.get("few_shot"):
        return []
    shots = t["shots"]
    acc = {(r["method"], r["shots"]): r for r in t["few_shot"] if r["classifier"] == "logreg"}
    ret = {r["method"]: r for r in t.get("retrieval") or [] if r["rerank"] == "none"}
    methods = list(dict.fromkeys(m for m, _ in acc))

    def diff(d) -> str:
        return f" ({100 * d['mean']:+.1f})" if d and d["mean"] else ""

    lines = [f"Transfer to {len(t['novel_classes'])} classes outside training "
             f"({t['n_novel_images']} images; {t['ways']}-way, {t['episodes']} episodes, "
             f"logistic regression; difference to `{t['reference']}` in brackets):", "",
             *_seeds_line(t),
             "| method | " + " | ".join(f"{k}-shot" for k in shots) + " | R@1 | MAP@R |",
             "|---|" + "---|" * (len(shots) + 2)]
    for m in methods:
        cells = [f"{100 * acc[m, k]['mean']:.1f}{diff(acc[m, k].get('vs_global'))}"
                 if (m, k) in acc else "—" for k in shots]
        r = ret.get(m)
        vs = (r or {}).get("vs_global") or {}
        cells += ["—", "—"] if r is None else [
            f"{100 * r['recall']['1']:.1f}{diff(vs.get('r@1'))}",
            f"{100 * r['map@r']:.1f}{diff(vs.get('map@r'))}"]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines + [""]
