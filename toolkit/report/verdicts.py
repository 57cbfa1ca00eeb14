"""The report's "Verdict per feature" section, in Markdown and HTML: for every version and feature, which
build meets the feature's contract (dynamo-base needed / stock + plugin / stock), the patches or the plugin
(name, version, wheel sha256) it takes, the conditions, and the contract files it rests on. Input: the
typed verdict each version carries in ci-summary.json (toolkit/records/verdict.py)."""

from __future__ import annotations

from collections.abc import Callable

from toolkit.records.verdict import FeatureVerdict
from toolkit.report.html_markup import e
from toolkit.report.model import Report


def _rows(report: Report) -> list[tuple[str, FeatureVerdict]]:
    return [(v.version, f) for v in report.versions if v.decision for f in v.decision.feature_verdicts]


def _plugin(feature: FeatureVerdict) -> str:
    plugin = feature.plugin
    return f"{plugin.name} {plugin.version} (sha256 {plugin.sha256[:16]})" if plugin else ""


def _what(feature: FeatureVerdict) -> str:
    return feature.summary  # the conditions (`unmet`) are in it already


def verdicts_markdown(report: Report, md: Callable[[object], str]) -> list[str]:
    rows = _rows(report)
    if not rows:
        return []
    lines = [
        "### Verdict per feature",
        "",
        "| version | feature | verdict | what | plugin | contract evidence |",
        "|---|---|---|---|---|---|",
    ]
    for version, f in rows:
        evidence = ", ".join(md(x) for x in f.evidence) or "—"
        lines.append(
            f"| {md(version)} | {md(f.feature)} | **{md(f.label)}** | {md(_what(f))} | {md(_plugin(f)) or '—'} "
            f"| {evidence} |"
        )
    lines.append("")
    return lines


def verdicts_html(report: Report) -> str:
    rows = _rows(report)
    if not rows:
        body = '<tr><td colspan="6" class="muted">no per-feature verdicts in the summary</td></tr>'
    else:
        body = "\n".join(
            f"<tr><th>{e(version)}</th><td>{e(f.feature)}</td><td><strong>{e(f.label)}</strong></td>"
            f"<td>{e(_what(f))}</td><td>{e(_plugin(f)) or '—'}</td><td>{e(', '.join(f.evidence)) or '—'}</td></tr>"
            for version, f in rows
        )
    return (
        '<section id="verdicts">\n<h2>Verdict per feature</h2>\n'
        '<table class="wide">\n<thead><tr><th>version</th><th>feature</th><th>verdict</th><th>what</th>'
        f"<th>plugin</th><th>contract evidence</th></tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>\n</section>"
    )
