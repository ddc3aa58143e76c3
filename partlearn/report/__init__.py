"""Readable reports of a run from its ``results.json``: Markdown, self-contained HTML with
its plots, ``compare_runs`` over several finished runs, and ``headline_markdown``: each
run's headline figures for a results page."""

from ._report import (compare_runs, external_rows, headline_markdown, report_html,
                      results_markdown, write_results)

__all__ = ["compare_runs", "external_rows", "headline_markdown", "report_html",
           "results_markdown", "write_results"]
