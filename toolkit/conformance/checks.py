"""Named conformance checks: each passes, fails, or does not apply, with a readable diff on failure."""

from __future__ import annotations

import difflib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from toolkit.records.conformance import Check
from toolkit.records.status import Status

PASS, FAIL, NOT_APPLICABLE = Status.PASS, Status.FAIL, Status.NOT_APPLICABLE


@dataclass
class CheckResult:
    name: str
    status: str
    detail: str = ""
    diff: str = ""
    seconds: float = 0.0

    def as_record(self) -> Check:
        return Check(self.name, Status(self.status), self.detail, self.diff, round(self.seconds, 3))


@dataclass
class CheckList:
    results: list[CheckResult] = field(default_factory=list)

    def run(self, name: str, check: Callable[[], CheckResult]) -> CheckResult:
        """Run one check; a crash is a failed check with its cause, never a pass, and the others still run."""
        start = time.perf_counter()
        try:
            result = check()
        except Exception as exc:  # the point is to report any failure as a result
            result = CheckResult(name, FAIL, f"the check itself failed: {type(exc).__name__}: {exc}")
        result.name = name
        result.seconds = time.perf_counter() - start
        self.results.append(result)
        return result

    def add(self, result: CheckResult) -> None:
        self.results.append(result)

    @property
    def ok(self) -> bool:
        return all(r.status != FAIL for r in self.results)


def steps_of(trace: list[dict]) -> list[dict]:
    return [r for r in trace if not r.get("summary")]


def trace_diff(
    expected: list[dict], actual: list[dict], *, label_a: str, label_b: str, ignore: tuple[str, ...] = ()
) -> str:
    """'' when equal; otherwise the first differing step, key by key, as a unified diff."""

    def clean(row: dict) -> dict:
        return {k: v for k, v in row.items() if k not in ignore}

    for index, (a, b) in enumerate(zip(expected, actual, strict=False)):
        a, b = clean(a), clean(b)
        if a != b:
            where = f"{a.get('workload')} step {a.get('step', 'summary')}"
            left = json.dumps(a, indent=1, sort_keys=True).splitlines()
            right = json.dumps(b, indent=1, sort_keys=True).splitlines()
            body = "\n".join(difflib.unified_diff(left, right, label_a, label_b, n=2, lineterm=""))
            return f"first difference at line {index + 1} ({where}):\n{body}"
    if len(expected) != len(actual):
        return f"{label_a} has {len(expected)} lines, {label_b} has {len(actual)}"
    return ""


def compare_traces(
    name: str, expected: list[dict], actual: list[dict], *, label_a: str, label_b: str, ignore: tuple[str, ...] = ()
) -> CheckResult:
    diff = trace_diff(expected, actual, label_a=label_a, label_b=label_b, ignore=ignore)
    steps = len(steps_of(expected))
    workloads = len({r.get("workload") for r in expected})
    if diff:
        return CheckResult(name, FAIL, f"{label_b} differs from {label_a}", diff)
    return CheckResult(name, PASS, f"{steps} steps over {workloads} workloads identical")


def kv_index_invariant(trace: list[dict]) -> CheckResult:
    """The index rebuilt from the events equals the block pool's cached map after every step."""
    cached: set[int] = set()
    workload = None
    checked = 0
    kinds: dict[str, int] = {}
    for row in steps_of(trace):
        if row["workload"] != workload:
            workload, cached = row["workload"], set()
        for event in row["events"]:
            kinds[event["type"]] = kinds.get(event["type"], 0) + 1
            if event["type"] == "BlockStored":
                cached.update(event["block_hashes"])
            elif event["type"] == "BlockRemoved":
                cached.difference_update(event["block_hashes"])
            else:
                cached.clear()
        if sorted(cached) != row["cached_hashes"]:
            extra = sorted(cached - set(row["cached_hashes"]))[:5]
            missing = sorted(set(row["cached_hashes"]) - cached)[:5]
            return CheckResult(
                "kv-index-invariant",
                FAIL,
                f"{workload} step {row['step']}: index differs",
                f"in the index but not cached: {extra}\ncached but not in the index: {missing}",
            )
        checked += 1
    if not kinds:
        return CheckResult("kv-index-invariant", FAIL, "no KV events were recorded at all")
    return CheckResult(
        "kv-index-invariant",
        PASS,
        f"{checked} steps; events: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())),
    )


def no_block_leaks(traces: dict[str, list[dict]]) -> CheckResult:
    leaks = []
    for label, trace in traces.items():
        for summary in (r for r in trace if r.get("summary")):
            if summary["num_free_blocks"] != summary["num_blocks"] - 1:  # the null block is never free
                leaks.append(
                    f"{label} {summary['workload']}: {summary['num_blocks'] - 1 - summary['num_free_blocks']}"
                    " block(s) not returned"
                )
    if leaks:
        return CheckResult("no-block-leaks", FAIL, "; ".join(leaks))
    return CheckResult(
        "no-block-leaks", PASS, f"every block returned at the end of every workload ({len(traces)} runs)"
    )
