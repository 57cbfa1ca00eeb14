"""`vpatch config migrate --to VERSION`: what a dynamo-base configuration becomes on stock vLLM VERSION.

Two inputs, one set of rules (toolkit/compat/mapping.toml; docs/migration.md explains them):
- FILE (or `--file FILE`): what a deployment starts vLLM with, a JSON/YAML file of engine arguments or a
  `vllm serve ...` command line (toolkit/compat/deployment.py reads it). Prints one line per changed key, or
  one `FILE:LINE: PATH: what to do` per key that cannot carry over (exit 1).
- `--kv-events-config JSON`, `--kv-transfer-config JSON`, `--kv-transfer-params JSON` (as the engine flags take
  them): prints the migrated JSON, the environment and the flags, or one error line per key (exit 1).
With dynamo-base-plugin installed beside stock by default (`--no-plugin`: stock alone); `--check` only validates.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from toolkit import exit_codes, ui
from toolkit.compat.deployment import SECTIONS
from toolkit.errors import VpatchError
from toolkit.options import Options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="dynamo-base configuration on stock vLLM (migrate, check)")
    actions = parser.add_subparsers(dest="config_action", metavar="ACTION", required=True)
    migrate = actions.add_parser("migrate", help="what a dynamo-base configuration becomes on stock vLLM VERSION")
    migrate.add_argument("file", nargs="?", type=Path, metavar="FILE", help="as --file")
    migrate.add_argument("--to", required=True, metavar="VERSION", help="the stock vLLM release to run")
    migrate.add_argument("--kv-events-config", metavar="JSON", help="dynamo-base's --kv-events-config value")
    migrate.add_argument("--kv-transfer-config", metavar="JSON", help="dynamo-base's --kv-transfer-config value")
    migrate.add_argument("--kv-transfer-params", metavar="JSON", help="a request's kv_transfer_params (router side)")
    migrate.add_argument(
        "--file",
        type=Path,
        dest="file_option",
        metavar="FILE",
        help="a deployment's JSON/YAML engine arguments or vLLM command line",
    )
    migrate.add_argument("--check", action="store_true", help="only validate: exit 1 when anything cannot carry over")
    plugin = migrate.add_mutually_exclusive_group()
    plugin.add_argument(
        "--with-plugin",
        dest="plugin",
        action="store_true",
        default=True,
        help="dynamo-base-plugin beside stock (default)",
    )
    plugin.add_argument("--no-plugin", dest="plugin", action="store_false", help="stock vLLM alone")
    migrate.add_argument("--strict", action="store_true", help="dynamo-base defaults stock lacks are errors too")
    migrate.add_argument("--notes", action="store_true", help="FILE: also print why each key changed")
    migrate.add_argument("--json", action="store_true")
    migrate.set_defaults(run=run)


def _parse(text: str, flag: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise VpatchError(f"{flag}: not JSON: {exc.msg} (column {exc.colno})") from None


def _file(args: argparse.Namespace) -> Path | None:
    if args.file is not None and args.file_option is not None:
        raise VpatchError("FILE is given twice (as an argument and as --file)")
    return args.file if args.file is not None else args.file_option


def flag_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """The sections given as flags, parsed."""
    return {
        key: _parse(text, f"--{key.replace('_', '-')}") for key in SECTIONS if (text := getattr(args, key)) is not None
    }


def run(args: argparse.Namespace, options: Options) -> int:
    path, given = _file(args), flag_inputs(args)
    if path is not None and given:
        flag = f"--{next(iter(given)).replace('_', '-')}"
        raise VpatchError(f"{flag}: give the configuration in FILE or as flags, not both")
    if path is None and not given:
        raise VpatchError(
            "nothing to migrate: give FILE, --kv-events-config, --kv-transfer-config or --kv-transfer-params"
        )
    if path is not None:
        return _run_file(args, options, path)
    from toolkit.compat.migrate import migrate

    result = migrate(args.to, with_plugin=args.plugin, strict=args.strict, **given)
    if options.json:
        ui.print_json(_record(args, result, result.warnings, result.errors))
    elif result.ok and not args.check:
        _print(result)
    return _finish(args, options, result.to, result.warnings, result.errors)


def _run_file(args: argparse.Namespace, options: Options, path: Path) -> int:
    from toolkit.compat.deployment import migrate_deployment

    done = migrate_deployment(path, args.to, with_plugin=args.plugin, strict=args.strict)
    if options.json:
        ui.print_json(
            {
                **_record(args, done.migration, done.warnings, done.errors),
                "changes": done.changes,
                "config": done.migrated,
            }
        )
    elif done.ok and not args.check:
        target = f"stock vLLM {done.migration.to}" + (" + dynamo-base-plugin" if args.plugin else "")
        if not done.changes:
            print(f"{path}: no change for {target}")
        for line in done.changes:
            print(line)
        for note in done.migration.notes if args.notes else []:
            print(f"note: {note}")
    return _finish(args, options, done.migration.to, done.warnings, done.errors)


def _record(args: argparse.Namespace, result: Any, warnings: list[str], errors: list[str]) -> dict[str, Any]:
    """One record for both inputs: the migration (to, read_at, the three objects, env, plugin, flags, notes)."""
    import msgspec

    record = msgspec.to_builtins(result)
    return {"ok": not errors, "with_plugin": args.plugin, **record, "warnings": warnings, "errors": errors}


def _finish(args: argparse.Namespace, options: Options, to: str, warnings: list[str], errors: list[str]) -> int:
    for line in warnings:
        print(f"vpatch: warning: {line}", file=sys.stderr)
    for line in errors:
        print(f"vpatch: error: {line}", file=sys.stderr)
    if not errors and args.check and not options.json:
        print(f"ok: carries over to stock vLLM {to}")
    return exit_codes.FAILED if errors else exit_codes.OK


def _print(result: Any) -> None:
    print(f"# stock vLLM {result.to} (rules read from {', '.join(result.read_at) or 'no key'})")
    for name in SECTIONS:
        value = getattr(result, name)
        if value is not None:
            print(f"{name}: {json.dumps(value)}")
    for name, value in result.env.items():
        print(f"env: {name}={value}")
    if result.plugin:
        print("dynamo-base-plugin provides: " + ", ".join(result.plugin))
    print(result.command_line())
    for note in result.notes:
        print(f"note: {note}")
