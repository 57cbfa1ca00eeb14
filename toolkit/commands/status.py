"""`vpatch status`: pinned versions × patches, with feature and upstream status, the default-engine verdict
(decided by toolkit/verdict.py), and the recommended default per release with the release from which stock
vLLM is the default (the story, toolkit/report/story.py: the same computation as the report's)."""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec

from toolkit import ui
from toolkit.errors import VpatchError
from toolkit.features import grouped, parent_of
from toolkit.options import Options
from toolkit.project import Project
from toolkit.records.story import Story
from toolkit.records.verdict import Verdict, engine_label
from toolkit.verdict import decide


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help="show each pinned version's patches and their upstream status")
    parser.add_argument("versions", nargs="*")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def collect(project: Project, versions: list[str] | None, verdicts: dict[str, Verdict] | None = None) -> list[dict]:
    """One row per selected version; `verdicts` (when given) receives each version's verdict."""
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
                            "parent_feature": parent_of(patch.feature),
                            "upstream_status": status,
                            "files": list(patch.touched_paths),
                        }
                    )
        if series is not None:
            # parent -> the sub-features this release's series carries (toolkit/features.py)
            entry["features"] = grouped(p.feature for p in series.patches if p.feature)
        verdict = decide(project, pin, series)
        if verdicts is not None:
            verdicts[str(pin.version)] = verdict
        entry["verdict"] = verdict.as_dict()
        rows.append(entry)
    return rows


def run(args: argparse.Namespace, options: Options) -> int:
    from rich.markup import escape

    from toolkit.report.story import compute_story

    project = Project.load(options)
    verdicts: dict[str, Verdict] = {}
    rows = collect(project, args.versions, verdicts)
    story = compute_story(project, verdicts)  # every pin: the switch is over all of them
    if options.json:
        ui.print_json(
            {
                "project": project.pins.project,
                "features": project.pins.features,
                "versions": rows,
                "story": msgspec.to_builtins(story),
            }
        )
        return 0
    for row in rows:
        if row.get("error"):
            ui.out.print(f"[bold]{project.pins.project} {row['version']}[/]: [red]{row['error']}[/]")
            continue
        if row["series"] is None:
            print_verdict(project.pins.project, row)
            continue
        if not row["patches"]:
            records = row["verdict"].get("records") or []
            where = Path(row["series"]).name
            why = f"; {', '.join(f'patches/{where}/{r}' for r in records)} says why" if records else ""
            ui.out.print(
                f"{escape(project.pins.project)} {escape(row['version'])}: no patches: the series is empty "
                f"(fingerprint {escape(row['fingerprint'])}{escape(why)})"
            )
            print_verdict(project.pins.project, row)
            continue
        table = ui.table(
            f"{project.pins.project} {row['version']} ({len(row['patches'])} patches, "
            f"fingerprint {row['fingerprint']})",
            ["patch", "feature", "upstream status", "subject"],
        )
        for patch in row["patches"]:
            table.add_row(patch["name"], patch["feature"], patch["upstream_status"], patch["subject"])
        ui.out.print(table)
        print_verdict(project.pins.project, row)
    print_defaults(story, [row["version"] for row in rows])
    return 0


def print_defaults(story: Story, versions: list[str]) -> None:
    """The recommended default per selected release, then the switch: from which release stock vLLM (with or
    without the plugin) is the default, and why; or what still needs dynamo-base at the newest pin."""
    from rich.markup import escape

    ui.out.print("[bold]recommended default[/]")
    for release in story.releases:
        if release.version in versions:
            plugin = f" ({release.plugin})" if release.engine == "stock+plugin" and release.plugin else ""
            ui.out.print(f"  {escape(release.version)}: {escape(engine_label(release.engine) + plugin)}")
    switch = story.switch
    head = f"switch at {switch.release}" if switch.release else "no switch"
    ui.out.print(f"[bold]{escape(head)}[/]: {escape(switch.sentence)}")


def print_verdict(project: str, row: dict) -> None:
    """The release's verdict (engine label first), then one line per feature: which build meets it and why
    (`vpatch ci` prints the same lines)."""
    from rich.markup import escape

    verdict = row["verdict"]
    ui.out.print(f"[bold]{project} {row['version']}[/]: {escape(verdict['summary'])}")
    for feature in verdict.get("feature_verdicts", []):
        plugin = feature.get("plugin")
        wheel = f"; wheel sha256 {plugin['sha256'][:16]}" if plugin else ""
        engine = engine_label(feature.get("engine"))
        ui.out.print(f"  {escape(feature['feature'])} [bold]{engine}[/]: {escape(feature['summary'] + wheel)}")
