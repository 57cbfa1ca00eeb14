"""The `vpatch` command line: parse arguments, load options, dispatch to toolkit.commands.*."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from toolkit import __version__
from toolkit.commands import COMMANDS
from toolkit.errors import VpatchError
from toolkit.git import GitError
from toolkit.options import load_options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vpatch",
        description="Keep the dynamo-base vLLM patch series alive until upstream absorbs it.",
    )
    parser.add_argument("--version", action="version", version=f"vpatch {__version__}")
    parser.add_argument("--root", help="project root (default: nearest directory with patches/pins.toml)")
    parser.add_argument("--patches-dir", help="series directory (default: patches/)")
    parser.add_argument("--cache-dir", help="download and checkout cache (default: ~/.cache/vpatch)")
    parser.add_argument("--checkouts-dir", help="where `apply` creates work trees (default: checkouts/)")
    parser.add_argument("--index-url", help="PEP 691 simple index (default: https://pypi.org/simple)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = load_options(
            {
                "root": args.root,
                "patches_dir": args.patches_dir,
                "cache_dir": args.cache_dir,
                "checkouts_dir": args.checkouts_dir,
                "index_url": args.index_url,
                "json": getattr(args, "json", False),
            }
        )
        return int(args.run(args, options) or 0)
    except VpatchError as error:
        print(f"vpatch: error: {error.render()}", file=sys.stderr)
        return 1
    except GitError as error:
        print(f"vpatch: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vpatch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
