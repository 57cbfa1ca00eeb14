"""`vpatch conform VERSION [--tier static|cpu|gpu] [-o out/conform]`: dynamo-base vs stock, check by check."""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec

from toolkit import ui
from toolkit.options import Options
from toolkit.project import Project
from toolkit.records.status import TERMINAL_STYLE


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("conform", help="run the conformance suite: stock vLLM vs dynamo-base")
    parser.add_argument("versions", nargs="*", help="versions (default: every pin with a series)")
    parser.add_argument("--tier", choices=("static", "cpu", "gpu"), default="cpu")
    parser.add_argument("-o", "--out", type=Path, default=Path("out/conform"), help="results directory")
    parser.add_argument(
        "--against",
        metavar="OLD",
        help="compare stock VERSION's own KV events with dynamo-base OLD's (retirement evidence)",
    )
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, options: Options) -> int:
    from toolkit.conformance.suite import run_conformance

    project = Project.load(options)
    pins = (
        project.pins.select(args.versions) if args.versions else [p for p in project.pins.pins if project.has_series(p)]
    )
    out_dir = args.out if args.out.is_absolute() else Path.cwd() / args.out
    results = []
    for pin in pins:
        if args.against:
            from toolkit.conformance.suite import run_against

            old = project.pins.get(args.against)
            with ui.step(f"conform {pin.label} against dynamo-base {old.label}", quiet=options.json):
                results.append(run_against(project, pin, old, out_dir))
            continue
        with ui.step(f"conform {pin.label} ({args.tier} tier)", quiet=options.json):
            results.append(run_conformance(project, pin, args.tier, out_dir))
    if options.json:
        ui.print_json({"ok": all(r.ok for r in results), "results": [msgspec.to_builtins(r.record) for r in results]})
    else:
        for result in results:
            table = ui.table(
                f"{project.pins.project} {result.version}: {result.tier} tier ({result.record.seconds:.0f}s)",
                ["check", "result", "detail"],
            )
            for check in result.record.checks:
                style = TERMINAL_STYLE[check.status.tone]
                table.add_row(check.name, f"[{style}]{check.status}[/]", check.detail)
            ui.out.print(table)
            for check in result.record.failed:
                if check.diff:
                    ui.out.print(f"[red]{check.name}[/]:\n{check.diff}")
    return 0 if all(r.ok for r in results) else 1
