"""`vpatch export VERSION`: write the checkout's commits back as the version's series."""

from __future__ import annotations

import argparse
from pathlib import Path

from toolkit import ui
from toolkit.apply import am_in_progress
from toolkit.checkout import open_checkout
from toolkit.errors import VpatchError
from toolkit.export import plan_export, write_export
from toolkit.options import Options
from toolkit.project import Project


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="write the commits above the upstream ref back as patch files")
    parser.add_argument("version")
    parser.add_argument("--from", dest="source_dir", type=Path, help="checkout (default: checkouts/vllm-VERSION)")
    parser.add_argument("--dry-run", action="store_true", help="show what would change, write nothing")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, options: Options) -> int:
    project = Project.load(options)
    pin = project.pins.get(args.version)
    path = args.source_dir.resolve() if args.source_dir else project.default_checkout_dir(pin)
    checkout = open_checkout(path)
    if checkout.version != pin.version:
        raise VpatchError(f"{path} is a checkout of {checkout.version}, not {pin.version}")
    if am_in_progress(checkout):
        raise VpatchError(f"{path}: an apply is in progress; finish it (`vpatch apply --continue`) first")
    if not checkout.git.is_clean():
        raise VpatchError(f"{path} has uncommitted changes to tracked files; commit them (or stash) first")
    directory = project.series_dir(pin)
    plan = plan_export(checkout, directory, project.other_series_dirs(pin))  # new numbers: after every release's
    changes = plan.changes()
    if not args.dry_run and changes:
        try:
            write_export(plan)
        except OSError as exc:  # a full disk, a read-only patches/: the swap never happened
            raise VpatchError(
                f"cannot write the series: {exc.strerror or exc}; the series directory is as it was", path=directory
            ) from None
    if options.json:
        ui.print_json(
            {
                "version": str(pin.version),
                "directory": str(directory),
                "patches": list(plan.names),
                "changes": changes,
                "written": bool(changes) and not args.dry_run,
            }
        )
    else:
        if not changes:
            ui.out.print(f"{directory}: up to date ({len(plan.names)} patches)")
        else:
            verb = "would change" if args.dry_run else "changed"
            table = ui.table(f"{directory}: {verb}", ["file", "change"])
            for name, change in changes.items():
                table.add_row(name, change)
            ui.out.print(table)
    return 0
