"""A rebase's evidence.json as the report reads it (format 1), validated field by field.

Fields added to format 1 later are optional, so older files still read: a patch's `skip_reason`,
`past_native_since` and `evidence.post_image_in_new` ({found, total, hunks}), a dropped entry's
`skip_reason`, the document's `warnings`.

An evidence file that is missing or unreadable is not fatal: the report shows the problem where the
evidence would have been (`error` on the loaded record).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toolkit.records.codec import read_document
from toolkit.report.model import Dropped, Evidence, EvidencePatch

EVIDENCE_FORMAT = 1


class Invalid(Exception):
    """A field of an input file has the wrong shape; `where` is its path inside the document."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


_KINDS: dict[str, tuple[str, Any]] = {
    "str": ("a string", lambda v: isinstance(v, str)),
    "int": ("a non-negative integer", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    "number": (
        "a non-negative number",
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v >= 0,
    ),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "list": ("a list", lambda v: isinstance(v, list)),
    "object": ("an object", lambda v: isinstance(v, dict)),
}
_MISSING = object()


def _get(data: dict, key: str, where: str, kind: str, *, null: bool = False, default: Any = _MISSING) -> Any:
    here = f"{where}.{key}" if where else key
    if key not in data:
        if default is _MISSING:
            raise Invalid(here, f"missing (expected {_KINDS[kind][0]})")
        return default
    value = data[key]
    if value is None and null:
        return None
    description, ok = _KINDS[kind]
    if not ok(value):
        raise Invalid(here, f"expected {description}{' or null' if null else ''}, got {_show(value)}")
    return value


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def load_evidence(root: Path, rel: str) -> Evidence:
    try:
        data = json.loads(read_document(root / rel))
    except json.JSONDecodeError as exc:
        return Evidence(rel, f"{rel}:{exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})")
    except (OSError, ValueError) as exc:
        return Evidence(rel, f"{rel}: {exc}")
    try:
        return _evidence_data(data, rel)
    except Invalid as exc:
        return Evidence(rel, f"{rel}: {exc}")


def _dropped(entries: list, where: str) -> tuple[Dropped, ...]:
    result = []
    for position, entry in enumerate(entries):
        here = f"{where}[{position}]"
        if not isinstance(entry, dict):
            raise Invalid(here, f"expected an object, got {_show(entry)}")
        result.append(
            Dropped(
                _get(entry, "name", here, "str"),
                _get(entry, "feature", here, "str", null=True, default=None),
                _get(entry, "reason", here, "str", default=""),
                _get(entry, "dropped_in", here, "str", null=True, default=None),
                _get(entry, "skip_reason", here, "str", null=True, default=None),
            )
        )
    return tuple(result)


def _evidence_data(data: Any, rel: str) -> Evidence:
    if not isinstance(data, dict):
        raise Invalid("", f"expected a JSON object, got {_show(data)}")
    if data.get("format") != EVIDENCE_FORMAT:
        raise Invalid("format", f"unsupported format {_show(data.get('format'))} (expected {EVIDENCE_FORMAT})")
    patches = []
    raw = _get(data, "patches", "", "object", default={})
    ordered = sorted(raw.items(), key=lambda item: (_position(item[1]), item[0]))
    for name, entry in ordered:
        here = f"patches.{name}"
        if not isinstance(entry, dict):
            raise Invalid(here, f"expected an object, got {_show(entry)}")
        signals = _get(entry, "upstream_signals", here, "list", default=[])
        found = _get(entry, "evidence", here, "object", null=True, default=None) or {}
        post = _get(found, "post_image_in_new", f"{here}.evidence", "object", null=True, default=None) or {}
        hunks = (
            _get(post, "found", f"{here}.evidence.post_image_in_new", "int", default=0),
            _get(post, "total", f"{here}.evidence.post_image_in_new", "int", default=0),
        )
        patches.append(
            EvidencePatch(
                name=name,
                subject=_get(entry, "subject", here, "str", default=""),
                feature=_get(entry, "feature", here, "str", null=True, default=None),
                outcome=_get(entry, "outcome", here, "str", default=""),
                kept=_get(entry, "kept", here, "bool", default=False),
                signals=tuple(str(s) for s in signals),
                skip_reason=_get(entry, "skip_reason", here, "str", null=True, default=None),
                past_native_since=_get(entry, "past_native_since", here, "str", null=True, default=None),
                hunks_in_new=hunks,
            )
        )
    old = _get(data, "old", "", "object", default={})
    new = _get(data, "new", "", "object", default={})
    return Evidence(
        path=rel,
        old_version=str(old.get("version") or ""),
        new_version=str(new.get("version") or ""),
        patches=tuple(patches),
        dropped=_dropped(_get(data, "dropped", "", "list", default=[]), "dropped"),
        earlier=_dropped(_get(data, "earlier", "", "list", default=[]), "earlier"),
        warnings=_warnings(_get(data, "warnings", "", "list", default=[])),
    )


def _warnings(entries: list) -> tuple[str, ...]:
    for position, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise Invalid(f"warnings[{position}]", f"expected a string, got {_show(entry)}")
    return tuple(entries)


def _position(entry: Any) -> int:
    position = entry.get("position") if isinstance(entry, dict) else None
    return position if isinstance(position, int) and not isinstance(position, bool) else 1 << 30
