"""`vpatch doctor [--python PATH]`: is the installed vLLM stock or dynamo-base, and is it intact?

Exit codes for launchers: 0 dynamo-base (intact), 3 stock vLLM, 4 damaged, 5 not installed.
"""

from __future__ import annotations

import argparse

from toolkit import ui
from toolkit.doctor import diagnose
from toolkit.options import Options
from toolkit.pins import load_pins


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="inspect the vLLM installed in an interpreter (exit 0 dynamo-base, 3 stock, 4 damaged, 5 missing)",
    )
    parser.add_argument("--python", help="interpreter to inspect (default: this one)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, options: Options) -> int:
    features = load_pins(options.pins_file).feature_info if options.pins_file.exists() else {}
    result = diagnose(args.python, features)
    if options.json:
        ui.print_json(result.as_dict())
        return result.exit_code
    title = {
        "dynamo-base": "[green]dynamo-base[/]",
        "stock": "[yellow]stock vLLM[/]",
        "damaged": "[red]damaged[/]",
        "missing": "[red]not installed[/]",
    }[result.state]
    ui.out.print(f"{result.python}: {title} {result.name} {result.version} {result.location}")
    if result.patches:
        table = ui.table("patches", ["patch", "feature", "upstream status"])
        for patch in result.patches:
            table.add_row(patch["file"], patch["feature"], patch["upstream_status"])
        ui.out.print(table)
    if result.features:
        ui.out.print("features: " + ", ".join(result.features))
    for warning in result.warnings:
        ui.out.print(f"[yellow]warning:[/] {warning}")
    for problem in result.problems:
        ui.out.print(f"[red]problem:[/] {problem}")
    return result.exit_code
