"""Editing the new series' text: a trailer in a patch mail's header paragraph, and the series file's comments."""

from __future__ import annotations

import datetime
import os
import re


def retarget_comments(series_text: str, old_version: str, new_version: str) -> str:
    """The old series file's comments, with "vLLM OLD" now naming NEW (patch lines untouched)."""
    # "vLLM 1.0" but not "vLLM 1.0x" or "vLLM 1.0.1".
    old_name = re.compile(rf"vLLM {re.escape(old_version)}(?!\w|\.\d)")
    lines = series_text.splitlines(keepends=True)
    return "".join(
        old_name.sub(f"vLLM {new_version}", line) if line.lstrip().startswith("#") else line for line in lines
    )


def today() -> str:
    """YYYY-MM-DD for `Last-Update:`, from SOURCE_DATE_EPOCH when set (reproducible), else now (UTC)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    when = (
        datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
        if epoch.isdigit()
        else datetime.datetime.now(datetime.UTC)
    )
    return when.date().isoformat()


_TRAILER_LINE = re.compile(rb"^(?:[A-Za-z][A-Za-z0-9-]*:(?: |$)|[ \t])")


def set_trailer(data: bytes, key: str, value: str) -> bytes:
    """Set `Key: value` in the mail's header paragraph (the last of the message): replaced in place, or
    added before `Patch-File:` (which stays last), or as a new paragraph when the message has none."""
    mail_headers, _, body = data.partition(b"\n\n")
    separator = re.search(rb"^(---\n|diff --git )", body, re.M)
    cut = separator.start() if separator else len(body)
    message, rest = body[:cut].rstrip(b"\n"), body[cut:]
    line = f"{key}: {value}".encode()
    paragraphs = message.split(b"\n\n") if message else []
    if paragraphs and all(_TRAILER_LINE.match(ln) for ln in paragraphs[-1].split(b"\n")):
        lines = paragraphs[-1].split(b"\n")
        prefix = key.lower().encode() + b":"
        at = next((i for i, ln in enumerate(lines) if ln.lower().startswith(prefix)), None)
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
