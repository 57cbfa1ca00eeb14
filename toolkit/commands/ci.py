"""`vpatch ci [--versions ...] [-o out/]`: the main job; the steps CI runs, run the same way locally."""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec

from toolkit import ui
from toolkit.commands.status import print_verdict
from toolkit.errors import VpatchError
from toolkit.options import Options
from toolkit.project import Project
from toolkit.records.status import TERMINAL_STYLE


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ci", help="the main job: verify, check, build, verify, conform; then report")
    parser.add_argument("--versions", nargs="*", help="pinned versions (default: all)")
    parser.add_argument("-o", "--out", type=Path, default=Path("out"), help="output directory (default: out/)")
    parser.add_argument(
        "--tiers",
        default="static,cpu,engine",
        help="conformance tiers (default: static,cpu,engine; engine is not-applicable, with the reason, for a "
        "release without a CPU build that runs here)",
    )
    parser.add_argument(
        "--no-install-check",
        action="store_true",
        help="verify wheels without installing them into fresh venvs (quicker, less proof)",
    )
    parser.add_argument(
        "-j",
        "--jobs",
        type=_jobs,
        default=None,
        help="releases side by side (default: one per core, at most 4)",
    )
    parser.add_argument(
        "--no-reuse",
        action="store_true",
        help="run every step again instead of reusing what an earlier run produced for the same inputs",
    )
    parser.add_argument(
        "--no-upstream-lint",
        action="store_true",
        help="check without vLLM's own linters of each release (`check --lint`: minutes per release when cold)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(run=run)


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of releases, 1 or more; got {text!r}")
    return value


def run(args: argparse.Namespace, options: Options) -> int:
    from toolkit.ci import run_ci

    project = Project.load(options)
    out_dir = args.out if args.out.is_absolute() else Path.cwd() / args.out
    tiers = tuple(t for t in args.tiers.split(",") if t)
    summary = run_ci(
        project,
        args.versions,
        out_dir,
        quiet=options.json,
        tiers=tiers,
        install_check=not args.no_install_check,
        reuse=not args.no_reuse,
        jobs=args.jobs,
        upstream_lint=not args.no_upstream_lint,
    )
    report_note = _report(out_dir, quiet=options.json)
    if options.json:
        ui.print_json({**msgspec.to_builtins(summary), "report": report_note})
    else:
        table = ui.table(
            f"vpatch ci → {out_dir} ({summary.seconds:.0f}s, {summary.jobs} side by side)",
            ["version", "step", "result", "time", "reused", "detail"],
        )
        for version in summary.versions:
            for step in version.steps:
                style = TERMINAL_STYLE[step.status.tone]
                table.add_row(
                    version.version,
                    step.name,
                    f"[{style}]{step.status}[/]",
                    f"{step.seconds:.1f}s",
                    "reused" if step.reused else "",
                    step.detail,
                )
        ui.out.print(table)
        total = sum(len(v.steps) for v in summary.versions)
        ui.out.print(f"{summary.reused_steps} of {total} steps reused from earlier runs (--no-reuse runs them all)")
        for version in summary.versions:
            if version.verdict is None:
                ui.out.print(f"{project.pins.project} {version.version}: no verdict")
            else:  # the verdict, then its line per feature, as `vpatch status` shows them
                print_verdict(project.pins.project, {"version": version.version, "verdict": version.verdict.as_dict()})
        if report_note:
            ui.out.print(report_note)
    report_failed = bool(report_note and report_note.startswith("report failed"))
    return 0 if summary.ok and not report_failed else 1


def _report(out_dir: Path, *, quiet: bool) -> str | None:
    """Render the report when the report module is available (it reads OUT/ci-summary.json)."""
    try:
        from toolkit.report import write_report
    except ImportError:
        return None
    try:
        written = write_report(out_dir, out_dir / "report")
    except VpatchError as error:
        return f"report failed: {error.render()}"
    return f"report: {', '.join(str(p) for p in written)}"
