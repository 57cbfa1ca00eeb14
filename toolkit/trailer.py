"""The DEP-3 trailer paragraph of a patch's commit message, read and written in one place.

The headers (`Upstream-Status:`, `Feature:`, `Patch-File:` ...) are the last paragraph of the message when
every line of it is `Key: value` or the folded continuation (leading blank) of the line before. The
parser (toolkit.patch_mail), the importer's messages and the writers that set a header in a rendered mail
(export's `Patch-File:`, the rebase's `Last-Update:`, `Origin:` and renames) all use these functions.
"""

from __future__ import annotations

import re
from collections.abc import Callable

HEADER_LINE = re.compile(r"^(?P<key>[A-Za-z][A-Za-z0-9-]*):(?:\s(?P<value>.*))?$")
_TRAILER_LINE = re.compile(rb"^(?:[A-Za-z][A-Za-z0-9-]*:(?: |$)|[ \t])")
_MESSAGE_END = re.compile(rb"^(---\n|diff --git )", re.M)


def last_paragraph(lines: list[str]) -> tuple[int, int]:
    """[start, end) of the last paragraph of `lines` (blank lines after it left out)."""
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    start = end
    while start and lines[start - 1].strip():
        start -= 1
    return start, end


def read_trailer(
    paragraph: list[str], check: Callable[[str, int], None] | None = None
) -> list[tuple[str, str, int]] | None:
    """(key, value, offset in the paragraph) of each header of `paragraph`, folded lines joined to their
    value; None when it is prose (a line that is neither a header nor a continuation). `check(line,
    offset)` may raise on a line before it is read."""
    headers: list[tuple[str, str, int]] = []
    for offset, line in enumerate(paragraph):
        if check is not None:
            check(line, offset)
        match = HEADER_LINE.match(line)
        if match:
            headers.append((match["key"], (match["value"] or "").strip(), offset))
        elif line[:1] in (" ", "\t") and headers:
            key, value, at = headers[-1]
            headers[-1] = (key, f"{value} {line.strip()}", at)
        else:
            return None
    return headers or None


def set_trailer(data: bytes, key: str, value: str, *, replace: bool = True) -> bytes:
    """Set `Key: value` in a patch mail's trailer paragraph: replaced in place (with its folded lines), or
    (when there is none, or not `replace`) added before `Patch-File:` (which stays last), or as a new
    paragraph when the message has none."""
    mail_headers, _, body = data.partition(b"\n\n")
    separator = _MESSAGE_END.search(body)
    cut = separator.start() if separator else len(body)
    message, rest = body[:cut].rstrip(b"\n"), body[cut:]
    line = f"{key}: {value}".encode()
    paragraphs = message.split(b"\n\n") if message else []
    if paragraphs and all(_TRAILER_LINE.match(ln) for ln in paragraphs[-1].split(b"\n")):
        lines = paragraphs[-1].split(b"\n")
        prefix = key.lower().encode() + b":"
        at = next((i for i, ln in enumerate(lines) if ln.lower().startswith(prefix)), None) if replace else None
        if at is not None:
            end = at + 1
            while end < len(lines) and lines[end][:1] in (b" ", b"\t"):
                end += 1  # a folded value goes with its key
            lines[at:end] = [line]
        else:
            at = next((i for i, ln in enumerate(lines) if ln.lower().startswith(b"patch-file:")), len(lines))
            lines.insert(at, line)
        paragraphs[-1] = b"\n".join(lines)
    else:
        paragraphs.append(line)
    return mail_headers + b"\n\n" + b"\n\n".join(paragraphs) + b"\n" + rest


def add_trailers(data: bytes, headers: list[tuple[str, str]]) -> bytes:
    """Add each `Key: value` in turn before `Patch-File:` (a key already there is kept: both stay)."""
    for key, value in headers:
        data = set_trailer(data, key, value, replace=False)
    return data
