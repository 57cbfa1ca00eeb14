"""`vpatch conform VERSION [--tier static|cpu|gpu|engine] [-o out/conform]`: dynamo-base vs stock, check by check."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
from rich.markup import escape

from toolkit import ui
from toolkit.errors import VpatchError
from toolkit.options import Options
from toolkit.project import Project
from toolkit.records.contract import ContractResults
from toolkit.records.status import TERMINAL_STYLE

if TYPE_CHECKING:
    from toolkit.model import Pin


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("conform", help="run the conformance suite: stock vLLM vs dynamo-base")
    parser.add_argument("versions", nargs="*", help="versions (default: every pin with a series)")
    parser.add_argument("--tier", choices=("static", "cpu", "gpu", "engine"), default="cpu")
    parser.add_argument(
        "--engine-parts",
        default="parity,kv-routing,pd-disagg,serve",
        help="--tier engine: the parts to run (parity, kv-routing, pd-disagg, serve; serve needs pd-disagg)",
    )
    parser.add_argument("-o", "--out", type=Path, default=Path("out/conform"), help="results directory")
    parser.add_argument(
        "--against",
        metavar="OLD",
        nargs="?",
        const="",
        help="judge the feature contracts on stock VERSION and on dynamo-base OLD, end to end over real sockets "
        "(retirement evidence; OLD defaults to the last release that carried the feature)",
    )
    parser.add_argument(
        "--new-kind",
        choices=("stock", "stock+plugin"),
        default=None,
        help="--against: the build of VERSION (default stock); with --tier engine: the feature contracts on stock "
        "VERSION's CPU build (with the plugin beside it) on real engines, the evidence for a release whose series "
        "is empty",
    )
    parser.add_argument(
        "--plugin-wheel",
        type=Path,
        action="append",
        default=[],
        help="--against --new-kind stock+plugin: a wheel installed beside VERSION (default: `vpatch plugin build "
        "VERSION`, built now)",
    )
    parser.add_argument("--features", default="kv-routing,pd-disagg", help="--against: the contracts to judge")
    parser.add_argument(
        "--configs", default="all", help="--against: transport configurations (bind|loopback)-(builtin|sha256), or all"
    )
    parser.add_argument("--workloads", help="--against: the scenario runner's workloads (comma-separated)")
    parser.add_argument(
        "--save", action="store_true", help="--against: also write the evidence to patches/conformance/"
    )
    parser.add_argument(
        "--no-reuse",
        action="store_true",
        help="run the stock side of the cpu tier again and read the wheels' API surfaces again, instead of "
        "reusing what an earlier run of the same inputs produced",
    )
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, options: Options) -> int:
    from toolkit.conformance.suite import run_conformance

    project = Project.load(options)
    pins = (
        project.pins.select(args.versions) if args.versions else [p for p in project.pins.pins if project.has_series(p)]
    )
    out_dir = args.out if args.out.is_absolute() else Path.cwd() / args.out
    if args.against is not None:
        return run_against(project, pins, args, options, out_dir)
    if args.new_kind is not None:
        if args.tier != "engine":
            raise VpatchError("--new-kind needs --against OLD or --tier engine")
        return run_engine_contracts(project, pins, args, options, out_dir)
    if args.plugin_wheel or args.save:
        raise VpatchError("--plugin-wheel and --save need --against or --tier engine --new-kind")
    parts = _engine_parts(args.engine_parts)
    results = []
    for pin in pins:
        with ui.step(f"conform {pin.label} ({args.tier} tier)", quiet=options.json):
            results.append(
                run_conformance(project, pin, args.tier, out_dir, engine_parts=parts, reuse=not args.no_reuse)
            )
    if options.json:
        ui.print_json({"ok": all(r.ok for r in results), "results": [msgspec.to_builtins(r.record) for r in results]})
    else:
        for result in results:
            table = ui.table(
                f"{project.pins.project} {result.version}: {result.tier} tier ({result.record.seconds:.0f}s)",
                ["check", "result", "detail"],
            )
            for check in result.record.checks:
                style = TERMINAL_STYLE[check.status.tone]
                table.add_row(check.name, f"[{style}]{check.status}[/]", check.detail)
            ui.out.print(table)
            for check in result.record.failed:
                if check.diff:
                    ui.out.print(f"[red]{check.name}[/]:\n{check.diff}")
    return 0 if all(r.ok for r in results) else 1


def _engine_parts(text: str) -> tuple[str, ...]:
    from toolkit.conformance.engine_tier import PARTS

    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        named = ", ".join(unknown) or "(none)"
        raise VpatchError(f"--engine-parts: unknown part {named} (expected {', '.join(PARTS)})")
    return parts


def run_against(project: Project, pins: list, args: argparse.Namespace, options: Options, out_dir: Path) -> int:
    from toolkit.contracts.conform import conform_against, default_old, parse_features
    from toolkit.contracts.sides import parse_configs
    from toolkit.records.contract import BuildSpec

    args.new_kind = args.new_kind or "stock"
    features = parse_features(args.features)
    configs = parse_configs(args.configs)
    workloads = [w for w in (args.workloads or "").split(",") if w] or None
    if args.plugin_wheel and args.new_kind != "stock+plugin":
        raise VpatchError("--plugin-wheel needs --new-kind stock+plugin")
    runs = _Runs(options)
    for pin in pins:
        old_pin = project.pins.get(args.against) if args.against else default_old(project, pin, features[0])
        wheels = _plugin_wheels(project, pin, args)
        new = BuildSpec(str(pin.version), args.new_kind, tuple(str(w) for w in wheels))
        old = BuildSpec(str(old_pin.version), "dynamo-base")
        with ui.step(f"contracts of {new.label} against {old.label}", quiet=options.json):
            results, paths = conform_against(
                project,
                new,
                old,
                features=features,
                configs=configs,
                out_dir=out_dir,
                workloads=workloads,
                save=args.save,
            )
        runs.add(results, paths)
    return runs.finish()


def run_engine_contracts(
    project: Project, pins: list, args: argparse.Namespace, options: Options, out_dir: Path
) -> int:
    from toolkit.contracts.conform import parse_features
    from toolkit.contracts.engine_stock import engine_contracts

    features = parse_features(args.features)
    if args.plugin_wheel and args.new_kind != "stock+plugin":
        raise VpatchError("--plugin-wheel needs --new-kind stock+plugin")
    runs = _Runs(options)
    for pin in pins:
        wheels = _plugin_wheels(project, pin, args)
        with ui.step(f"engine contracts of {args.new_kind} {pin.version}", quiet=options.json):
            results, paths = engine_contracts(
                project, pin, args.new_kind, wheels, out_dir, features=features, save=args.save
            )
        runs.add(results, paths)
    return runs.finish()


def _plugin_wheels(project: Project, pin: Pin, args: argparse.Namespace) -> list[Path]:
    """The plugin wheels beside stock `pin`: --plugin-wheel, else with --new-kind stock+plugin the plugin of the
    pin's series, built now."""
    wheels = [w.resolve() for w in args.plugin_wheel]
    if args.new_kind == "stock+plugin" and not wheels:
        from toolkit.plugin.build import plugin_wheel

        wheels = [plugin_wheel(project, str(pin.version))]
    return wheels


class _Runs:
    """The contract results of each pin: shown as they come, or with --json printed together at the end."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.documents: list[dict] = []
        self.ok = True

    def add(self, results: ContractResults, paths: list[Path]) -> None:
        self.ok = self.ok and results.ok
        self.documents.append(msgspec.to_builtins(results))
        if not self.options.json:
            _show(results, paths)

    def finish(self) -> int:
        """The exit code: 0 when every result is ok, else 1."""
        if self.options.json:
            ui.print_json({"ok": self.ok, "results": self.documents})
        return 0 if self.ok else 1


def _show(results: ContractResults, paths: list[Path]) -> None:
    new, old = results.new, results.old
    table = ui.table(f"{new.label} against {old.label} ({results.seconds:.0f}s)", ["run", "item", "result", "detail"])
    for run in results.runs:
        for item in run.items:
            style = TERMINAL_STYLE[item.status.tone]
            table.add_row(run.name, item.key, f"[{style}]{item.status.label}[/]", escape(item.detail))
    ui.out.print(table)
    for plugin in results.new.plugins:
        ui.out.print(
            f"plugin beside {results.new.label}: {escape(plugin.label)} ({escape(plugin.file)}, sha256 {plugin.sha256})"
        )
    for compared in results.figures_vs_old or []:  # (none for the engine contracts)
        equal = ", ".join(f"{key} {n}" for key, n in compared.equal.items())
        ui.out.print(
            f"figures against {old.label} ({compared.config}): {compared.steps} steps scheduled alike; "
            f"equal on: {equal}"
        )
    for run in results.runs:
        for item in run.items:
            if item.diff:
                ui.out.print(f"[red]{run.name} {item.key}[/]:\n{escape(item.diff)}")
    ui.out.print("written: " + ", ".join(str(p) for p in paths))
