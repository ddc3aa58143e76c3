"""``partlearn tune``'s report, from its ``tune.json``: ``report.md`` (what was searched,
the choice, a table of every trial and of every round) and ``report.html`` (the same
with the plot of CV accuracy per trial; the plot also as ``figures/cv_per_trial.png``)."""

from __future__ import annotations

import base64
import shlex
from pathlib import Path

from .. import _files
from ._plots import tune_plot
from ._report import markdown_html


def _cv(x: float) -> str:
    return f"{100 * x:.2f}%"


def run_arguments(result: dict) -> str:
    """``CONFIG --set ...``: the arguments of ``partlearn run`` that give the chosen config
    (the config file, the overrides of every trial, the chosen ones), quoted for a shell."""
    return " ".join([shlex.quote(str(result["config"]))]
                    + [f"--set {shlex.quote(s)}" for s in list(result["sets"])
                       + list(result["chosen"])])


def tune_markdown(result: dict) -> str:
    """The tune report as Markdown."""
    method, trials = result["method"], result["trials"]
    by_number = {t["number"]: t for t in trials}
    chosen = by_number.get(result["chosen_trial"])
    sets = "".join(f" `--set {s}`" for s in result["sets"])
    folds = (f"{result['cv_folds']} stratified folds of the {result['n_train']} training "
             "images" + (", each fold held out of part learning too (classifier.cv_parts)"
                         if result["cv_parts"] else ""))
    lines = [f"# {result.get('name') or 'tune'}: settings chosen by the training-split CV", "",
             f"Config `{result['config']}`{sets}; method `{method}`; its CV accuracy over "
             f"{folds}. No test image or label entered the choice: each trial ran up to the "
             "classifier stage, and only its CV figures were read.", ""]
    if result["search"]:
        keys = ", ".join(f"`{k}` in {{{', '.join(v)}}}" for k, v in result["search"])
        ran = len(result["rounds"])
        state = ("converged: the last round changed nothing" if result["converged"] else
                 f"stopped after {ran} round(s) (--rounds {result['max_rounds']}), not converged")
        lines += [f"Coordinate ascent over {keys}: each key in turn set to its value of best "
                  "CV with the others at their best so far; ties keep the current value, "
                  f"then the earlier one. {ran} round(s), {state}.", ""]
    lines += ["## Chosen", ""]
    if chosen is not None:
        lines += [f"Trial {chosen['number']}: "
                  + (", ".join(f"`{c}`" for c in chosen["changes"]) or "the config as given")
                  + f", CV {_cv(chosen['cv_accuracy'])} (C = {chosen['C']:g}).", "",
                  "`chosen.toml` is the complete config with these settings: "
                  "`partlearn run chosen.toml`, the same as "
                  f"`partlearn run {run_arguments(result)}`.", ""]
    lines += ["## Trials", "",
              "| trial | round | change from the config | CV accuracy | C | computed | seconds |",
              "|---:|---:|---|---:|---:|---|---:|"]
    for t in trials:
        mark = "**" if chosen is not None and t["number"] == chosen["number"] else ""
        lines.append(f"| {t['number']} | {t['round'] or '—'} | "
                     f"{', '.join(f'`{c}`' for c in t['changes']) or 'none'} | "
                     f"{mark}{_cv(t['cv_accuracy'])}{mark} | {t['C']:g} | "
                     f"{', '.join(t['computed']) or 'cached'} | {t['seconds']:.1f} |")
    others = [m for m in (trials[0]["cv_by_method"] if trials else {}) if m != method]
    if others:
        lines += ["", "The other methods' CV accuracy in the same trials (not used to choose):",
                  "", "| trial | " + " | ".join(f"`{m}`" for m in others) + " |",
                  "|---:|" + "---:|" * len(others)]
        lines += [f"| {t['number']} | "
                  + " | ".join(_cv(t["cv_by_method"][m]) if m in t["cv_by_method"] else "—"
                               for m in others) + " |" for t in trials]
    if result["rounds"]:
        lines += ["", "## Rounds", "", "| round | point | CV accuracy | changed a key |",
                  "|---:|---|---:|---|"]
        for r in result["rounds"]:
            lines.append(f"| {r['round']} | {'; '.join(f'`{o}`' for o in r['overrides'])} | "
                         f"{_cv(r['cv_accuracy'])} | {'yes' if r['changed'] else 'no'} |")
    return "\n".join(lines) + "\n"


def write_tune_report(result: dict, out) -> None:
    """``report.md``, ``report.html`` and ``figures/cv_per_trial.png`` into ``out``."""
    out = Path(out)
    text = tune_markdown(result)
    figures = tune_plot(result)
    if figures:
        (out / "figures").mkdir(exist_ok=True)
        _files.write_bytes(out / "figures" / "cv_per_trial.png",
                           base64.b64decode(figures[0][1].split(",", 1)[1]))
    _files.write_text(out / "report.md", text)
    _files.write_text(out / "report.html", markdown_html(
        text, figures, f"{result.get('name') or 'tune'}: settings chosen by CV"))
