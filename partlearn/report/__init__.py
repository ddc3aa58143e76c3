"""Readable reports of a run from its ``results.json``: Markdown, self-contained HTML with
its plots, and ``compare_runs`` over several finished runs."""

from ._report import (compare_runs, external_rows, report_html, results_markdown,
                      write_results)

__all__ = ["compare_runs", "external_rows", "report_html", "results_markdown", "write_results"]
