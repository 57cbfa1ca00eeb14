"""`vpatch retire PATCH --since NEW`: remove a patch that upstream now carries, recording the evidence."""

from __future__ import annotations

import argparse
from pathlib import Path

from toolkit import ui
from toolkit.errors import VpatchError
from toolkit.options import Options
from toolkit.project import Project


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("retire", help="drop a patch upstream now carries (evidence required)")
    parser.add_argument("patch", help="patch file name, as in the series")
    parser.add_argument("--since", required=True, metavar="NEW", help="the first pinned release that carries it")
    parser.add_argument("--conformance", type=Path, help="a `vpatch conform NEW --against OLD` results file")
    parser.add_argument("--force", action="store_true", help="retire without evidence (needs --reason)")
    parser.add_argument("--reason", help="why, recorded with the retirement")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, options: Options) -> int:
    from toolkit.lifecycle.retire import retire

    if args.force and not args.reason:
        raise VpatchError("--force needs --reason TEXT (it is recorded)")
    result = retire(
        Project.load(options),
        args.patch,
        args.since,
        force=args.force,
        reason=args.reason,
        conformance=args.conformance,
    )
    if options.json:
        ui.print_json(result.__dict__)
    elif result.already:
        ui.out.print(f"{result.patch} already retired since vLLM {result.already}; nothing changed")
    else:
        ui.out.print(f"retired {result.patch} since vLLM {result.since}: " + "; ".join(result.evidence))
        ui.out.print(
            f"removed from: {', '.join(result.removed_from) or '(no later series carried it)'}; "
            f"recorded in: {result.recorded_in or '-'} and CHANGELOG.md"
        )
    return 0
