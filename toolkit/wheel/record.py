"""RECORD lines of a wheel (PEP 376 / 427): `path,sha256=<urlsafe b64, unpadded>,size`."""

from __future__ import annotations

import base64
import csv
import hashlib
import io


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def record_text(rows: list[tuple[str, str, str]]) -> bytes:
    """The RECORD file for `rows` (the RECORD's own row, with empty hash and size, included by the caller)."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue().encode()
