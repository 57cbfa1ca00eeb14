"""The check stage: a pin's files re-hashed, its series linted, applied with zero fuzz and re-exported identically.

With `lint=True` the files the series changes are also run through vLLM's own linters at that release
(`toolkit.upstream_lint`); each finding is a problem of the patch that wrote the line.
`vpatch check` renders what it finds; `vpatch ci` runs it as its check step.
"""

from __future__ import annotations

import time

from toolkit.apply import apply_series
from toolkit.errors import VpatchError
from toolkit.export import plan_export
from toolkit.index import fetch_artifact
from toolkit.lint import (
    Problem,
    first_difference,
    lint_series_dir,
    problem_from,
    rationale_warnings,
    size_warnings,
)
from toolkit.model import Pin
from toolkit.project import Project
from toolkit.upstream_lint import lint_series


def check_pin(project: Project, pin: Pin, *, wheels: bool = True, lint: bool = False) -> tuple[list[Problem], dict]:
    """Every problem found (none: the pin passes) and the facts (version, patches, series, apply_seconds,
    and with `lint` the upstream-lint summary)."""
    problems: list[Problem] = []
    facts: dict = {"version": str(pin.version), "patches": 0, "series": project.has_series(pin)}
    pins_file = project.pins.path
    for artifact in [*([pin.sdist] if pin.sdist else []), *(pin.wheels if wheels else ())]:
        try:
            fetch_artifact(project.options.cache_dir, artifact, quiet=project.options.json, rehash=True)
        except VpatchError as error:
            problems.append(Problem(pins_file, None, f"pin {pin.version}: {error.message}"))
    if not project.has_series(pin):
        return problems, facts
    directory = project.series_dir(pin)
    lint_problems, patches = lint_series_dir(directory, pin, project.pins.features)
    problems.extend(lint_problems)
    facts["patches"] = len(patches)
    facts["warnings"] = [w.as_dict() for w in [*rationale_warnings(patches), *size_warnings(patches)]]
    try:
        series = project.series(pin)
    except VpatchError as error:
        # The series does not even load; lint has reported why (every problem, not only this first one).
        problem = problem_from(error, directory / "series")
        if problem not in problems:
            problems.append(problem)
        return problems, facts
    try:
        with project.scratch_checkout(pin) as checkout:
            started = time.perf_counter()
            result = apply_series(checkout, series)
            facts["apply_seconds"] = round(time.perf_counter() - started, 3)
            stopped = result.stopped_at
            if stopped is not None:
                problems.append(
                    Problem(
                        directory / stopped.name, None, "does not apply with zero fuzz: " + "; ".join(stopped.details)
                    )
                )
                return problems, facts
            plan = plan_export(checkout, directory)
            if lint:
                linted = lint_series(checkout, result.outcomes, project.options.cache_dir)
                facts["lint"] = linted.summary()
                problems.extend(Problem(directory / f.patch, None, f.render()) for f in linted.findings)
    except VpatchError as error:
        problems.append(problem_from(error, directory / "series"))
        return problems, facts
    for name, data in plan.patches:
        path = directory / name
        if not path.exists():
            problems.append(Problem(path, None, "re-export creates this file; run `vpatch export`"))
            continue
        committed = path.read_bytes()
        if committed != data:
            problems.append(
                Problem(
                    path,
                    first_difference(committed, data),
                    f"differs from its re-export; run `vpatch apply {pin.version}` then `vpatch export {pin.version}`",
                )
            )
    return problems, facts
