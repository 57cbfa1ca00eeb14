"""`vpatch ci`'s check step: `vpatch check --lint` of one release (its wheels are pin-verify's).

The series' own lint, vLLM's linters of that release on the lines each patch wrote (toolkit/upstream_lint,
docs/lint.md), the zero-fuzz apply and the identical re-export; a finding of any fails the step, named by
patch. What the upstream lint ran and found is the release's `lint` in the summary. A pass is kept by its
inputs (the pin, the series directory's files, the declared features, vpatch's version and the upstream
lint's sources) under CACHE/ci/check/ and reused by the next run; a failure runs again, and then only the
files whose lint reports are not in CACHE/lint-results/ are linted again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from toolkit.check import check_pin
from toolkit.ci_reuse import LINT_SOURCE_DIRS, Done, files_digest, make_key, short, sources_fingerprint
from toolkit.errors import VpatchError
from toolkit.records.ci_summary import Lint

if TYPE_CHECKING:
    from toolkit.ci import Job, VersionRun


def check_step(job: Job, run: VersionRun) -> Done:
    """`vpatch check --lint --no-wheels` (pin-verify re-hashes the wheels); a pass is kept by its inputs."""
    project, pin = job.project, run.pin
    key = make_key(
        "check",
        [
            str(pin.version),
            pin.base_commit,
            project.pins.feature_info,
            files_digest(project.series_dir(pin)),
            "lint" if job.upstream_lint else "no-upstream-lint",
            sources_fingerprint(LINT_SOURCE_DIRS) if job.upstream_lint else "",
        ],
    )
    store = job.store("check")
    if (entry := store.get(key)) is not None and ((kept := _kept_lint(entry)) is not None or not job.upstream_lint):
        run.apply, run.lint = dict(entry["apply"]), kept
        return Done(f"reused (key {short(key)}): {entry['detail']}", key, reused=True)
    problems, facts = check_pin(project, pin, wheels=False, lint=job.upstream_lint)
    series = project.series(pin)
    if "lint" in facts:
        run.lint = msgspec.convert(facts["lint"], Lint)
    failing = {p.path.name for p in problems}
    run.apply = {p.name: ("failed" if p.name in failing else "clean") for p in series.patches}
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise VpatchError("; ".join(p.render() for p in problems[:5]) + more)
    linted = _lint_detail(run.lint) if job.upstream_lint else "vLLM's own linters not run (--no-upstream-lint)"
    detail = f"{facts['patches']} patches: series lint clean, {linted}, zero-fuzz apply, "
    detail += "re-export identical"
    store.put(key, {"detail": detail, "apply": run.apply, "lint": msgspec.to_builtins(run.lint)})
    return Done(detail, key)


def _kept_lint(entry: dict) -> Lint | None:
    """The lint record a kept check carries; None (a miss: the check runs again) when it has none or is damaged."""
    try:
        return msgspec.convert(entry["lint"], Lint) if entry.get("lint") is not None else None
    except (msgspec.ValidationError, KeyError, TypeError):
        return None


def _lint_detail(lint: Lint | None) -> str:
    if lint is None:
        return "nothing to lint"
    if not lint.configured:
        return "no upstream lint (the pinned source has no .pre-commit-config.yaml)"
    upstream = f", {lint.upstream_findings} on upstream lines" if lint.upstream_findings else ""
    return f"upstream lint clean ({len(lint.tools)} hooks on {lint.files} files{upstream}, {lint.seconds:.1f}s)"
