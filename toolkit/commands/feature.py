"""`vpatch feature add|list`: declare the features patches belong to, in pins.toml's [features]."""

from __future__ import annotations

import argparse

from toolkit import ui
from toolkit.cache import update_file
from toolkit.errors import VpatchError
from toolkit.features import grouped, is_sub, name_problem, parent_of, sub_of
from toolkit.model import parse_version
from toolkit.options import Options
from toolkit.pins import load_pins, parse_pins


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("feature", help="declare or list the features of the series")
    actions = parser.add_subparsers(dest="feature_command", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="declare a feature (NAME) or a sub-feature (PARENT/SUB) in pins.toml")
    add.add_argument("name", help="kv-routing, or PARENT/SUB for a part that retires on its own")
    add.add_argument("--description", default="", metavar="TEXT", help="what the feature is for")
    add.add_argument("--native-since", metavar="VERSION", help="the first upstream release that has it")
    add.add_argument("--upstream", metavar="TEXT", help="where upstream does it (a PR, a file)")
    add.add_argument("--json", action="store_true")
    add.set_defaults(run=run_add)
    listing = actions.add_parser("list", help="show the declared features")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=run_list)


def run_add(args: argparse.Namespace, options: Options) -> int:
    import tomlkit  # only writers need it

    name, path = args.name, options.pins_file
    problem = name_problem(name)
    if problem is not None:
        raise VpatchError(problem)
    if args.native_since is not None:
        parse_version(args.native_since)

    def change(old: bytes | None) -> bytes:
        if old is None:
            raise VpatchError("no pins.toml yet; `vpatch pin add VERSION` makes it", path=path)
        declared = parse_pins(path, old).features  # validates the file as it is now, under the lock
        if name in declared:
            raise VpatchError(f"feature {name!r} is already declared ({declared[name] or 'no description'})", path=path)
        if is_sub(name) and parent_of(name) not in declared:
            raise VpatchError(
                f"sub-feature {name!r}: declare its parent first (`vpatch feature add {parent_of(name)}`)", path=path
            )
        document = tomlkit.parse(old.decode("utf-8"))
        features = document.get("features")
        if features is None:
            features = tomlkit.table()
            document["features"] = features
        if args.native_since is None and args.upstream is None:
            features[name] = args.description
        else:
            entry = tomlkit.inline_table()
            entry["description"] = args.description
            if args.native_since is not None:
                entry["native-since"] = args.native_since
            if args.upstream is not None:
                entry["upstream"] = args.upstream
            features[name] = entry
        return tomlkit.dumps(document).encode("utf-8")

    update_file(path, change)
    if options.json:
        ui.print_json(
            {
                "feature": name,
                "parent": parent_of(name) if is_sub(name) else None,
                "description": args.description,
                "native_since": args.native_since,
                "upstream": args.upstream,
                "pins": str(path),
            }
        )
    else:
        kind = f"sub-feature {sub_of(name)} of {parent_of(name)}" if is_sub(name) else f"feature {name}"
        ui.out.print(f"declared {kind}" + (f": {args.description}" if args.description else ""))
    return 0


def run_list(args: argparse.Namespace, options: Options) -> int:
    pins = load_pins(options.pins_file)
    info = pins.feature_info
    if options.json:
        ui.print_json(
            [
                {
                    "feature": parent,
                    **info.get(parent, {}),
                    "sub_features": [{"feature": f"{parent}/{sub}", **info[f"{parent}/{sub}"]} for sub in subs],
                }
                for parent, subs in grouped(info).items()
            ]
        )
        return 0
    tops = sum(1 for name in info if not is_sub(name))
    table = ui.table(
        f"{options.pins_file}: {tops} feature(s), {len(info) - tops} sub-feature(s)",
        ["feature", "native since", "upstream", "description"],
    )
    for parent, subs in grouped(info).items():
        for name, label in [(parent, parent), *((f"{parent}/{sub}", f"  /{sub}") for sub in subs)]:
            entry = info.get(name, {})
            table.add_row(
                label, entry.get("native_since") or "-", entry.get("upstream") or "", entry.get("description") or ""
            )
    ui.out.print(table)
    return 0
