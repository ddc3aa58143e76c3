"""Readable reports of a run: ``results.md`` from the ``results.json`` summary."""

from __future__ import annotations

from pathlib import Path


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def results_markdown(summary: dict) -> str:
    """The run's methods, their paired differences and its stages, as Markdown."""
    lines = [f"# {summary.get('name', 'run')}: results", "",
             f"Dataset `{summary.get('dataset')}`, backbone `{summary.get('backbone')}`.", ""]
    methods = summary.get("methods") or {}
    if methods:
        n_test = next(iter(methods.values()))["n_test"]
        lines += [f"## Methods ({n_test} test images)", "",
                  "| method | top-1 | mean class accuracy | C (CV) | CV accuracy | dim | "
                  "train s |", "|---|---|---|---|---|---|---|"]
        for name, m in methods.items():
            edge = " ⚠ at the grid's edge" if m.get("C_at_edge") else ""
            lines.append(f"| {name} | {_pct(m['top1'])} | {_pct(m['mean_class_accuracy'])} | "
                         f"{m['C']:g}{edge} | {_pct(m['cv_accuracy'])} | {m['dim']} | "
                         f"{m['train_seconds']:.1f} |")
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
    lines += ["## Stages", "", "| stage | key | cached | seconds |", "|---|---|---|---|"]
    for stage, info in summary.get("stages", {}).items():
        lines.append(f"| {stage} | `{info['key']}` | {'yes' if info['cached'] else 'no'} | "
                     f"{summary['timings'].get(stage, 0):.2f} |")
    lines += ["", f"Peak memory: {summary.get('peak_memory_mb', 0):.0f} MB.", ""]
    return "\n".join(lines)


def write_results(summary: dict, out: Path) -> None:
    (Path(out) / "results.md").write_text(results_markdown(summary))
