"""Writing and reading a record: the bytes `json.dumps(indent=1, sort_keys=True)` gives, and one-line errors.

A malformed document raises `RecordError` naming the bad field by msgspec's path (`$.steps[3].status`);
JSON that does not parse names its line, as `json` reports it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")


class RecordError(ValueError):
    """A document does not match its schema; `where` is the field's path, `line` the line of a JSON error."""

    def __init__(self, message: str, *, where: str = "", line: int | None = None) -> None:
        self.message = message
        self.where = where
        self.line = line
        super().__init__(f"{where}: {message}" if where else message)


def encode(record: msgspec.Struct) -> str:
    """The file's text: sorted keys, one-space indent, a final newline (the format the files always had)."""
    return json.dumps(msgspec.to_builtins(record), indent=1, sort_keys=True) + "\n"


def decode(text: str | bytes, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(text, type=kind)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `")
        where = where.rstrip("`") or "$"
        field, named, rest = message.partition(": ")
        if named and field.isidentifier():  # a check of one field in __post_init__ ("status: unknown ...")
            where, message = f"{where}.{field}", rest
        raise RecordError(message, where=where) from None
    except msgspec.DecodeError as exc:
        try:
            json.loads(text)
        except json.JSONDecodeError as error:
            raise RecordError(f"invalid JSON: {error.msg} (column {error.colno})", line=error.lineno) from None
        raise RecordError(f"invalid JSON: {exc}") from None


class _Versioned(msgspec.Struct):
    schema: Any = None
    format: Any = None


def version_of(text: str | bytes, key: str = "schema") -> Any:
    """The document's schema (or format) number, read before the rest so that a newer file says so."""
    head = decode(text, _Versioned)
    return getattr(head, key)


def require_version(text: str | bytes, expected: Any, key: str = "schema") -> None:
    """RecordError at `$.<key>` unless the document's schema (or format) number is `expected`: a file of another
    one says so, rather than naming the first field that differs."""
    found = version_of(text, key)
    if found != expected:
        raise RecordError(f"unsupported {key} {show(found)} (expected {expected})", where=f"$.{key}")


def decode_versioned(text: str | bytes, kind: type[T], expected: Any, key: str = "schema") -> T:
    """The document as `kind`, once its `key` is `expected` (`require_version`); RecordError otherwise."""
    require_version(text, expected, key)
    return decode(text, kind)


def show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def read_document(path: Path) -> str:
    """The file's text, or OSError / ValueError with a message free of absolute paths."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OSError("not found") from None
    except IsADirectoryError:
        raise OSError("is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise OSError(exc.strerror or type(exc).__name__) from None
