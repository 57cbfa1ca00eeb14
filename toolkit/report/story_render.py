"""The report's "Capabilities per release" section, in HTML and Markdown, from the story record
(toolkit/records/story.py): one row per capability (sub-features under their feature) with its upstream
PRs, one column per pinned release (carried / plugin / retired / n/a), the evidence each retirement rests
on (once, at the release it first shows), and the sentence that says from which release stock vLLM is the
recommended default, and why."""

from __future__ import annotations

from collections.abc import Callable

from toolkit.records.story import Capability, Cell, Story
from toolkit.records.verdict import engine_label
from toolkit.report.html_markup import e
from toolkit.report.story_text import detail, short

TONE = {"carried": "s-warn", "plugin": "s-pass", "retired": "s-pass", "not-applicable": "s-na"}


def _upstream(cap: Capability) -> str:
    text = cap.upstream or ""
    extra = [p for p in cap.prs if p not in text]
    words = "; ".join(x for x in (text, ", ".join(extra)) if x)
    return words or "—"


def _firsts(story: Story) -> list[tuple[str, Cell]]:
    """(release, cell) for each capability's first plugin or retired cell, and when its status changes later."""
    seen: dict[str, tuple[str, str | None]] = {}
    found = []
    for release in story.releases:
        for cell in release.cells:
            key = (cell.status, cell.since)
            if cell.status in ("plugin", "retired") and seen.get(cell.capability) != key:
                found.append((release.version, cell))
            seen[cell.capability] = key
    return found


def switch_line(story: Story | None) -> str:
    return story.switch.sentence if story else ""


def story_markdown(story: Story | None, error: str | None, md: Callable[[object], str]) -> list[str]:
    if story is None:
        return ["### Capabilities per release", "", f"Not computed: {md(error)}", ""] if error else []
    versions = [r.version for r in story.releases]
    lines = [
        "### Capabilities per release",
        "",
        f"**Default:** {md(story.switch.sentence)}",
        "",
        "| capability | upstream | " + " | ".join(md(v) for v in versions) + " |",
        "|---|---|" + "---|" * len(versions),
    ]
    lines.append("| **default** | | " + " | ".join(md(_default(story, v)) for v in versions) + " |")
    for cap in story.capabilities:
        name = f"↳ {md(cap.name)}" if cap.parent else f"**{md(cap.name)}**"
        cells = []
        for release in story.releases:
            cell = release.cell(cap.name)
            cells.append(md(short(cell)) if cell else "—")
        lines.append(f"| {name} | {md(_upstream(cap))} | " + " | ".join(cells) + " |")
    lines.append("")
    for version, cell in _firsts(story):
        lines.append(f"- {md(cell.capability)}: {md(short(cell))} (at {md(version)}); {md(detail(cell))}")
        if cell.note:
            lines.append(f"  - {md(cell.note)}")
    lines.append("")
    return lines


def _default(story: Story, version: str) -> str:
    release = story.release(version)
    return engine_label(release.engine if release else None)


def story_html(story: Story | None, error: str | None) -> str:
    head = '<section id="story">\n<h2>Capabilities per release</h2>\n'
    if story is None:
        why = e(error) if error else "no pins.toml at the project root"
        return f'{head}<p class="muted">Not computed: {why}</p>\n</section>'
    tone = "s-pass" if story.switch.release else "s-fail"
    versions = "".join(f"<th>{e(r.version)}</th>" for r in story.releases)
    defaults = "".join(f"<td><strong>{e(_default(story, r.version))}</strong></td>" for r in story.releases)
    rows = [f"<tr><th>default</th><td></td>{defaults}</tr>"]
    for cap in story.capabilities:
        label = f"&#8627; {e(cap.name)}" if cap.parent else e(cap.name)
        cells = "".join(_cell_html(release.cell(cap.name)) for release in story.releases)
        rows.append(f"<tr><th>{label}</th><td>{e(_upstream(cap))}</td>{cells}</tr>")
    items = "".join(
        f"<li><strong>{e(cell.capability)}</strong>: {e(short(cell))} (at {e(version)}); {e(detail(cell))}"
        + (f'<br><span class="muted">{e(cell.note)}</span>' if cell.note else "")
        + "</li>"
        for version, cell in _firsts(story)
    )
    evidence = f"<h3>What each retirement rests on</h3>\n<ul>{items}</ul>\n" if items else ""
    return (
        f'{head}<p class="banner {tone}">{e(story.switch.sentence)}</p>\n'
        "<p>Per pinned release: <em>carried</em> by which patches, delivered by the <em>plugin</em> beside stock "
        "vLLM, <em>retired</em> (stock vLLM does it) since which release, or n/a.</p>\n"
        '<table class="wide">\n<thead><tr><th>capability</th><th>upstream</th>'
        f"{versions}</tr></thead>\n<tbody>\n" + "\n".join(rows) + f"\n</tbody>\n</table>\n{evidence}</section>"
    )


def _cell_html(cell: Cell | None) -> str:
    if cell is None:
        return '<td class="absent">—</td>'
    title = detail(cell) or cell.note
    attr = f' title="{e(title)}"' if title else ""
    return f'<td{attr}><span class="{TONE[cell.status]}">{e(short(cell))}</span></td>'
