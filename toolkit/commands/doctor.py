"""`vpatch doctor [--python PATH]`: is the installed vLLM stock or dynamo-base, and is it intact?

Exit codes for launchers: 0 dynamo-base (intact), 3 stock vLLM, 4 damaged, 5 not installed.
"""

from __future__ import annotations

import argparse

from toolkit import ui
from toolkit.doctor import Diagnosis, diagnose
from toolkit.options import Options
from toolkit.pins import load_pins


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="inspect the vLLM installed in an interpreter (exit 0 dynamo-base, 3 stock, 4 damaged, 5 missing)",
    )
    parser.add_argument("--python", help="interpreter to inspect (default: this one)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, options: Options) -> int:
    features = load_pins(options.pins_file).feature_info if options.pins_file.exists() else {}
    result = diagnose(args.python, features)
    default = _stock_default(result, options)
    if options.json:
        ui.print_json({**result.as_dict(), **({"stock_default": default} if default else {})})
        return result.exit_code
    title = {
        "dynamo-base": "[green]dynamo-base[/]",
        "stock": "[yellow]stock vLLM[/]",
        "damaged": "[red]damaged[/]",
        "missing": "[red]not installed[/]",
    }[result.state]
    ui.out.print(f"{result.python}: {title} {result.name} {result.version} {result.location}")
    if result.patches:
        table = ui.table("patches", ["patch", "feature", "upstream status"])
        for patch in result.patches:
            table.add_row(patch["file"], patch["feature"], patch["upstream_status"])
        ui.out.print(table)
    if result.features:
        ui.out.print("features: " + ", ".join(result.features))
    if default is not None:
        ui.out.print(f"[green]pinned {default['version']}:[/] {default['summary']}", highlight=False)
        plugin = default.get("plugin")
        if plugin is not None:
            seen = default.get("plugin_installed")
            state = f"[green]installed ({seen})[/]" if seen else "[yellow]not installed in this interpreter[/]"
            ui.out.print(f"plugin {plugin}: {state}", highlight=False)
    for warning in result.warnings:
        ui.out.print(f"[yellow]warning:[/] {warning}")
    for problem in result.problems:
        ui.out.print(f"[red]problem:[/] {problem}")
    return result.exit_code


def _stock_default(result: Diagnosis, options: Options) -> dict | None:
    """For stock vLLM of a pinned release whose verdict is stock or stock + plugin: that verdict (the feature
    warnings of native-since are then beside the point: they are dropped) and whether the plugin is installed."""
    if result.state != "stock" or not options.pins_file.exists():
        return None
    from packaging.version import InvalidVersion, Version

    from toolkit.project import Project
    from toolkit.verdict import decide

    project = Project.load(options)
    try:
        release = Version(result.version).release
    except InvalidVersion:
        return None
    pin = next((p for p in project.pins.pins if p.version.release == release and not p.version.local), None)
    if pin is None or not project.has_series(pin):
        return None
    verdict = decide(project, pin, project.series(pin))
    if verdict.engine not in ("stock", "stock+plugin"):
        return None
    result.warnings = []
    found: dict = {"version": str(pin.version), "engine": verdict.engine, "summary": verdict.summary}
    if verdict.engine == "stock+plugin" and verdict.plugin is not None:
        found["plugin"] = verdict.plugin.name
        found["plugin_installed"] = _installed_version(result.python, verdict.plugin.name)
    return found


def _installed_version(python: str, dist: str) -> str | None:
    import subprocess

    code = (
        "import importlib.metadata as m, sys\ntry: print(m.version(sys.argv[1]))\nexcept m.PackageNotFoundError: pass"
    )
    proc = subprocess.run([python, "-c", code, dist], capture_output=True, text=True, timeout=60, check=False)
    return proc.stdout.strip() or None
