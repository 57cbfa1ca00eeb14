"""Commit messages of imported patches: the header paragraph of a message body read and written back."""

from __future__ import annotations

import re

from toolkit.errors import VpatchError
from toolkit.trailer import last_paragraph, read_trailer

_AUTHOR_RE = re.compile(r"^(?P<name>[^<>]*?)\s*<(?P<email>[^<>\s]*)>$")


def split_trailer(body: str) -> tuple[str, list[tuple[str, str]]]:
    """A message body as (prose, header lines of its last paragraph), as toolkit.model reads headers."""
    lines = body.rstrip("\n").split("\n")
    start, end = last_paragraph(lines)
    headers = read_trailer([line.rstrip() for line in lines[start:end]])
    if headers is None:
        return "\n".join(lines[:end]).strip("\n"), []
    return "\n".join(lines[:start]).strip("\n"), [(key, value) for key, value, _ in headers]


def compose_message(subject: str, prose: str, headers: list[tuple[str, str]]) -> str:
    parts = [subject]
    if prose.strip():
        parts.append(prose.strip("\n"))
    parts.append("\n".join(f"{k}: {v}" for k, v in headers))
    return "\n\n".join(parts) + "\n"


def header_value(headers: list[tuple[str, str]], key: str) -> str | None:
    return next((v for k, v in headers if k.lower() == key.lower()), None)


def parse_author(text: str) -> tuple[str, str]:
    match = _AUTHOR_RE.match(text.strip())
    if not match or not match["name"]:
        raise VpatchError(f"--author must look like 'Name <email>', not {text!r}")
    return match["name"], match["email"]


def parse_date(text: str) -> str:
    """--date as git's raw form `EPOCH +0000`: an ISO 8601 date or date-time (UTC unless it says otherwise),
    or `now`."""
    from datetime import UTC, datetime

    value = text.strip()
    try:
        moment = datetime.now(UTC) if value == "now" else datetime.fromisoformat(value)
    except ValueError:
        raise VpatchError(
            f"--date must be an ISO 8601 date (2025-04-01, 2025-04-01T12:00:00+02:00) or now, not {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    offset = moment.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset else 0
    sign = "-" if minutes < 0 else "+"
    return f"{int(moment.timestamp())} {sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
