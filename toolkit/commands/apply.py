"""`vpatch apply VERSION`: a checkout at the pinned base with the series applied as commits."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from toolkit import ui
from toolkit.apply import ApplyResult, abort_apply, apply_series, continue_apply
from toolkit.cache import require_writable_dir
from toolkit.checkout import (
    add_base_objects,
    clear_stale_index_lock,
    create_checkout,
    is_vpatch_checkout,
    open_checkout,
)
from toolkit.errors import VpatchError
from toolkit.options import Options
from toolkit.project import Project


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("apply", help="check out a pinned base and apply its series as commits")
    parser.add_argument("version", nargs="?", help="pinned version (optional with --continue/--abort and --into)")
    parser.add_argument("--into", type=Path, help="checkout directory (default: checkouts/vllm-VERSION)")
    parser.add_argument("--3way", dest="three_way", action="store_true", help="fall back to three-way merges")
    parser.add_argument(
        "--fuzz", type=int, default=0, metavar="N", help="accept up to N lines of mismatched context (default 0)"
    )
    parser.add_argument("--source", choices=("sdist", "git"), help="override the pin's source kind")
    parser.add_argument("--force", action="store_true", help="replace an existing checkout directory")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--continue", dest="resume", action="store_true", help="go on after a manual fix")
    group.add_argument("--abort", action="store_true", help="drop the applied patches: back to the base")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def _target(args: argparse.Namespace, project: Project) -> Path:
    if args.into is not None:
        target = args.into.resolve()
        if target.exists() and not target.is_dir():
            raise VpatchError("--into must name a checkout directory, and this is a file", path=target)
        return target
    if not args.version:
        raise VpatchError("give a VERSION or --into DIR")
    return project.default_checkout_dir(project.pins.get(args.version))


def run(args: argparse.Namespace, options: Options) -> int:
    if not 0 <= args.fuzz <= 3:
        raise VpatchError(f"--fuzz must be between 0 and 3, not {args.fuzz}")
    project = Project.load(options)
    target = _target(args, project)
    if args.resume or args.abort:
        checkout = open_checkout(target)
        note = clear_stale_index_lock(target)
        if note:
            ui.err.print(note)
        if args.version and str(checkout.version) != str(project.pins.get(args.version).version):
            raise VpatchError(f"{target} is a checkout of {checkout.version}, not {args.version}")
        if args.abort:
            abort_apply(checkout)
            ui.err.print(f"aborted: {target} is back at the upstream base {checkout.base_commit[:12]}")
            return 0
        result = continue_apply(checkout)
        return _report(result, options)

    if not args.version:
        raise VpatchError("give the VERSION to apply")
    pin = project.pins.get(args.version)
    series = project.series(pin)
    require_writable_dir(target, "checkout directory")
    if target.exists() and any(target.iterdir()):
        if not args.force:
            hint = "an earlier vpatch checkout" if (target / ".git").exists() else "a directory"
            raise VpatchError(f"{target} already exists ({hint}); export your work, then use --force to replace it")
        if not is_vpatch_checkout(target):  # only replace what vpatch created
            raise VpatchError(
                f"{target} is not a vpatch checkout (no .git/vpatch.json), so --force leaves it alone; "
                "move it away or choose another --into"
            )
        shutil.rmtree(target)
    with ui.step(f"base {pin.label} ({args.source or pin.source})", quiet=options.json):
        base = project.base(pin, source=args.source)
    with ui.step(f"checkout into {target}", quiet=options.json):
        checkout = create_checkout(base, target)
    if args.three_way:
        with ui.step("fetch the other pinned bases for three-way merges", quiet=options.json):
            add_base_objects(checkout, project.other_bases(pin))
    with ui.step(f"apply {len(series.patches)} patch(es)", quiet=options.json):
        result = apply_series(checkout, series, three_way=args.three_way, fuzz=args.fuzz)
    return _report(result, options)


def _report(result: ApplyResult, options: Options) -> int:
    if options.json:
        ui.print_json(
            {
                "version": str(result.checkout.version),
                "checkout": str(result.checkout.path),
                "base_commit": result.checkout.base_commit,
                "ok": result.ok,
                "patches": [o.__dict__ for o in result.outcomes],
            }
        )
    else:
        table = ui.table(
            f"{result.checkout.project} {result.checkout.version} → {result.checkout.path}",
            ["#", "patch", "status", "details"],
        )
        for number, outcome in enumerate(result.outcomes, start=1):
            table.add_row(str(number), outcome.name, ui.styled(outcome.status), "\n".join(outcome.details))
        ui.out.print(table)
        stopped = result.stopped_at
        if stopped:
            ui.err.print(
                f"[red]stopped at {stopped.name}[/]: fix it in {result.checkout.path} with git "
                "(edit, `git add`), then `vpatch apply --continue`; or `vpatch apply --abort`"
            )
    return 0 if result.ok else 1
