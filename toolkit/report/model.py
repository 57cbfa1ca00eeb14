"""The report's model: the records `vpatch ci` and `vpatch conform` wrote, joined per version.

Leaves are the records themselves (toolkit/records/: `Patch`, `Step`, `Wheel`, `Check`); the classes here
add what the report needs on top: the version a series belongs to, a results file that could not be read,
the evidence of a rebase.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.records.ci_summary import Patch, Step, Wheel
from toolkit.records.conformance import Check, ConformanceResults
from toolkit.records.status import Status
from toolkit.records.story import Story
from toolkit.records.verdict import Verdict

__all__ = [
    "Check",
    "Conformance",
    "Dropped",
    "Evidence",
    "EvidencePatch",
    "Feature",
    "Patch",
    "Report",
    "Series",
    "Step",
    "Version",
    "Wheel",
    "grouped_features",
]


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    native_since: str | None
    upstream: str | None = None
    parent: str | None = None  # set for a sub-feature (PARENT/SUB, toolkit/features.py)


def grouped_features(features: tuple[Feature, ...]) -> list[Feature]:
    """Each feature followed by its sub-features (in name order), a sub-feature whose parent is missing last."""
    tops = [f for f in features if f.parent is None]
    order = [
        x for top in tops for x in (top, *sorted((f for f in features if f.parent == top.name), key=lambda f: f.name))
    ]
    return order + [f for f in features if f not in order]


@dataclass(frozen=True)
class Series:
    fingerprint: str
    patches: tuple[Patch, ...]
    version: str

    @property
    def active(self) -> tuple[Patch, ...]:
        return tuple(p for p in self.patches if p.active_in(self.version))

    @property
    def changed_lines(self) -> int:
        """Lines added plus lines removed by the active (not retired) patches."""
        return sum(p.changed_lines for p in self.active)


@dataclass(frozen=True)
class Conformance:
    """One tier's results file; `error` says why it could not be read (then `results` is None)."""

    tier: str
    path: str
    error: str | None = None
    results: ConformanceResults | None = None

    @property
    def checks(self) -> tuple[Check, ...]:
        return tuple(self.results.checks) if self.results else ()

    @property
    def ok(self) -> bool | None:
        return self.results.ok if self.results else None

    @property
    def started(self) -> str:
        return self.results.started if self.results else ""

    @property
    def seconds(self) -> float:
        return float(self.results.seconds) if self.results else 0.0

    @property
    def python(self) -> str:
        return self.results.python if self.results else ""

    @property
    def stock_wheel(self) -> str:
        return self.results.stock.wheel if self.results and self.results.stock else ""

    @property
    def patched_wheel(self) -> str:
        return self.results.patched.wheel if self.results and self.results.patched else ""

    def count(self, status: str) -> int:
        return sum(1 for c in self.checks if c.status == status)

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status == Status.FAIL)


@dataclass(frozen=True)
class EvidencePatch:
    name: str
    subject: str
    feature: str | None
    outcome: str
    kept: bool
    signals: tuple[str, ...]
    skip_reason: str | None = None  # `vpatch rebase --skip --reason`
    past_native_since: str | None = None  # carried past its feature's native-since without contract evidence
    hunks_in_new: tuple[int, int] = (0, 0)  # (found, total): hunks whose post-image NEW has by content


@dataclass(frozen=True)
class Dropped:
    name: str
    feature: str | None
    reason: str
    dropped_in: str | None
    skip_reason: str | None = None


@dataclass(frozen=True)
class Evidence:
    """A rebase's evidence.json; `error` says why it could not be read."""

    path: str
    error: str | None = None
    old_version: str = ""
    new_version: str = ""
    patches: tuple[EvidencePatch, ...] = ()
    dropped: tuple[Dropped, ...] = ()
    earlier: tuple[Dropped, ...] = ()
    warnings: tuple[str, ...] = ()  # e.g. a patch carried past its feature's native-since


@dataclass(frozen=True)
class Version:
    """`verdict`: the verdict's summary sentence; `decision`: the whole verdict record (engine, per feature),
    None when the summary has none."""

    version: str
    verdict: str
    series: Series | None
    steps: tuple[Step, ...]
    wheel: Wheel | None
    conformance: tuple[Conformance, ...]
    evidence: Evidence | None
    decision: Verdict | None = None

    @property
    def contract_files(self) -> list[str]:
        """The contract evidence the verdict rests on (patches/conformance/, out/conform/): what the report shows
        for a release the run's conformance map has nothing for (a release whose series is empty)."""
        return list(self.decision.contracts or []) if self.decision is not None else []

    @property
    def failed_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.status == Status.FAIL)


@dataclass(frozen=True)
class Report:
    project: str
    toolkit: str
    started: str
    seconds: float
    ok: bool
    features: tuple[Feature, ...]
    versions: tuple[Version, ...]
    story: Story | None = None  # per release and capability, and the default switch (toolkit/report/story.py)
    story_error: str | None = None  # why the story could not be computed from the project

    @property
    def project_name(self) -> str:
        return "vLLM" if self.project == "vllm" else self.project

    @property
    def problems(self) -> list[str]:
        """The input files the report could not read (shown in the report, not fatal)."""
        found = [c.error for v in self.versions for c in v.conformance if c.error]
        found += [v.evidence.error for v in self.versions if v.evidence and v.evidence.error]
        return found + ([self.story_error] if self.story_error else [])
