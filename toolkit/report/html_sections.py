"""The page's detail sections: patches across versions, conformance checks, wheels, retirement evidence."""

from __future__ import annotations

from toolkit.report import fmt
from toolkit.report.html_markup import NO_REBASE, NONE, ROW_FAIL, badge, diff_html, e
from toolkit.report.model import Check, Conformance, Evidence, EvidencePatch, Patch, Report


def _patch_names(report: Report) -> list[tuple[str, Patch]]:
    """Every patch name of every version in first-seen order, with its first occurrence."""
    seen: dict[str, Patch] = {}
    for v in report.versions:
        for patch in v.series.patches if v.series else ():
            seen.setdefault(patch.name, patch)
    return list(seen.items())


def upstream_html(patch: Patch) -> str:
    url = patch.upstream_url
    if url is None:
        return e(patch.upstream_status or "not recorded")
    return f'{e(patch.upstream_kind)} <a href="{e(url)}" title="{e(patch.upstream_status)}">{e(fmt.link_text(url))}</a>'


def _patch_cell(patch: Patch | None) -> str:
    if patch is None:
        return '<td class="absent">—</td>'
    lines = [
        f'<span class="cell-line">apply {badge(patch.apply)}</span>',
        f'<span class="cell-line">rebase {badge(patch.rebase) if patch.rebase else NO_REBASE}</span>',
        f'<span class="cell-line">upstream: {upstream_html(patch)}</span>',
    ]
    if patch.retired_since:
        lines.append(f'<span class="cell-line"><strong>retired since {e(patch.retired_since)}</strong></span>')
    lines.append(
        f'<span class="cell-line muted">+{patch.added_lines} −{patch.removed_lines} in '
        f"{e(fmt.plural(len(patch.files), 'file'))}</span>"
    )
    return f"<td>{''.join(lines)}</td>"


def patches_section(report: Report) -> str:
    names = _patch_names(report)
    heads = []
    for v in report.versions:
        sub = f"fingerprint <code>{e(v.series.fingerprint)}</code>" if v.series else "no series"
        heads.append(f'<th>{e(v.version)}<br><span class="muted">{sub}</span></th>')
    rows = []
    for name, first in names:
        feature = e(first.feature or "(no feature)")
        cells = []
        for v in report.versions:
            found = next((p for p in v.series.patches if p.name == name), None) if v.series else None
            cells.append(_patch_cell(found))
        rows.append(
            f'<tr><th><code>{e(name)}</code><br><span class="muted">{e(first.subject)}</span></th>'
            f"<td>{feature}</td>{''.join(cells)}</tr>"
        )
    if not rows:
        return '<section id="patches">\n<h2>Patches</h2>\n<p class="muted">No version has a series.</p>\n</section>'
    return (
        '<section id="patches">\n<h2>Patches per version</h2>\n'
        "<p>Each cell: whether the patch applies to that version's base (clean, offset, fuzz, failed), how the "
        "rebase that produced the series carried it, its upstream status and the release it was retired in.</p>\n"
        f'<table class="wide">\n<thead><tr><th>patch</th><th>feature</th>{"".join(heads)}</tr></thead>\n'
        f"<tbody>\n{chr(10).join(rows)}\n</tbody>\n</table>\n</section>"
    )


def _failure_details(version: str, run: Conformance, check: Check) -> str:
    diff = (
        diff_html(check.diff)
        if check.diff
        else '<p class="muted">The check recorded no diff; its detail line is above.</p>'
    )
    count = len(check.diff.splitlines())
    return (
        f'<details class="failure" id="fail-{e(version)}-{e(run.tier)}-{e(check.name)}">'
        f"<summary>{badge('fail')} {e(version)} {e(run.tier)} <strong>{e(check.name)}</strong>: {e(check.detail)} "
        f'<span class="muted">({e(fmt.plural(count, "diff line"))})</span></summary>\n{diff}\n</details>'
    )


def conformance_section(report: Report) -> str:
    runs = [(v, run) for v in report.versions for run in v.conformance]
    if not runs:
        return (
            '<section id="conformance">\n<h2>Conformance</h2>\n'
            '<p class="muted">No conformance results in the summary.</p>\n</section>'
        )
    names: list[str] = []
    for _, run in runs:
        names.extend(c.name for c in run.checks if c.name not in names)
    heads = "".join(f"<th>{e(v.version)}<br>{e(run.tier)}</th>" for v, run in runs)
    rows = []
    for name in names:
        cells = []
        for _, run in runs:
            check = next((c for c in run.checks if c.name == name), None)
            if run.error:
                cells.append('<td class="absent error">unreadable</td>')
            elif check is None:
                cells.append('<td class="absent">—</td>')
            else:
                cells.append(f'<td title="{e(check.detail)}">{badge(check.status)}</td>')
        rows.append(f"<tr><th>{e(name)}</th>{''.join(cells)}</tr>")
    parts = [
        '<section id="conformance">\n<h2>Conformance: dynamo-base vs stock</h2>',
        "<p>pass / fail / n/a (not applicable) per version, tier and check; — where a tier does not run the check.</p>",
        f"<table>\n<thead><tr><th>check</th>{heads}</tr></thead>\n<tbody>\n{chr(10).join(rows)}\n</tbody>\n</table>",
    ]
    for v, run in runs:
        parts.append(f"<h3>{e(v.version)}: {e(run.tier)} tier</h3>")
        if run.error:
            parts.append(f'<p class="error">Could not read the results: {e(run.error)}</p>')
            continue
        parts.append(
            f'<p class="muted"><code>{e(run.path)}</code>: started {e(run.started)}, took '
            f"{e(fmt.seconds(run.seconds))}, Python {e(run.python or '?')}; stock "
            f"<code>{e(run.stock_wheel or '?')}</code>, dynamo-base <code>{e(run.patched_wheel or '?')}</code></p>"
        )
        rows = [
            f"<tr{ROW_FAIL if c.status == 'fail' else ''}><th>{e(c.name)}</th><td>{badge(c.status)}</td>"
            f'<td class="num">{e(fmt.seconds(c.seconds))}</td><td>{e(c.detail)}</td></tr>'
            for c in run.checks
        ]
        parts.append(
            '<table class="wide checks">\n<thead><tr><th>check</th><th>result</th><th class="num">time</th>'
            f"<th>detail</th></tr></thead>\n<tbody>\n{chr(10).join(rows)}\n</tbody>\n</table>"
        )
        parts.extend(_failure_details(v.version, run, c) for c in run.failed)
    parts.append("</section>")
    return "\n".join(parts)


def wheels_section(report: Report) -> str:
    rows = []
    for v in report.versions:
        w = v.wheel
        if w is None:
            build = next((s for s in v.steps if s.name == "build"), None)
            why = f"build {build.status}: {build.detail}" if build else "no build step"
            rows.append(f'<tr><th>{e(v.version)}</th><td colspan="5" class="muted">no wheel ({e(why)})</td></tr>')
            continue
        rows.append(
            f'<tr><th>{e(v.version)}</th><td><code class="hash">{e(w.file)}</code></td><td><code>{e(w.version)}'
            f'</code></td><td><code class="hash">{e(w.sha256)}</code></td>'
            f'<td class="num" title="{w.size} bytes">{e(fmt.size(w.size))}</td>'
            f'<td class="num">{e(fmt.seconds(w.seconds))}</td></tr>'
        )
    return (
        '<section id="wheels">\n<h2>Wheels</h2>\n<table class="wide">\n<thead><tr><th>version</th><th>wheel</th>'
        '<th>wheel version</th><th>sha256</th><th class="num">size</th><th class="num">build time</th></tr></thead>'
        f"\n<tbody>\n{chr(10).join(rows)}\n</tbody>\n</table>\n</section>"
    )


def _evidence_block(version: str, ev: Evidence) -> str:
    head = f"<h3>{e(version)}</h3>"
    if ev.error:
        return f'{head}\n<p class="error">Could not read the evidence: {e(ev.error)}</p>'
    parts = [
        head,
        f"<p><code>{e(ev.path)}</code>: rebased from {e(ev.old_version or '?')} onto {e(ev.new_version or '?')}.</p>",
    ]
    dropped = [*((d, ev.new_version) for d in ev.dropped), *((d, d.dropped_in) for d in ev.earlier)]
    if dropped:
        items = "".join(
            f"<li><code>{e(d.name)}</code> ({e(d.feature or 'no feature')}): {e(d.reason or 'dropped')}"
            f" in {e(where or '?')}{': ' + e(d.skip_reason) if d.skip_reason else ''}</li>"
            for d, where in dropped
        )
        parts.append(f"<p>Retired patches:</p><ul>{items}</ul>")
    else:
        parts.append('<p class="muted">No patch was dropped.</p>')
    if ev.patches:
        rows = "".join(
            f"<tr><th><code>{e(p.name)}</code></th><td>{badge(p.outcome) if p.outcome else ''}</td>"
            f"<td>{'kept' if p.kept else 'dropped'}</td>"
            f"<td>{e(', '.join(_signals(p))) if _signals(p) else NONE}</td></tr>"
            for p in ev.patches
        )
        parts.append(
            "<table>\n<thead><tr><th>patch</th><th>rebase outcome</th><th>carried</th><th>upstream signals</th>"
            f"</tr></thead>\n<tbody>{rows}</tbody>\n</table>"
        )
    if ev.warnings:
        items = "".join(f"<li>{e(w)}</li>" for w in ev.warnings)
        parts.append(f'<p class="error">Warnings:</p><ul>{items}</ul>')
    return "\n".join(parts)


def _signals(p: EvidencePatch) -> list[str]:
    """The signals that fired, the hunks NEW has when only some are there, and the native-since flag."""
    found, total = p.hunks_in_new
    shown = list(p.signals)
    if 0 < found < total:
        shown.append(f"post-image of {found} of {total} hunks in NEW")
    if p.past_native_since:
        shown.append(f"carried past native-since {p.past_native_since}")
    return shown


def evidence_section(report: Report) -> str:
    blocks = [_evidence_block(v.version, v.evidence) for v in report.versions if v.evidence]
    body = "\n".join(blocks) or '<p class="muted">No version has retirement evidence (evidence.json).</p>'
    return f'<section id="evidence">\n<h2>Retirement evidence</h2>\n{body}\n</section>'
