"""`vpatch verify WHEEL`: check a dynamo-base wheel against its provenance and the pinned stock wheel."""

from __future__ import annotations

import argparse
from pathlib import Path

from toolkit import ui
from toolkit.errors import VpatchError
from toolkit.options import Options
from toolkit.pins import load_pins
from toolkit.project import Project


def add_install_options(parser: argparse.ArgumentParser) -> None:
    """The install-check switches `verify` and `build` share."""
    parser.add_argument(
        "--no-install-check",
        action="store_true",
        help="verify contents only; skip installing the wheel into fresh venvs",
    )
    parser.add_argument(
        "--no-runtime",
        action="store_true",
        help="import the installed wheel without the cached CPU runtime layer (torch etc.)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("verify", help="verify a built wheel (contents, RECORD, stock members, installs)")
    parser.add_argument("wheels", nargs="+", type=Path)
    parser.add_argument(
        "--reject",
        action="store_true",
        help="move a wheel that fails to rejected/ beside it, so that publishing its directory cannot ship it",
    )
    add_install_options(parser)
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, options: Options) -> int:
    from toolkit.wheel.verify import verify_wheel

    project = Project(options, load_pins(options.pins_file)) if options.pins_file.exists() else None
    reports = []
    for wheel in args.wheels:
        if not wheel.is_file():
            raise VpatchError("no such wheel", path=wheel)
        with ui.step(f"verify {wheel.name}", quiet=options.json) as mark:
            report = verify_wheel(wheel, project, install=not args.no_install_check, runtime=not args.no_runtime)
            mark.failed = not report.ok
        reports.append(report)
        for warning in report.warnings:
            ui.err.print(f"warning: {wheel.name}: {warning}", markup=False, highlight=False)
        if args.reject and not report.ok:
            report.wheel = set_aside(wheel, wheel.parent)
    if options.json:
        ui.print_json({"ok": all(r.ok for r in reports), "wheels": [r.as_dict() for r in reports]})
    else:
        for report in reports:
            table = ui.table(report.wheel.name, ["check", "result", "detail"])
            for check in report.checks:
                table.add_row(check.name, "[green]ok[/]" if check.ok else "[red]failed[/]", check.detail)
            ui.out.print(table)
    return 0 if all(r.ok for r in reports) else 1


REJECTED_DIR = "rejected"


def set_aside(wheel: Path, out_dir: Path) -> Path:
    """Move a wheel that failed verification to OUT/rejected/ (replacing an older one of that name)."""
    target = out_dir / REJECTED_DIR / wheel.name
    target.parent.mkdir(exist_ok=True)
    wheel.replace(target)
    ui.err.print(f"{wheel.name} failed verification: moved to {target}", markup=False, highlight=False)
    return target
