"""OUT/conform/<project>-<version>-<tier>.json: one tier's conformance results (schema 1).

Written by `vpatch conform` (toolkit/conformance/suite.py), read by `vpatch report` and by retirement
(`against` results under patches/conformance/). Fields a reader does not know are ignored, so results
can grow (e.g. contract items) without a new schema.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from toolkit.records.codec import decode_versioned, encode
from toolkit.records.status import CHECK_STATUSES, Status, require

SCHEMA = 1
NonNegative = Annotated[float, msgspec.Meta(ge=0)]


class Check(msgspec.Struct):
    name: str
    status: Status
    detail: str = ""
    diff: str = ""
    seconds: NonNegative = 0.0

    def __post_init__(self) -> None:
        require(self.status, CHECK_STATUSES)


class WheelRef(msgspec.Struct, omit_defaults=True):
    """The wheel a side ran; `fingerprint` (the series') only on the dynamo-base side."""

    wheel: str
    sha256: str
    fingerprint: str | None = None


class SeriesRef(msgspec.Struct):
    fingerprint: str
    patches: list[str]


class ConformanceResults(msgspec.Struct):
    version: str
    tier: str
    checks: list[Check]
    ok: bool
    schema: int = SCHEMA
    project: str = ""
    toolkit: str = ""
    python: str = ""
    series: SeriesRef | None = None
    stock: WheelRef | None = None
    patched: WheelRef | None = None
    started: str = ""
    seconds: NonNegative = 0.0

    def count(self, status: Status) -> int:
        return sum(1 for c in self.checks if c.status == status)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == Status.FAIL]


def encode_results(results: ConformanceResults) -> str:
    return encode(results)


def decode_results(text: str | bytes) -> ConformanceResults:
    """The results; RecordError for another schema or a field of the wrong shape."""
    return decode_versioned(text, ConformanceResults, SCHEMA)
