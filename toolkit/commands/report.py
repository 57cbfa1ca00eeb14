"""`vpatch report [-i out/] [-o report/]`: the parity report, one static HTML page plus a Markdown summary."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import msgspec
from rich.markup import escape

from toolkit import ui
from toolkit.errors import display_path
from toolkit.options import Options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="write the parity report (index.html and summary.md) from the results of `vpatch ci`"
    )
    parser.add_argument(
        "-i", "--input", type=Path, default=Path("out"), help="where `vpatch ci` wrote ci-summary.json (default: out/)"
    )
    parser.add_argument("-o", "--out", type=Path, default=Path("report"), help="output directory (default: report/)")
    parser.add_argument(
        "--job-summary",
        action="store_true",
        help="also append the Markdown summary to $GITHUB_STEP_SUMMARY when it is set",
    )
    parser.add_argument("--json", action="store_true", help="print what was written as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, options: Options) -> int:
    from toolkit.report import build_report

    input_dir = args.input if args.input.is_absolute() else Path.cwd() / args.input
    out_dir = args.out if args.out.is_absolute() else Path.cwd() / args.out
    written = build_report(input_dir, out_dir, root=options.root)
    report = written.report
    files = [written.html, written.markdown, *([written.story] if written.story else [])]
    summary_target = os.environ.get("GITHUB_STEP_SUMMARY")
    if args.job_summary and summary_target:
        with open(summary_target, "a", encoding="utf-8") as handle:
            handle.write(written.markdown.read_text(encoding="utf-8"))
    if options.json:
        ui.print_json(
            {
                "input": display_path(input_dir),
                "written": [{"path": display_path(p), "bytes": p.stat().st_size} for p in files],
                "project": report.project,
                "started": report.started,
                "job_ok": report.ok,
                "versions": [
                    {
                        "version": v.version,
                        "verdict": v.verdict,
                        "engine": v.decision.engine if v.decision else None,
                        "active_patches": len(v.series.active) if v.series else None,
                        "changed_lines": v.series.changed_lines if v.series else None,
                        "failed_steps": [s.name for s in v.failed_steps],
                        "failed_checks": [f"{c.tier}/{check.name}" for c in v.conformance for check in c.failed],
                    }
                    for v in report.versions
                ],
                "default_switch": msgspec.to_builtins(report.story.switch) if report.story else None,
                "unreadable": report.problems,
            }
        )
        return 0
    for problem in report.problems:
        ui.err.print(f"[yellow]warning[/]: {escape(problem)} (shown in the report)", highlight=False)
    for path in files:
        ui.out.print(f"wrote {display_path(path)} ({path.stat().st_size} bytes)", markup=False, highlight=False)
    return 0
