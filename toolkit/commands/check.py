"""`vpatch check`: pins verified, series well-formed, applying with zero fuzz, and in sync with re-export."""

from __future__ import annotations

import argparse

from toolkit import ui
from toolkit.check import check_pin
from toolkit.lint import Problem
from toolkit.options import Options
from toolkit.project import Project


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("check", help="verify pins and lint, apply and re-export every series")
    parser.add_argument("versions", nargs="*", help="versions (default: every pin)")
    parser.add_argument("--no-wheels", action="store_true", help="do not download and verify the stock wheels")
    parser.add_argument(
        "--lint",
        action="store_true",
        help="also run vLLM's own linters of that release on the files the series changes (docs/lint.md)",
    )
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, options: Options) -> int:
    project = Project.load(options)
    all_problems: list[Problem] = []
    summary = []
    for pin in project.pins.select(args.versions):
        with ui.step(f"check {pin.label}", quiet=options.json):
            problems, facts = check_pin(project, pin, wheels=not args.no_wheels, lint=args.lint)
        all_problems.extend(problems)
        facts["problems"] = len(problems)
        summary.append(facts)
    if options.json:
        ui.print_json({"ok": not all_problems, "versions": summary, "problems": [p.as_dict() for p in all_problems]})
    else:
        for problem in all_problems:
            print(problem.render())
        for facts in summary:
            for warning in facts.get("warnings", []):
                where = f"{warning['path']}:{warning['line']}" if warning["line"] else warning["path"]
                ui.err.print(f"warning: {where}: {warning['message']}", markup=False, highlight=False)
        for facts in summary:
            series = f"{facts['patches']} patches" if facts["series"] else "no series yet"
            state = "[green]ok[/]" if not facts["problems"] else f"[red]{facts['problems']} problem(s)[/]"
            ui.err.print(f"{project.pins.project} {facts['version']}: {series}, {state}")
            if "lint" in facts:
                ui.err.print(f"  {lint_line(facts['lint'])}")
    return 1 if all_problems else 0


def lint_line(lint: dict) -> str:
    """One line on what the upstream lint ran (or that the release has no lint configuration)."""
    if not lint["configured"]:
        return "lint: the pinned source has no .pre-commit-config.yaml; nothing to lint with"
    found = len(lint["findings"])
    ran = ", ".join(lint["tools"]) or "no hook"
    not_run = f"; not run: {', '.join(s['hook'] for s in lint['skipped'])}" if lint["skipped"] else ""
    upstream = f", {lint['upstream_findings']} on upstream lines not reported" if lint["upstream_findings"] else ""
    ran += "".join(f"; {note}" for note in lint.get("notes", []))
    return f"lint: {found} finding(s) in {lint['files']} file(s){upstream} ({lint['seconds']:.1f}s; {ran}{not_run})"
