"""The parity report (`vpatch report`): one static HTML page and a Markdown summary from `vpatch ci`'s results.

`load` reads OUT/ci-summary.json and the conformance results it points to by their writers' schemas
(toolkit/records/) into the report's model (`model`), `evidence` reads the rebase evidence; `html` renders
the page (inline CSS and SVG, no script, nothing external; its parts in `html_markup`, `html_chart` and
`html_sections`), `markdown` the summary for a pull-request comment or a GitHub job summary. Everything
is read and rendered before anything is written, so bad input leaves the output directory as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from toolkit.cache import atomic_write_text
from toolkit.errors import VpatchError
from toolkit.options import find_root, load_options
from toolkit.records.story import STORY_FILE, Story, encode_story
from toolkit.report.html import render_html
from toolkit.report.load import SUMMARY_FILE, load_report
from toolkit.report.markdown import render_markdown
from toolkit.report.model import Report

HTML_FILE = "index.html"
MARKDOWN_FILE = "summary.md"

__all__ = [
    "HTML_FILE",
    "MARKDOWN_FILE",
    "STORY_FILE",
    "SUMMARY_FILE",
    "Written",
    "build_report",
    "load_report",
    "load_story",
    "write_report",
]


@dataclass(frozen=True)
class Written:
    report: Report
    html: Path
    markdown: Path
    story: Path | None = None


def build_report(input_dir: Path, output_dir: Path, *, root: Path | None = None) -> Written:
    """Read INPUT (evidence paths relative to `root`, by default the project around the working directory),
    render both documents, then write them atomically into OUTPUT."""
    root = root if root is not None else find_root(Path.cwd().resolve())
    report = load_report(input_dir, root)
    story, error = load_story(root)
    report = replace(report, story=story, story_error=error)
    page = render_html(report)
    summary = render_markdown(report, HTML_FILE)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / HTML_FILE, page)
    atomic_write_text(output_dir / MARKDOWN_FILE, summary)
    if story is not None:
        atomic_write_text(output_dir / STORY_FILE, encode_story(story))
    return Written(
        report, output_dir / HTML_FILE, output_dir / MARKDOWN_FILE, output_dir / STORY_FILE if story else None
    )


def load_story(root: Path) -> tuple[Story | None, str | None]:
    """The story of the project at `root` (toolkit/report/story.py), or why there is none: no pins there (None,
    None), or pins that do not load (None, the one-line error, shown in the report, not fatal)."""
    from toolkit.project import Project
    from toolkit.report.story import compute_story

    try:
        options = load_options({"root": str(root)})
        if not options.pins_file.is_file():
            return None, None
        return compute_story(Project.load(options)), None
    except VpatchError as error:
        return None, f"story: {error.render()}"


def write_report(input_dir: Path, output_dir: Path, *, root: Path | None = None) -> list[Path]:
    """The files written (index.html, summary.md); what `vpatch ci` calls after its summary is written."""
    written = build_report(input_dir, output_dir, root=root)
    return [written.html, written.markdown, *([written.story] if written.story else [])]
