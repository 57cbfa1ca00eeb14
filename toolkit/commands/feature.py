"""`vpatch feature add|list`: declare the features patches belong to, in pins.toml's [features]."""

from __future__ import annotations

import argparse
import re

from toolkit import ui
from toolkit.cache import update_file
from toolkit.errors import VpatchError
from toolkit.options import Options
from toolkit.pins import load_pins, parse_pins

# A feature name is a Feature: header value and part of patch file names: one lowercase slug.
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("feature", help="declare or list the features of the series")
    actions = parser.add_subparsers(dest="feature_command", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="declare a feature in pins.toml [features]")
    add.add_argument("name")
    add.add_argument("--description", default="", metavar="TEXT", help="what the feature is for")
    add.add_argument("--json", action="store_true")
    add.set_defaults(run=run_add)
    listing = actions.add_parser("list", help="show the declared features")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=run_list)


def run_add(args: argparse.Namespace, options: Options) -> int:
    import tomlkit  # only writers need it

    name, path = args.name, options.pins_file
    if not _NAME_RE.match(name):
        raise VpatchError(f"feature name {name!r}: use lowercase letters, digits, '.', '_' and '-' (e.g. kv-routing)")

    def change(old: bytes | None) -> bytes:
        if old is None:
            raise VpatchError("no pins.toml yet; `vpatch pin add VERSION` makes it", path=path)
        declared = parse_pins(path, old).features  # validates the file as it is now, under the lock
        if name in declared:
            raise VpatchError(f"feature {name!r} is already declared ({declared[name] or 'no description'})", path=path)
        document = tomlkit.parse(old.decode("utf-8"))
        features = document.get("features")
        if features is None:
            features = tomlkit.table()
            document["features"] = features
        features[name] = args.description
        return tomlkit.dumps(document).encode("utf-8")

    update_file(path, change)
    if options.json:
        ui.print_json({"feature": name, "description": args.description, "pins": str(path)})
    else:
        ui.out.print(f"declared feature {name}" + (f": {args.description}" if args.description else ""))
    return 0


def run_list(args: argparse.Namespace, options: Options) -> int:
    pins = load_pins(options.pins_file)
    if options.json:
        ui.print_json(
            [{"feature": n, **{k: v for k, v in info.items()}} for n, info in sorted(pins.feature_info.items())]
        )
        return 0
    table = ui.table(
        f"{options.pins_file}: {len(pins.features)} feature(s)", ["feature", "native since", "description"]
    )
    for name, info in sorted(pins.feature_info.items()):
        table.add_row(name, info.get("native_since") or "-", info.get("description") or "")
    ui.out.print(table)
    return 0
