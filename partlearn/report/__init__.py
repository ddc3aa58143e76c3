"""Readable reports of a run from its ``results.json``: Markdown, self-contained HTML with
its plots, ``compare_runs`` over several finished runs, ``headline_markdown``: each
run's headline figures for a results page, and ``write_tune_report``: the report of
``partlearn tune`` (CV accuracy per trial)."""

from ._report import (compare_runs, external_rows, headline_markdown, report_html,
                      results_markdown, write_results)
from ._tune import run_arguments, write_tune_report

__all__ = ["compare_runs", "external_rows", "headline_markdown", "report_html",
           "results_markdown", "run_arguments", "write_results", "write_tune_report"]
