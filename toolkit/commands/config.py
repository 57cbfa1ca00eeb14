"""`vpatch config migrate --to VERSION`: the stock vLLM configuration a dynamo-base configuration becomes.

Input: `--kv-events-config JSON`, `--kv-transfer-config JSON`, `--kv-transfer-params JSON` (as the engine
flags take them), or `--file FILE` holding a JSON object with those keys. Prints the migrated JSON and the
flags (with the environment the engine needs), or one error line per key that cannot carry over and exits 1.
`--check` only validates. The rules are toolkit/compat/mapping.toml; docs/migration.md explains them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from toolkit import exit_codes, ui
from toolkit.errors import VpatchError
from toolkit.options import Options

FILE_KEYS = ("kv_events_config", "kv_transfer_config", "kv_transfer_params")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="dynamo-base configuration on stock vLLM (migrate, check)")
    actions = parser.add_subparsers(dest="config_action", metavar="ACTION", required=True)
    migrate = actions.add_parser("migrate", help="what a dynamo-base configuration becomes on stock vLLM VERSION")
    migrate.add_argument("--to", required=True, metavar="VERSION", help="the stock vLLM release to run")
    migrate.add_argument("--kv-events-config", metavar="JSON", help="dynamo-base's --kv-events-config value")
    migrate.add_argument("--kv-transfer-config", metavar="JSON", help="dynamo-base's --kv-transfer-config value")
    migrate.add_argument("--kv-transfer-params", metavar="JSON", help="a request's kv_transfer_params (router side)")
    migrate.add_argument("--file", type=Path, help=f"a JSON object with any of {', '.join(FILE_KEYS)}")
    migrate.add_argument("--check", action="store_true", help="only validate: exit 1 when anything cannot carry over")
    migrate.add_argument("--with-plugin", action="store_true", help="dynamo-base-plugin is installed beside stock")
    migrate.add_argument("--strict", action="store_true", help="dynamo-base defaults stock lacks are errors too")
    migrate.add_argument("--json", action="store_true")
    migrate.set_defaults(run=run)


def _parse(text: str, flag: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise VpatchError(f"{flag}: not JSON: {exc.msg} (column {exc.colno})") from None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise VpatchError(exc.strerror or str(exc), path=path) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise VpatchError(f"not JSON: {exc.msg}", path=path, line=exc.lineno) from None
    if not isinstance(data, dict):
        raise VpatchError("must be a JSON object with any of " + ", ".join(FILE_KEYS), path=path, line=1)
    for key in data:
        if key.replace("-", "_") not in FILE_KEYS:
            from toolkit.tomlkeys import unknown_key_message

            line = next((n for n, row in enumerate(text.split("\n"), 1) if f'"{key}"' in row), 1)
            raise VpatchError(unknown_key_message(key, FILE_KEYS), path=path, line=line)
    return {key.replace("-", "_"): value for key, value in data.items()}


def inputs(args: argparse.Namespace) -> dict[str, Any]:
    given = _read_file(args.file) if args.file is not None else {}
    for key in FILE_KEYS:
        text = getattr(args, key)
        if text is not None:
            if key in given:
                raise VpatchError(f"--{key.replace('_', '-')} is given twice (flag and --file)")
            given[key] = _parse(text, f"--{key.replace('_', '-')}")
    if not given:
        raise VpatchError("nothing to migrate: give --kv-events-config, --kv-transfer-config or --file")
    return given


def run(args: argparse.Namespace, options: Options) -> int:
    from toolkit.compat.migrate import migrate

    result = migrate(args.to, with_plugin=args.with_plugin, strict=args.strict, **inputs(args))
    if options.json:
        ui.print_json({"ok": result.ok, **_record(result)})
    elif result.ok and not args.check:
        _print(result)
    for line in result.warnings:
        print(f"vpatch: warning: {line}", file=sys.stderr)
    for line in result.errors:
        print(f"vpatch: error: {line}", file=sys.stderr)
    if result.ok and args.check and not options.json:
        print(f"ok: carries over to stock vLLM {result.to}")
    return exit_codes.OK if result.ok else exit_codes.FAILED


def _record(result: Any) -> dict[str, Any]:
    import msgspec

    return msgspec.to_builtins(result)


def _print(result: Any) -> None:
    print(f"# stock vLLM {result.to} (rules read from {', '.join(result.read_at) or 'no key'})")
    for name in ("kv_events_config", "kv_transfer_config", "kv_transfer_params"):
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
