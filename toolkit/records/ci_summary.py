"""OUT/ci-summary.json: what `vpatch ci` ran for every pinned version, each step timed (schema 2).

Written by toolkit/ci.py whatever failed, read by `vpatch report`. Conformance results are not inlined:
`conformance` maps each tier to its results file, relative to the output directory; `evidence` is the
series' evidence.json relative to the project root. `verdict` is the default-engine verdict as the verdict
stage decided it (toolkit/records/verdict.py, the record `vpatch status --json` prints); schema 1 had only
its summary sentence.

Reuse (added within schema 2: optional fields, so older summaries read as before and older readers skip
them): a step's `reused` says its outcome was taken from an earlier run instead of being produced again,
`key` names what it is kept under (the build's wheel fingerprint, a conformance result's input key), and
the summary's `jobs` is how many releases ran side by side. A version's `lint` is what the check step's
upstream lint (`check --lint`, docs/lint.md) ran and found: the hooks, the files, each finding by patch.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
from packaging.version import InvalidVersion
from packaging.version import Version as PackagingVersion

from toolkit.model import UpstreamStatus
from toolkit.records.codec import RecordError, decode, encode, show, version_of
from toolkit.records.status import STEP_STATUSES, Status, require
from toolkit.records.verdict import Verdict

SUMMARY_FILE = "ci-summary.json"
SCHEMA = 2
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Count = Annotated[int, msgspec.Meta(ge=0)]
_URL = re.compile(r"^https?://[^\s<>\"']+$")


class Feature(msgspec.Struct):
    description: str = ""
    native_since: str | None = None
    upstream: str | None = None  # where upstream does it (a PR, a file), from pins.toml
    parent: str | None = None  # a sub-feature's parent (toolkit/features.py); None for a feature


class Patch(msgspec.Struct):
    name: str
    added_lines: Count
    removed_lines: Count
    subject: str = ""
    feature: str | None = None
    upstream_status: str | None = ""
    files: list[str] = []
    apply: str | None = None
    rebase: str | None = None
    retired_since: str | None = None

    def __post_init__(self) -> None:
        if self.upstream_status is None:  # null reads as not recorded
            self.upstream_status = ""

    def active_in(self, version: str) -> bool:
        """Whether the patch is in force in `version`: not retired, or retired only from a later release on
        (the last series carrying a patch records its `Retired-Since:`)."""
        if self.retired_since is None:
            return True
        try:
            return PackagingVersion(self.retired_since) > PackagingVersion(version)
        except InvalidVersion:
            return False

    @property
    def changed_lines(self) -> int:
        return self.added_lines + self.removed_lines

    @property
    def upstream_kind(self) -> str:
        try:
            return UpstreamStatus.parse(self.upstream_status or "").kind
        except ValueError:
            return ""

    @property
    def upstream_url(self) -> str | None:
        """The status's bracketed detail when it is an http(s) URL (Submitted, Backport, Denied)."""
        try:
            detail = UpstreamStatus.parse(self.upstream_status or "").detail
        except ValueError:
            return None
        return detail if _URL.match(detail) else None


class Series(msgspec.Struct):
    fingerprint: str
    patches: list[Patch]


class Step(msgspec.Struct):
    name: str
    status: Status
    seconds: NonNegative = 0.0
    detail: str | None = ""
    reused: bool = False
    key: str = ""

    def __post_init__(self) -> None:
        require(self.status, STEP_STATUSES)
        if self.detail is None:
            self.detail = ""


class LintFinding(msgspec.Struct):
    patch: str  # the patch file that wrote the line
    path: str  # the file in the vLLM tree
    line: Count
    tool: str  # `ruff 0.9.3`, `mypy 1.11.1 (py3.10)`
    code: str
    message: str


class Lint(msgspec.Struct):
    """vLLM's own linters of the release on the lines the series wrote (toolkit/upstream_lint)."""

    configured: bool = True  # False: the pinned source has no .pre-commit-config.yaml, nothing linted
    tools: list[str] = []
    files: Count = 0
    findings: list[LintFinding] = []
    upstream_findings: Count = 0  # on lines no patch wrote: counted, not reported
    linted: Count = 0  # (hook, file) pairs a tool ran on; the rest came from the lint-results cache
    seconds: NonNegative = 0.0
    notes: list[str] = []


class Wheel(msgspec.Struct):
    file: str
    version: str
    sha256: str
    size: Count
    seconds: NonNegative = 0.0


class VersionRun(msgspec.Struct):
    version: str
    verdict: Verdict | None = None
    series: Series | None = None
    steps: list[Step] = []
    wheel: Wheel | None = None
    conformance: dict[str, str] | None = None
    evidence: str | None = None
    lint: Lint | None = None


class Summary(msgspec.Struct):
    project: str
    started: str
    ok: bool
    versions: list[VersionRun]
    schema: int = SCHEMA
    toolkit: str = ""
    seconds: NonNegative = 0.0
    features: dict[str, Feature] = {}
    jobs: Annotated[int, msgspec.Meta(ge=1)] = 1

    @property
    def reused_steps(self) -> int:
        return sum(1 for run in self.versions for step in run.steps if step.reused)


def encode_summary(summary: Summary) -> str:
    return encode(summary)


def decode_summary(text: str | bytes) -> Summary:
    """The summary; RecordError for another schema, a field of the wrong shape or a version listed twice."""
    schema = version_of(text)
    if schema != SCHEMA:
        raise RecordError(
            f"unsupported schema {show(schema)} (this vpatch reads schema {SCHEMA}); upgrade vpatch", where="$.schema"
        )
    summary = decode(text, Summary)
    seen: set[str] = set()
    for position, run in enumerate(summary.versions):
        where = f"$.versions[{position}]"
        if run.version in seen:
            raise RecordError(f"{run.version} appears more than once", where=f"{where}.version")
        seen.add(run.version)
        for tier, rel in (run.conformance or {}).items():
            if not rel:
                raise RecordError(
                    "expected a path relative to the input directory, got an empty string",
                    where=f"{where}.conformance.{tier}",
                )
    return summary
