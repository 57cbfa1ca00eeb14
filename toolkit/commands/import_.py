"""`vpatch import SOURCE --version V`: adopt an existing fork or patch as new patches of V's series."""

from __future__ import annotations

import argparse
from pathlib import Path

from toolkit import tempnames, ui
from toolkit.errors import VpatchError
from toolkit.options import Options
from toolkit.project import Project

# As toolkit.importer.SPLIT_MODES (imported only when `vpatch import` runs; a unit test keeps them equal).
SPLIT_CHOICES = ("none", "per-file", "per-dir")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import",
        help="adopt a patch, mbox, git range or wheel/sdist pair as new patches of a series",
        description=(
            "Append the changes of a patch or mbox file (plain `diff -ruN`, `git diff` or format-patch mails), "
            "a git range (--git REPO A..B) or a wheel/sdist pair (--base/--fork) to a version's series. "
            "Nothing is written unless every change applies with zero fuzz to the pinned base."
        ),
    )
    parser.add_argument("source", nargs="?", type=Path, help="a patch or mbox file")
    parser.add_argument(
        "--git", nargs=2, metavar=("REPO", "RANGE"), help="import the commits A..B of a local repository"
    )
    parser.add_argument(
        "--base", metavar="PATH_OR_REQ", help="stock wheel or sdist: a path or NAME==VERSION (default: the pin's)"
    )
    parser.add_argument("--fork", metavar="PATH_OR_REQ", help="forked wheel or sdist: a path or NAME==VERSION")
    parser.add_argument(
        "--version", dest="target_version", required=True, metavar="V", help="the pinned version whose series grows"
    )
    parser.add_argument(
        "--split",
        choices=SPLIT_CHOICES,
        default="none",
        help="one patch per mail/commit/diff (none, the default), per changed file, or per directory",
    )
    parser.add_argument(
        "--feature",
        action="append",
        default=[],
        metavar="NAME|GLOB=NAME",
        help="NAME: the feature of every file no rule matches (default: each mail's own Feature: header); "
        "GLOB=NAME: files whose path matches GLOB belong to NAME (repeatable; `**` spans directories)",
    )
    parser.add_argument(
        "--feature-map",
        type=Path,
        metavar="FILE",
        help="rules from a file: plain text `GLOB NAME` lines, or TOML (.toml) with a [map] table of "
        '"GLOB" = "NAME"; --feature GLOB=NAME flags are tried first',
    )
    parser.add_argument(
        "--upstream-status", metavar="TEXT", help="Upstream-Status: header (default: the mail's own, else Pending)"
    )
    parser.add_argument("--subject", metavar="TEXT", help="subject of the new patch (default: the mail's, or Import X)")
    parser.add_argument(
        "--author",
        metavar="'NAME <EMAIL>'",
        help="author of the new patches (default: the mail's or commit's; required for plain diffs and archives)",
    )
    parser.add_argument(
        "--date",
        metavar="ISO-DATE",
        help="author date of the new patches, e.g. 2025-04-01 (default: the mail's or commit's; required for plain "
        "diffs and archives; `now` for the current time)",
    )
    parser.add_argument(
        "--allow-offset", action="store_true", help="accept hunks that apply at other lines than written"
    )
    parser.add_argument("--dry-run", action="store_true", help="check and show the new patches, write nothing")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, options: Options) -> int:
    from rich.markup import escape

    from toolkit.importer import (
        FileSource,
        GitRangeSource,
        ImportOptions,
        PairSource,
        UnmatchedChanges,
        import_into_series,
        load_feature_map,
        resolve_archive,
        rules_from_flags,
    )
    from toolkit.importer.messages import parse_date

    project = Project.load(options)
    pin = project.pins.get(args.target_version)
    scratch = options.cache_dir / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    tempnames.sweep(scratch)  # scratch files of killed imports
    kinds = [k for k, given in (("SOURCE", args.source), ("--git", args.git), ("--fork", args.fork)) if given]
    if len(kinds) != 1:
        raise VpatchError(
            "give exactly one source: a patch file, --git REPO A..B, or --fork (with --base)"
            + (f" (got {', '.join(kinds)})" if kinds else "")
        )
    if args.base and not args.fork:
        raise VpatchError("--base needs --fork")
    if args.source is not None:
        source: FileSource | GitRangeSource | PairSource = FileSource(args.source, scratch)
    elif args.git:
        source = GitRangeSource(Path(args.git[0]), args.git[1])
    else:
        fork_path = Path(args.fork).expanduser()
        prefer = "sdist" if fork_path.is_file() and not fork_path.name.endswith(".whl") else "wheel"
        fork = resolve_archive(args.fork, project, prefer=prefer)
        base_spec = args.base or f"{project.pins.project}=={pin.version}"
        base = resolve_archive(base_spec, project, prefer=fork.kind, wheel_like=fork.path)
        source = PairSource(base, fork, project.pins.project, scratch)
    default_feature, rules = rules_from_flags(args.feature)
    if args.feature_map is not None:
        rules.extend(load_feature_map(args.feature_map))
    settings = ImportOptions(
        split=args.split,
        feature=default_feature,
        feature_rules=tuple(rules),
        upstream_status=args.upstream_status,
        subject=args.subject,
        author=args.author,
        date=parse_date(args.date) if args.date else None,
        allow_offset=args.allow_offset,
        dry_run=args.dry_run,
    )
    try:
        with ui.step(f"import {source.label} into {pin.label}", quiet=options.json):
            result = import_into_series(project, pin, source, settings)
    except UnmatchedChanges as unmatched:
        for line in unmatched.lines:
            ui.err.print(f"unmatched: {line}", markup=False, highlight=False)
        raise
    if result.already and not options.json:
        ui.out.print(
            f"{source.label} is already imported into {pin.label} ({', '.join(result.already)}); nothing written"
        )
        return 0
    if options.json:
        ui.print_json({"dry_run": args.dry_run, **result.as_dict()})
        return 0
    verb = "would add" if args.dry_run else "added"
    table = ui.table(
        f"{result.directory}: {verb} {len(result.patches)} patch(es) after {result.existing}",
        ["patch", "feature", "files", "+/-", "subject"],
    )
    for patch in result.patches:
        # subjects start with "[feature]", which rich would read as markup
        table.add_row(
            patch.name, patch.feature, "\n".join(patch.files), f"+{patch.added} -{patch.removed}", escape(patch.subject)
        )
    ui.out.print(table)
    for note in result.notes:
        ui.err.print(f"note: {note}")
    if result.skipped:
        ui.err.print("not compared: " + ", ".join(dict.fromkeys(result.skipped)))
    if args.dry_run:
        ui.err.print("dry run: nothing written")
    return 0
