"""The HTML page's small parts: escaping, status badges from a fixed table, fixed snippets, diffs."""

from __future__ import annotations

import html

from toolkit.records.status import LABELS, Status

# check and step statuses by their tone, then the apply and rebase outcomes shown in the same badges
TONE_CLASS = {"good": "s-pass", "bad": "s-fail", "muted": "s-na"}
# status word -> CSS class (a fixed table: input text never becomes a class name)
STATUS_CLASS = {
    **{status.value: TONE_CLASS[status.tone] for status in Status},
    "clean": "s-pass",
    "failed": "s-fail",
    "conflict": "s-fail",
    "offset": "s-warn",
    "fuzz": "s-warn",
    "merged": "s-warn",
    "empty": "s-na",
}
STATUS_LABEL = LABELS
ROW_FAIL = ' class="row-fail"'
NONE = '<span class="muted">none</span>'
NO_REBASE = '<span class="muted">— (not rebased)</span>'
NOT_YET = '<span class="muted">not yet upstream</span>'


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


def badge(status: str | None, label: str | None = None) -> str:
    if status is None:
        return '<span class="badge s-na">not recorded</span>'
    css = STATUS_CLASS.get(status, "s-other")
    return f'<span class="badge {css}">{e(label or STATUS_LABEL.get(status, status))}</span>'


def diff_html(diff: str) -> str:
    lines = []
    for line in diff.splitlines():
        if line.startswith(("--- ", "+++ ")):
            css = "head"
        elif line.startswith("@@"):
            css = "hunk"
        elif line.startswith("+"):
            css = "add"
        elif line.startswith("-"):
            css = "del"
        else:
            css = ""
        lines.append(f'<span class="{css}">{e(line)}</span>' if css else e(line))
    return '<pre class="diff">' + "\n".join(lines) + "</pre>"
