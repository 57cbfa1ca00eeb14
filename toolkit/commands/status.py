"""`vpatch status`: pinned versions × patches, with feature and upstream status, and the default-engine verdict."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from toolkit import ui
from toolkit.errors import VpatchError
from toolkit.model import Pin, Series, parse_patch
from toolkit.options import Options
from toolkit.project import Project

EVIDENCE_FILE = "evidence.json"  # written by `vpatch rebase` beside the series it produced


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help="show each pinned version's patches and their upstream status")
    parser.add_argument("versions", nargs="*")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def collect(project: Project, versions: list[str] | None) -> list[dict]:
    rows = []
    for pin in project.pins.select(versions):
        entry: dict = {"version": str(pin.version), "source": pin.source, "series": None, "patches": []}
        series = None
        if project.has_series(pin):
            try:
                series = project.series(pin)
            except VpatchError as error:
                entry["error"] = error.render()
            else:
                entry["series"] = str(series.directory)
                entry["fingerprint"] = series.fingerprint()
                for patch in series.patches:
                    try:
                        status = str(patch.upstream_status)
                    except ValueError as exc:
                        status = f"invalid: {exc}"
                    entry["patches"].append(
                        {
                            "name": patch.name,
                            "subject": patch.subject,
                            "feature": patch.feature,
                            "upstream_status": status,
                            "files": list(patch.touched_paths),
                        }
                    )
        entry["verdict"] = verdict(project, pin, series)
        rows.append(entry)
    return rows


def verdict(project: Project, pin: Pin, series: Series | None) -> dict:
    """Which engine a launcher should default to for this release, and why.

    dynamo-base while any patch is active; stock when the series is empty because everything was
    retired (an empty series plus the evidence.json a rebase writes, or retired patch records);
    no verdict without a series, or with an empty one nothing explains.
    """
    name = "vLLM" if pin.project == "vllm" else pin.project
    result: dict = {"engine": None, "active_patches": 0, "features": [], "summary": ""}
    if not project.has_series(pin):
        result["summary"] = "no series yet (not rebased)"
    elif series is None:
        result["summary"] = "unknown: the series does not load"
    elif series.patches:
        features = sorted({p.feature or "(no feature)" for p in series.patches})
        count = len(series.patches)
        result.update(engine="dynamo-base", active_patches=count, features=features)
        result["summary"] = (
            f"dynamo-base needed ({count} active patch{'es' if count != 1 else ''}: {', '.join(features)})"
        )
    else:
        records, unexplained = _retirement_records(series.directory)
        if records and not unexplained:
            result.update(engine="stock")
            result["summary"] = f"stock {name} {pin.version} provides every feature; recommended default"
        elif unexplained:
            result["summary"] = (
                f"empty series, but {', '.join(unexplained)} left without upstream evidence; not a verdict for stock"
            )
        else:
            result["summary"] = "empty series, but no evidence.json or retired patches say why; not a verdict for stock"
        result["records"] = records
    return result


def _retirement_records(directory: Path) -> tuple[list[str], list[str]]:
    """What records that this series' patches were retired, and the dropped patches nothing explains.

    Records: an evidence.json (from `vpatch rebase`) that lists dropped patches, now or in the rebases
    before; patches carrying `Retired-Since:`. Unexplained: patches evidence.json lists as dropped
    without any upstream signal (skipped by hand).
    """
    records, unexplained = [], []
    evidence_file = directory / EVIDENCE_FILE
    if evidence_file.is_file():
        try:
            evidence = json.loads(evidence_file.read_text(encoding="utf-8"))
            patches = evidence.get("patches", {})
            unexplained = sorted(n for n, e in patches.items() if not e.get("kept") and not e.get("upstream_signals"))
            if evidence.get("dropped") or evidence.get("earlier"):
                records.append(EVIDENCE_FILE)
        except (OSError, ValueError, AttributeError):
            pass
    for path in sorted([*directory.glob("*.patch"), *directory.glob("retired/*.patch")]):
        try:
            if parse_patch(path).header("Retired-Since") is not None:
                records.append(str(path.relative_to(directory)))
        except VpatchError:
            continue
    return records, unexplained


def run(args: argparse.Namespace, options: Options) -> int:
    project = Project.load(options)
    rows = collect(project, args.versions)
    if options.json:
        ui.print_json({"project": project.pins.project, "features": project.pins.features, "versions": rows})
        return 0
    for row in rows:
        if row.get("error"):
            ui.out.print(f"[bold]{project.pins.project} {row['version']}[/]: [red]{row['error']}[/]")
            continue
        if row["series"] is None:
            ui.out.print(f"[bold]{project.pins.project} {row['version']}[/]: {row['verdict']['summary']}")
            continue
        table = ui.table(
            f"{project.pins.project} {row['version']} ({len(row['patches'])} patches, "
            f"fingerprint {row['fingerprint']})",
            ["patch", "feature", "upstream status", "subject"],
        )
        for patch in row["patches"]:
            table.add_row(patch["name"], patch["feature"], patch["upstream_status"], patch["subject"])
        ui.out.print(table)
        ui.out.print(f"[bold]{project.pins.project} {row['version']}[/]: {row['verdict']['summary']}")
    return 0
