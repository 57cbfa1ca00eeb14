"""The `vpatch` command line: parse arguments, load options, dispatch to toolkit.commands.*."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from toolkit import __version__, exit_codes
from toolkit.commands import COMMAND_MODULES, load_command
from toolkit.errors import VpatchError, display_path
from toolkit.git import GitError
from toolkit.options import Options, load_options
from toolkit.txn import recover, writer_lock

SERIES_WRITERS = frozenset({"export", "import", "rebase", "resolutions", "review", "retire"})
"""Commands that read a series and write it back: one at a time per project."""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, that subcommand is complete and the others are placeholders."""
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
    placeholders: list[str] = []  # a run of names the `only` command's parse needs to know, but not to load
    for name in [*COMMAND_MODULES, None]:
        if name is not None and only is not None and name != only:  # only="": placeholders alone
            placeholders.append(name)
            continue
        if placeholders:  # one parser, the others its aliases (the command is still the name given): a parser
            # costs ~0.25 ms to make; no -h of its own: each help string is a gettext lookup, ~1 ms when loaded
            subparsers.add_parser(placeholders[0], aliases=placeholders[1:], add_help=False)
            placeholders = []
        if name is not None:
            load_command(name).register(subparsers)
    return parser


def requested_command(argv: Sequence[str]) -> str | None:
    """The first argument naming a subcommand (a guess: an option's value could name one too)."""
    return next((arg for arg in argv if arg in COMMAND_MODULES), None)


def main(argv: Sequence[str] | None = None) -> int:
    """The error boundary: every outcome is one line on stderr and an exit code from toolkit.exit_codes."""
    argv = list(sys.argv[1:] if argv is None else argv)
    options: Options | None = None  # the crash log goes to the cache these name, once they are loaded
    try:
        wanted = requested_command(argv)
        if wanted is not None and {"-h", "--help"} & set(argv[: argv.index(wanted)]):
            wanted = None  # `vpatch -h build` is the top-level help, every command listed (as `vpatch -h`)
        if wanted is None and "--version" in argv:
            wanted = ""  # prints and exits while parsing: no command needs loading
        args, unknown = build_parser(wanted).parse_known_args(argv)
        if not hasattr(args, "run"):  # the guess was wrong (a placeholder took the command): every command
            args = build_parser().parse_args(argv)
        elif unknown:  # the guess was right: its parser reports what it does not know
            args = build_parser(wanted).parse_args(argv)
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
        # A transaction a killed run left is finished before anything reads the project.
        for message in recover(options.patches_dir, also_sweep=[options.root]):
            print(f"vpatch: {message}", file=sys.stderr)
        if args.command not in SERIES_WRITERS:
            return int(args.run(args, options) or exit_codes.OK)
        with writer_lock(options.patches_dir):  # concurrent writers of a series take turns
            return int(args.run(args, options) or exit_codes.OK)
    except VpatchError as error:
        print(f"vpatch: error: {error.render()}", file=sys.stderr)
        return exit_codes.FAILED
    except GitError as error:
        print(f"vpatch: error: {error}", file=sys.stderr)
        return exit_codes.FAILED
    except OSError as error:  # the last resort for what a command did not name better: still one line
        where = f"{display_path(Path(str(error.filename)))}: " if error.filename else ""
        print(f"vpatch: error: {where}{error.strerror or error}", file=sys.stderr)
        return exit_codes.FAILED
    except KeyboardInterrupt:
        print("vpatch: interrupted", file=sys.stderr)
        return exit_codes.INTERRUPTED
    except Exception as error:  # a bug: one line for the user, the traceback and versions in the crash log
        from toolkit.crashlog import internal_error_line  # only here: it imports git, platform, traceback

        cache_dir = options.cache_dir if options is not None else None
        print(internal_error_line(error, argv, cache_dir), file=sys.stderr)
        return exit_codes.INTERNAL


def console() -> int:
    """The console script of installs made before `toolkit.console` was it (same run, without its head start)."""
    from toolkit.console import console as run

    return run()


if __name__ == "__main__":
    sys.exit(console())
