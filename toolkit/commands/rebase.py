"""`vpatch rebase VERSION --onto NEW`: carry VERSION's series to NEW, with review and evidence."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.markup import escape

from toolkit import ui
from toolkit.checkout import Checkout, clear_stale_index_lock, open_checkout, read_state
from toolkit.errors import VpatchError
from toolkit.lifecycle.rebase import (
    RebaseResult,
    abort_rebase,
    continue_rebase,
    default_rebase_dir,
    rebase_state,
    skip_patch,
    start_rebase,
    stopped_patch,
)
from toolkit.lifecycle.rebase.beside import adopt, discard
from toolkit.lifecycle.rebase.complete import BESIDE_SUFFIX
from toolkit.model import Pin, parse_version
from toolkit.options import Options
from toolkit.project import Project
from toolkit.records.outcome import Outcome
from toolkit.resolve import resolve_pin


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rebase", help="replay a version's series onto another release (three-way, rerere) as that release's series"
    )
    parser.add_argument("version", nargs="?", help="the pinned version whose series is replayed")
    parser.add_argument("--onto", metavar="NEW", help="the release to replay onto (pinned first if it is not)")
    parser.add_argument("--into", type=Path, help="checkout directory (default: checkouts/vllm-NEW-rebase)")
    parser.add_argument(
        "--force", action="store_true", help="replace an existing series of NEW, and an existing checkout directory"
    )
    parser.add_argument(
        "--beside",
        action="store_true",
        help="NEW already has a series: write the result to patches/vllm-NEW.rebased/ for review, deleting nothing",
    )
    parser.add_argument(
        "--no-reuse",
        action="store_true",
        help="replay no recorded resolution (rerere off for this rebase): every conflict stops",
    )
    pinning = parser.add_argument_group("pinning NEW when it is not pinned yet (defaults: as VERSION's pin)")
    pinning.add_argument("--source", choices=("sdist", "git"), help="where NEW's base comes from")
    pinning.add_argument("--remote", help="git remote URL")
    pinning.add_argument("--tag", help="git tag (default: vNEW)")
    pinning.add_argument("--commit", help="the commit the tag must point to, when known")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--continue", dest="resume", action="store_true", help="go on after resolving a conflict")
    group.add_argument(
        "--skip",
        action="store_true",
        help="drop the stopped patch from the new series and go on (needs a reason: --reason, or asked for)",
    )
    group.add_argument("--abort", action="store_true", help="give up: the checkout goes back to NEW's base")
    group.add_argument(
        "--adopt", metavar="NEW", help="make the rebase written --beside NEW's series the series (then remove it)"
    )
    group.add_argument("--discard", metavar="NEW", help="remove the rebase written --beside NEW's series")
    parser.add_argument(
        "--reason",
        metavar="TEXT",
        help="with --skip: why the patch is dropped, recorded in evidence.json (asked for on a terminal)",
    )
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, options: Options) -> int:
    project = Project.load(options)
    if args.adopt or args.discard:
        return _adopt_or_discard(args, project, options)
    if args.resume or args.skip or args.abort:
        return _resume(args, project, options)
    if not args.version or not args.onto:
        raise VpatchError("give the VERSION to rebase and --onto NEW (or --continue, --skip, --abort)")
    old_pin = project.pins.get(args.version)
    if not project.has_series(old_pin):
        raise VpatchError(f"{old_pin.label} has no series to rebase ({project.series_dir(old_pin)}/series)")
    new_dir = options.patches_dir / f"{project.pins.project}-{parse_version(args.onto)}"
    if args.beside:
        if not (new_dir / "series").exists():
            raise VpatchError(f"{new_dir} has no series to write beside; rebase without --beside")
        beside = new_dir.with_name(new_dir.name + BESIDE_SUFFIX)
        if (beside / "series").exists() and not args.force:
            raise VpatchError(
                f"{beside} already holds a rebase for review; `vpatch rebase --adopt {args.onto}` or "
                f"`--discard {args.onto}` it first (or --force to replace it)"
            )
    elif (new_dir / "series").exists() and not args.force:  # before pinning anything (checked again later)
        raise VpatchError(
            f"{new_dir} already has a series; use --beside to write the rebased one beside it for review, "
            "or --force to replace it"
        )
    new_pin, pending = _new_pin(args, project, old_pin)
    target = args.into.resolve() if args.into else default_rebase_dir(project, new_pin)
    result = start_rebase(
        project,
        old_pin,
        new_pin,
        target=target,
        force=args.force,
        pending_pin=pending,
        reuse=not args.no_reuse,
        beside=args.beside,
        step=lambda title: ui.step(title, quiet=options.json),
    )
    return _report(result, options)


def _adopt_or_discard(args: argparse.Namespace, project: Project, options: Options) -> int:
    version = str(parse_version(args.adopt or args.discard))
    if args.adopt:
        series = adopt(project, version)
        done = {"adopted": str(series)}
        line = f"adopted the rebase written beside {series.name}: it is now {series}"
    else:
        removed = discard(project, version)
        done = {"discarded": str(removed)}
        line = f"discarded {removed}; {removed.name.removesuffix(BESIDE_SUFFIX)} is unchanged"
    if options.json:
        ui.print_json(done)
    else:
        ui.out.print(line, markup=False, highlight=False)
    return 0


def _new_pin(args: argparse.Namespace, project: Project, old_pin: Pin) -> tuple[Pin, bool]:
    """NEW's pin, and whether it still has to be written (it is, when the rebase completes)."""
    version = parse_version(args.onto)
    if any(p.version == version for p in project.pins.pins):
        return project.pins.get(version), False
    if version == old_pin.version:
        raise VpatchError(f"{old_pin.label}: rebase onto the same version makes no sense")
    pin = resolve_pin(
        project.options,
        version,
        source=args.source or old_pin.source,
        remote=args.remote or old_pin.remote,
        tag=args.tag,
        commit=args.commit,
        project=project.pins.project,
    )
    return pin, True


def _resume(args: argparse.Namespace, project: Project, options: Options) -> int:
    target = _find_checkout(args, project)
    checkout = open_checkout(target)
    note = clear_stale_index_lock(target)
    if note:
        ui.err.print(note)
    state = rebase_state(target)
    if state is None:
        done = read_state(target).get("rebased_from")
        if args.resume and done:  # a rerun after the rebase completed (maybe by recovering a killed run)
            ui.err.print(f"{target}: the rebase from {done} is complete; nothing to continue")
            return 0
        raise VpatchError(f"{target}: no rebase is in progress")
    if args.version and parse_version(args.version) != parse_version(state.old_version):
        raise VpatchError(f"{target} rebases {state.old_version}, not {args.version}")
    if args.abort:
        abort_rebase(project, checkout)
        if options.json:
            ui.print_json({"aborted": True, "checkout": str(target), "base_commit": checkout.base_commit})
        else:
            ui.err.print(
                f"aborted: {target} is back at the {state.new_version} base {checkout.base_commit[:12]}; "
                "patches/ is unchanged"
            )
        return 0
    if args.reason is not None and not args.skip:
        raise VpatchError("--reason goes with --skip (why the skipped patch is dropped)")
    reason = _skip_reason(args, checkout) if args.skip else ""
    with ui.step("replay the rest of the series", quiet=options.json):
        if args.skip:
            result = skip_patch(project, checkout, reason)
        else:
            result = continue_rebase(project, checkout, force=args.force)
    return _report(result, options)


def _skip_reason(args: argparse.Namespace, checkout: Checkout) -> str:
    """--reason, or asked for on a terminal; a skip without one is refused (evidence.json records it)."""
    if args.reason is not None:
        return str(args.reason)
    name = stopped_patch(checkout) or "the stopped patch"
    if sys.stdin.isatty() and sys.stderr.isatty():
        ui.err.print(f"why does {name} leave the series? ", end="", markup=False, highlight=False)
        try:
            answer = input()
        except EOFError:
            answer = ""
        if answer.strip():
            return answer
    raise VpatchError(f"--skip needs --reason TEXT: why {name} leaves the series (recorded in evidence.json)")


def _find_checkout(args: argparse.Namespace, project: Project) -> Path:
    if args.into is not None:
        return args.into.resolve()
    if args.onto:
        version = parse_version(args.onto)
        pinned = [p for p in project.pins.pins if p.version == version]
        if pinned:
            return default_rebase_dir(project, pinned[0])
        return project.options.checkouts_dir / f"{project.pins.project}-{version}-rebase"
    root = project.options.checkouts_dir
    found = []
    if root.is_dir():
        # `<project>-NEW-rebase`, or a checkout a `--beside --into checkouts/DIR` rebase made
        for candidate in sorted(p for p in root.iterdir() if p.is_dir()):
            try:
                if rebase_state(candidate) is not None:
                    found.append(candidate)
            except VpatchError:
                continue
    if len(found) == 1:
        return found[0]
    if not found:
        raise VpatchError(f"no rebase in progress under {root}; give --into DIR")
    raise VpatchError(f"rebases in progress in {', '.join(str(p) for p in found)}; say which with --onto or --into")


def _report(result: RebaseResult, options: Options) -> int:
    if options.json:
        ui.print_json(result.as_dict())
        return 0 if result.done else 1
    table = ui.table(
        f"rebase {result.old_version} → {result.new_version} ({result.checkout.path})",
        ["#", "patch", "outcome", "details", "upstream evidence"],
    )
    patches = result.evidence.patches if result.evidence else {}
    for number, outcome in enumerate(result.outcomes, start=1):
        entry = patches.get(outcome.name)
        signals = ", ".join(entry.upstream_signals if entry else [])
        status = ui.styled(outcome.status) + (" (changed)" if outcome.content_changed else "")
        table.add_row(str(number), outcome.name, status, "\n".join(outcome.details), signals)
    ui.out.print(table)
    if not result.done:
        stopped = result.stopped
        assert stopped is not None
        if stopped.upstream_has_it:
            what = "upstream has it"
        else:
            what = "conflict" if stopped.status == Outcome.CONFLICT else "does not apply"
        ui.err.print(f"[red]stopped at {stopped.name}[/] ({what}):", markup=True)
        for line in stopped.details:
            ui.err.print(f"  {line}", markup=False, highlight=False)
        if stopped.upstream_has_it:
            ui.err.print(
                "upstream has it: `vpatch rebase --continue` keeps NEW's version (the patch is left out, empty), "
                "`vpatch rebase --skip --reason TEXT` drops it as skipped; either way evidence.json records where "
                f"NEW has each hunk. Or resolve it by hand in {result.checkout.path} (edit, `git add`) and continue",
                markup=False,
                highlight=False,
            )
            return 1
        ui.err.print(
            f"resolve it in {result.checkout.path} with git (edit, `git add`), then `vpatch rebase --continue`; "
            "or `vpatch rebase --skip --reason TEXT` to drop this patch, `vpatch rebase --abort` to give up",
            markup=False,
        )
        return 1
    ui.out.print("range-diff (old series on the old base vs new series on the new base):")
    ui.out.print(result.range_diff or "(empty)", markup=False, highlight=False)
    kept = len(result.outcomes) - len(result.dropped)
    dropped = f"; left out: {', '.join(result.dropped)}" if result.dropped else ""
    pinned = " (and pinned it)" if result.pinned else ""
    ui.out.print(f"wrote {result.series_dir} ({kept} patches{dropped}){pinned}", markup=False, highlight=False)
    if result.series_dir is not None and result.series_dir.name.endswith(BESIDE_SUFFIX):
        version = result.new_version
        ui.out.print(
            f"review it beside {result.series_dir.name.removesuffix(BESIDE_SUFFIX)}, then "
            f"`vpatch rebase --adopt {version}` or `vpatch rebase --discard {version}`",
            markup=False,
            highlight=False,
        )
    warnings = result.evidence.warnings if result.evidence else []
    for warning in warnings or []:
        ui.err.print(f"[yellow]warning:[/] {escape(warning)}", markup=True, highlight=False)
    return 0
