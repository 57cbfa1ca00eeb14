"""What one linter reported for one file, as `vpatch check --lint` caches it.

Written and read by `toolkit/upstream_lint/results.py` under `<cache>/lint-results/<key>.json`; the key
names the hook (tool, version, arguments), the tree's lint configuration and the file's blob, so an
entry is never stale: a changed file or configuration has another key.
"""

from __future__ import annotations

import msgspec

from toolkit.records.codec import decode, encode

SCHEMA = 1


class ReportedLine(msgspec.Struct):
    """One report: the lines of the file it is about, the rule (or format / spelling / spdx), the text."""

    lines: list[int]
    code: str
    message: str


class FileLintResult(msgspec.Struct):
    schema: int
    reports: list[ReportedLine]


def encode_result(reports: list[ReportedLine]) -> str:
    return encode(FileLintResult(schema=SCHEMA, reports=reports))


def decode_result(text: str | bytes) -> list[ReportedLine] | None:
    """The reports, or None for an entry of another schema (then it is run again)."""
    result = decode(text, FileLintResult)
    return result.reports if result.schema == SCHEMA else None
