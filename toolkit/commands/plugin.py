"""`vpatch plugin build [VERSION] [-o dist/]`: the dynamo-base plugin wheel, installed beside stock vLLM."""

from __future__ import annotations

import argparse
from pathlib import Path

from toolkit import ui
from toolkit.options import Options
from toolkit.project import Project


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plugin", help="the dynamo-base plugin: what stock vLLM lacks, as a package beside it (docs/plugin.md)"
    )
    actions = parser.add_subparsers(dest="plugin_action", required=True, metavar="ACTION")
    build = actions.add_parser(
        "build",
        help="build the plugin wheel (pure Python, versioned with the series, reproducible)",
        description="Build dynamo_base_plugin-<VERSION>+plugin.<fingerprint>-py3-none-any.whl: load metrics for "
        "stock vLLM >= 0.9.0 (a stat logger publishing over ZMQ). Install it beside stock vLLM with pip or uv.",
    )
    build.add_argument("version", nargs="?", help="the pinned vLLM version whose series it goes with (default: newest)")
    build.add_argument("-o", "--out", type=Path, default=Path("dist"), help="output directory (default: dist/)")
    build.add_argument("--json", action="store_true")
    build.set_defaults(run=run)


def run(args: argparse.Namespace, options: Options) -> int:
    from toolkit.plugin.build import build_plugin

    project = Project.load(options)
    out_dir = args.out if args.out.is_absolute() else Path.cwd() / args.out
    built = build_plugin(project, args.version, out_dir)
    info = built.provenance
    if options.json:
        ui.print_json(
            {
                "wheel": str(built.path),
                "version": str(built.version),
                "size": built.size,
                "sha256": built.sha256,
                "vllm": info["vllm"]["supports"],
                "series_version": info["vllm"]["series_version"],
                "entry_points": info["entry_points"],
            }
        )
    else:
        ui.out.print(f"built {built.path} ({built.size} bytes) for vLLM {info['vllm']['supports']}")
    return 0
