"""The default-engine verdict: which engine a launcher should default to for a release, and why.

Decided by toolkit/verdict.py; shown by `vpatch status` (whole, under `verdict`) and written into
OUT/ci-summary.json (its `summary` sentence).
"""

from __future__ import annotations

import msgspec

ENGINES = ("dynamo-base", "stock")


class Verdict(msgspec.Struct, omit_defaults=True):
    """`engine` is dynamo-base, stock or None (no verdict); `records` only for an empty series: the files
    that record why its patches were retired."""

    engine: str | None
    active_patches: int
    features: list[str]
    summary: str
    records: list[str] | None = None
    # feature -> the contract items stock lacks on this release, from the contract results in `contracts`
    lacks: dict[str, list[str]] | None = None
    contracts: list[str] | None = None

    def as_dict(self) -> dict:
        return msgspec.to_builtins(self)
