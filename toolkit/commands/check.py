"""`vpatch check`: pins verified, series well-formed, applying with zero fuzz, and in sync with re-export."""

from __future__ import annotations

import argparse
import time

from toolkit import ui
from toolkit.apply import apply_series
from toolkit.errors import VpatchError
from toolkit.export import plan_export
from toolkit.index import fetch_artifact
from toolkit.lint import Problem, first_difference, lint_series_dir, problem_from
from toolkit.model import Pin
from toolkit.options import Options
from toolkit.project import Project


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("check", help="verify pins and lint, apply and re-export every series")
    parser.add_argument("versions", nargs="*", help="versions (default: every pin)")
    parser.add_argument("--no-wheels", action="store_true", help="do not download and verify the stock wheels")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def check_pin(project: Project, pin: Pin, *, wheels: bool = True) -> tuple[list[Problem], dict]:
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


def run(args: argparse.Namespace, options: Options) -> int:
    project = Project.load(options)
    all_problems: list[Problem] = []
    summary = []
    for pin in project.pins.select(args.versions):
        with ui.step(f"check {pin.label}", quiet=options.json):
            problems, facts = check_pin(project, pin, wheels=not args.no_wheels)
        all_problems.extend(problems)
        facts["problems"] = len(problems)
        summary.append(facts)
    if options.json:
        ui.print_json({"ok": not all_problems, "versions": summary, "problems": [p.as_dict() for p in all_problems]})
    else:
        for problem in all_problems:
            print(problem.render())
        for facts in summary:
            series = f"{facts['patches']} patches" if facts["series"] else "no series yet"
            state = "[green]ok[/]" if not facts["problems"] else f"[red]{facts['problems']} problem(s)[/]"
            ui.err.print(f"{project.pins.project} {facts['version']}: {series}, {state}")
    return 1 if all_problems else 0
