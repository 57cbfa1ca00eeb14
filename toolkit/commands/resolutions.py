"""`vpatch resolutions export NEW [--from OLD]`: the rr-cache's resolutions of a rebase onto NEW, into the tree."""

from __future__ import annotations

import argparse

from toolkit import ui
from toolkit.errors import display_path
from toolkit.options import Options
from toolkit.project import Project


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "resolutions", help="conflict resolutions kept in the tree beside a rebased series (resolutions/)"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser(
        "export",
        help="copy the resolutions git rerere recorded for rebases onto NEW into patches/vllm-NEW/resolutions/",
    )
    export.add_argument("version", metavar="NEW", help="the pinned release the rebase went onto")
    export.add_argument("--from", dest="old", metavar="OLD", help="the release rebased from (when several were)")
    export.add_argument("--json", action="store_true")
    export.set_defaults(run=run)


def run(args: argparse.Namespace, options: Options) -> int:
    from toolkit.lifecycle.rebase.rr_export import export_rr_cache

    project = Project.load(options)
    result = export_rr_cache(project, project.pins.get(args.version), args.old)
    if options.json:
        ui.print_json(
            {
                "directory": str(result.directory),
                "old_version": result.old_version,
                "new_version": args.version,
                "written": [{"patch": p, "path": f} for p, f in result.written],
                "kept": [{"patch": p, "path": f} for p, f in result.kept],
                "unresolved": [{"patch": p, "path": f} for p, f in result.unresolved],
            }
        )
        return 0
    where = display_path(result.directory)
    ui.out.print(f"{len(result.written)} resolution(s) of {result.old_version} → {args.version} exported to {where}")
    for label, entries in (("exported", result.written), ("already there", result.kept)):
        for patch, path in entries:
            ui.out.print(f"  {label}: {patch}: {path}", markup=False, highlight=False)
    for patch, path in result.unresolved:
        ui.out.print(f"  not resolved in the rr-cache: {patch}: {path}", markup=False, highlight=False)
    return 0
