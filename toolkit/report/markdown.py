"""The parity report as GitHub-flavoured Markdown: short enough for a pull-request comment or a job summary.

The summary says what a reviewer needs at a glance (verdict per version, patch load, failures with their
diffs folded away) and points to index.html for the rest. Text from the inputs is HTML-escaped (GitHub
renders inline HTML) and its Markdown punctuation backslash-escaped; diffs go in fenced blocks longer than
any backtick run they contain, cut at DIFF_LINES lines.
"""

from __future__ import annotations

import html
import re

from toolkit.records.status import CHECK_STATUSES, LABELS, STEP_STATUSES
from toolkit.report import fmt
from toolkit.report.model import Patch, Report, Version, grouped_features
from toolkit.report.story_render import story_markdown
from toolkit.report.verdicts import verdicts_markdown

DIFF_LINES = 40
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def md(value: object) -> str:
    """Inline text: escaped for HTML and Markdown, on one line (safe in table cells)."""
    text = " ".join(str(value).split())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def md_url(url: str) -> str:
    """A URL for `[text](url)`: characters that would end the link or the table cell percent-encoded."""
    return "".join({"(": "%28", ")": "%29", "|": "%7C", " ": "%20", "<": "%3C", ">": "%3E"}.get(c, c) for c in url)


def fence(text: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def status_word(status: str | None) -> str:
    return "not recorded" if status is None else LABELS.get(status, status)


def upstream(patch: Patch) -> str:
    url = patch.upstream_url
    if url is None:
        return md(patch.upstream_status or "not recorded")
    return f"{md(patch.upstream_kind)} [{md(fmt.link_text(url))}]({md_url(url)})"


def render_markdown(report: Report, html_name: str = "index.html") -> str:
    failed_steps = [(v, s) for v in report.versions for s in v.failed_steps]
    state = "passed" if report.ok and not failed_steps else f"failed ({fmt.plural(len(failed_steps), 'failed step')})"
    icon = "✅" if state == "passed" else "❌"
    lines = [
        f"## {icon} {md(report.project_name)} parity report: dynamo-base vs stock",
        "",
        f"Job {md(state)}: started {md(report.started)}, took {md(fmt.seconds(report.seconds))} "
        f"(vpatch {md(report.toolkit or 'unknown')}). Full report: `{html_name}`.",
        "",
    ]
    for problem in report.problems:
        lines.append(f"> **Unreadable input:** {md(problem)}")
    if report.problems:
        lines.append("")
    lines += [
        "| version | default engine | active patches | changed lines | job steps | conformance | wheel |",
        "|---|---|--:|--:|---|---|---|",
    ]
    lines += [_version_row(v) for v in report.versions]
    lines.append("")
    lines += story_markdown(report.story, report.story_error, md)
    lines += verdicts_markdown(report, md)
    lines += _patch_table(report)
    lines += _sub_features(report)
    lines += _failures(report)
    lines += _evidence(report)
    return "\n".join(lines).rstrip("\n") + "\n"


def _version_row(v: Version) -> str:
    active = str(len(v.series.active)) if v.series else "—"
    changed = str(v.series.changed_lines) if v.series else "—"
    counts = {s: sum(1 for step in v.steps if step.status == s) for s in STEP_STATUSES}
    steps = ", ".join(f"{n} {'**fail**' if s == 'fail' else s}" for s, n in counts.items() if n) or "none"
    if reused := sum(1 for step in v.steps if step.reused):
        steps += f" ({reused} reused)"
    tiers = []
    for run in v.conformance:
        if run.error:
            tiers.append(f"{md(run.tier)}: **unreadable**")
            continue
        parts = [f"{run.count(s)} {'**fail**' if s == 'fail' else status_word(s)}" for s in CHECK_STATUSES]
        tiers.append(f"{md(run.tier)}: " + ", ".join(p for p in parts if not p.startswith("0 ")))
    if not tiers and v.contract_files:
        tiers.append(f"contract evidence (committed): {md(', '.join(v.contract_files))}")
    conformance = "<br>".join(tiers) or "not run"
    wheel = f"{md(v.wheel.file)} ({md(fmt.size(v.wheel.size))})" if v.wheel else "—"
    return f"| {md(v.version)} | {md(v.verdict)} | {active} | {changed} | {steps} | {conformance} | {wheel} |"


def _patch_table(report: Report) -> list[str]:
    with_series = [(v, v.series) for v in report.versions if v.series]
    if not with_series:
        return []
    names: dict[str, Patch] = {}
    for _, series in with_series:
        for entry in series.patches:
            names.setdefault(entry.name, entry)
    lines = [
        "### Patches",
        "",
        "| patch | feature | " + " | ".join(md(v.version) for v, _ in with_series) + " |",
        "|---|---|" + "---|" * len(with_series),
    ]
    for name, first in names.items():
        cells = []
        for _, series in with_series:
            patch = next((p for p in series.patches if p.name == name), None)
            if patch is None:
                cells.append("—")
                continue
            words = [f"apply {status_word(patch.apply)}"]
            if patch.rebase:
                words.append(f"rebase {md(patch.rebase)}")
            words.append(upstream(patch))
            if patch.retired_since:
                words.append(f"**retired since {md(patch.retired_since)}**")
            cells.append(md_join(words))
        lines.append(f"| {md(name)} | {md(first.feature or '(no feature)')} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _sub_features(report: Report) -> list[str]:
    """The parts of each feature that retire on their own (sub-features), under their parent."""
    subs = [f for f in grouped_features(report.features) if f.parent]
    if not subs:
        return []
    lines = ["### Sub-features", "", "| feature | part | native in stock since | upstream |", "|---|---|---|---|"]
    for f in subs:
        part = f.name.split("/", 1)[1]
        since = md(f.native_since) if f.native_since else "not yet"
        lines.append(f"| {md(f.parent)} | {md(part)}: {md(f.description)} | {since} | {md(f.upstream or '—')} |")
    lines.append("")
    return lines


def md_join(words: list[str]) -> str:
    return " · ".join(words)


def _failures(report: Report) -> list[str]:
    lines: list[str] = []
    for v in report.versions:
        for step in v.failed_steps:
            lines.append(f"- **{md(v.version)} {md(step.name)}** failed: {md(step.detail)}")
    details: list[str] = []
    for v in report.versions:
        for run in v.conformance:
            for check in run.failed:
                if not check.diff:
                    lines.append(f"- {md(v.version)} {md(run.tier)} **{md(check.name)}**: {md(check.detail)}")
                    continue
                diff_lines = check.diff.splitlines()
                shown = "\n".join(diff_lines[:DIFF_LINES])
                cut = len(diff_lines) - DIFF_LINES
                marker = fence(shown)
                details += [
                    "<details>",
                    f"<summary>{html.escape(v.version)} {html.escape(run.tier)} <b>{html.escape(check.name)}</b>: "
                    f"{html.escape(check.detail)}</summary>",
                    "",
                    f"{marker}diff",
                    shown,
                    marker,
                    "",
                ]
                if cut > 0:
                    details += [f"… {fmt.plural(cut, 'more line')} in the HTML report.", ""]
                details.append("</details>")
                details.append("")
    if not lines and not details:
        return []
    return ["### Failures", "", *lines, *([""] if lines else []), *details]


def _evidence(report: Report) -> list[str]:
    lines = []
    for v in report.versions:
        ev = v.evidence
        if ev is None:
            continue
        if ev.error:
            lines.append(f"- {md(v.version)}: evidence unreadable: {md(ev.error)}")
            continue
        dropped = [*((d, ev.new_version) for d in ev.dropped), *((d, d.dropped_in) for d in ev.earlier)]
        what = "; ".join(
            f"{md(d.name)} ({md(d.reason or 'dropped')} in {md(where or '?')}"
            + (f": {md(d.skip_reason)})" if d.skip_reason else ")")
            for d, where in dropped
        )
        lines.append(
            f"- {md(v.version)}: rebased from {md(ev.old_version or '?')}; "
            + (f"retired: {what}" if what else "no patch dropped")
        )
        lines += [f"  - warning: {md(w)}" for w in ev.warnings]
    return ["### Retirement evidence", "", *lines, ""] if lines else []
