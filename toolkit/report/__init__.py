"""The parity report (`vpatch report`): one static HTML page and a Markdown summary from `vpatch ci`'s results.

`load` reads OUT/ci-summary.json and the conformance results it points to by their writers' schemas
(toolkit/records/) into the report's model (`model`), `evidence` reads the rebase evidence; `html` renders
the page (inline CSS and SVG, no script, nothing external; its parts in `html_markup`, `html_chart` and
`html_sections`), `markdown` the summary for a pull-request comment or a GitHub job summary. Everything
is read and rendered before anything is written, so bad input leaves the output directory as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toolkit.cache import atomic_write_text
from toolkit.options import find_root
from toolkit.report.html import render_html
from toolkit.report.load import SUMMARY_FILE, load_report
from toolkit.report.markdown import render_markdown
from toolkit.report.model import Report

HTML_FILE = "index.html"
MARKDOWN_FILE = "summary.md"

__all__ = ["HTML_FILE", "MARKDOWN_FILE", "SUMMARY_FILE", "Written", "build_report", "load_report", "write_report"]


@dataclass(frozen=True)
class Written:
    report: Report
    html: Path
    markdown: Path


def build_report(input_dir: Path, output_dir: Path, *, root: Path | None = None) -> Written:
    """Read INPUT (evidence paths relative to `root`, by default the project around the working directory),
    render both documents, then write them atomically into OUTPUT."""
    root = root if root is not None else find_root(Path.cwd().resolve())
    report = load_report(input_dir, root)
    page = render_html(report)
    summary = render_markdown(report, HTML_FILE)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / HTML_FILE, page)
    atomic_write_text(output_dir / MARKDOWN_FILE, summary)
    return Written(report, output_dir / HTML_FILE, output_dir / MARKDOWN_FILE)


def write_report(input_dir: Path, output_dir: Path, *, root: Path | None = None) -> list[Path]:
    """The files written (index.html, summary.md); what `vpatch ci` calls after its summary is written."""
    written = build_report(input_dir, output_dir, root=root)
    return [written.html, written.markdown]
