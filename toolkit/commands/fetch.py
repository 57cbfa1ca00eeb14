"""`vpatch fetch`: materialize pinned bases (and optionally wheels) into the cache."""

from __future__ import annotations

import argparse
import time

from toolkit import ui
from toolkit.index import fetch_artifact
from toolkit.options import Options
from toolkit.project import Project


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("fetch", help="download and verify pinned sources into the cache")
    parser.add_argument("versions", nargs="*", help="versions (default: every pin)")
    parser.add_argument("--source", choices=("sdist", "git"), help="override each pin's source kind")
    parser.add_argument("--wheels", action="store_true", help="also download the pinned stock wheels")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, options: Options) -> int:
    project = Project.load(options)
    rows: list[dict] = []
    for pin in project.pins.select(args.versions):
        start = time.perf_counter()
        with ui.step(f"fetch {pin.label} ({args.source or pin.source})", quiet=options.json):
            base = project.base(pin, source=args.source)
            wheels = (
                [fetch_artifact(options.cache_dir, w, quiet=options.json) for w in pin.wheels] if args.wheels else []
            )
        rows.append(
            {
                "version": str(pin.version),
                "source": base.source,
                "base_commit": base.commit,
                "cached": base.reused,
                "repo": str(base.repo),
                "wheels": [str(w) for w in wheels],
                "seconds": round(time.perf_counter() - start, 3),
            }
        )
    if options.json:
        ui.print_json(rows)
        return 0
    table = ui.table("bases", ["version", "source", "base commit", "cache", "time"])
    for row in rows:
        table.add_row(
            row["version"],
            row["source"],
            row["base_commit"],
            "reused" if row["cached"] else "built",
            f"{row['seconds']:.2f}s",
        )
    ui.out.print(table)
    return 0
