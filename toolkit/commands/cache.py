"""`vpatch cache info` and `vpatch cache gc`: what the cache holds per area, and clearing what was not used lately.

gc removes entries unused for `--older-than` days (default 30; 0 removes every entry not in use), never one another
vpatch process holds, and keeps the downloads of pinned artifacts unless `--include-pinned`. `--dry-run` lists
what it would remove. Outside a project (no pins.toml) nothing counts as pinned.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

from toolkit import ui
from toolkit.errors import VpatchError
from toolkit.options import Options

DEFAULT_DAYS = 30.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cache", help="what the cache holds (info) and clearing what is unused (gc)")
    actions = parser.add_subparsers(dest="cache_action", metavar="ACTION", required=True)
    info = actions.add_parser("info", help="size and entries per area, and what gc would remove")
    info.add_argument("--older-than", type=_days, default=DEFAULT_DAYS, metavar="DAYS")
    info.add_argument("--json", action="store_true")
    info.set_defaults(run=run_info)
    gc = actions.add_parser("gc", help="remove entries not used for --older-than days (none another run holds)")
    gc.add_argument("--older-than", type=_days, default=DEFAULT_DAYS, metavar="DAYS", help="default 30; 0: all")
    gc.add_argument("--include-pinned", action="store_true", help="also the downloads of pinned artifacts")
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    gc.add_argument("--json", action="store_true")
    gc.set_defaults(run=run_gc)


def _days(text: str) -> float:
    try:
        days = float(text.removesuffix("d"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if days < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: days cannot be negative")
    return days


def _pinned(options: Options) -> frozenset[str]:
    from toolkit.pins import load_pins

    if not options.pins_file.is_file():
        return frozenset()
    pins = load_pins(options.pins_file)
    shas = set()
    for pin in pins.pins:
        artifacts = [pin.sdist, *pin.wheels, *(w for f in pin.flavors for w in f.wheels)]
        shas |= {a.sha256 for a in artifacts if a is not None}
    return frozenset(shas)


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def run_info(args: argparse.Namespace, options: Options) -> int:
    from toolkit.cache_gc import entries, summarize

    found = entries(options.cache_dir, _pinned(options))
    summaries = summarize(found, args.older_than, time.time())
    if options.json:
        areas = [asdict(s) for s in summaries]
        ui.print_json({"cache": str(options.cache_dir), "older_than_days": args.older_than, "areas": areas})
        return 0
    table = ui.table(f"{options.cache_dir}", ["area", "entries", "size", f"unused ≥ {args.older_than:g} days"])
    for s in summaries:
        table.add_row(s.area, str(s.entries), _size(s.size), f"{s.removable} ({_size(s.removable_size)})")
    ui.out.print(table)
    total, unused = sum(s.size for s in summaries), sum(s.removable_size for s in summaries)
    ui.out.print(f"total {_size(total)}; `vpatch cache gc --older-than {args.older_than:g}` frees {_size(unused)}")
    return 0


def run_gc(args: argparse.Namespace, options: Options) -> int:
    from toolkit.cache_gc import collect, entries

    if not options.cache_dir.is_dir():
        raise VpatchError("no cache here", path=options.cache_dir)
    found = entries(options.cache_dir, _pinned(options))
    sweep = collect(options.cache_dir, found, args.older_than, include_pinned=args.include_pinned, dry_run=args.dry_run)
    if options.json:
        ui.print_json(
            {
                "dry_run": args.dry_run,
                "removed": [{"area": e.area, "path": str(e.path), "size": e.size} for e in sweep.removed],
                "busy": [str(e.path) for e in sweep.busy],
                "freed": sweep.freed,
            }
        )
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for entry in sweep.removed:
        print(f"{verb} {entry.area}/{entry.path.name} ({_size(entry.size)})")
    for entry in sweep.busy:
        print(f"kept {entry.area}/{entry.path.name}: another vpatch process holds it")
    print(f"{verb} {len(sweep.removed)} entries, {_size(sweep.freed)}")
    return 0
