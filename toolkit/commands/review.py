"""`vpatch review NEW`: rewrite a rebased series' range-diff and evidence after editing it by hand."""

from __future__ import annotations

import argparse

from toolkit import ui
from toolkit.options import Options
from toolkit.project import Project


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "review",
        help="refresh a rebased series' range-diff.txt and evidence.json after it was edited by hand",
    )
    parser.add_argument("version", help="the pinned version whose rebased series was edited")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, options: Options) -> int:
    from toolkit.lifecycle.review import refresh_review

    project = Project.load(options)
    result = refresh_review(project, project.pins.get(args.version))
    if options.json:
        ui.print_json(result.as_dict())
        return 0
    ui.out.print(f"review files of vLLM {result.version} (rebased from {result.old_version}) rewritten")
    for name, change in sorted(result.changes.items()):
        ui.out.print(f"  {name}: {change}")
    if not result.changes:
        ui.out.print("  no evidence entry changed; range-diff.txt rewritten")
    return 0
