"""A dynamo-base configuration -> the stock vLLM configuration it becomes at one release (or why it cannot).

`migrate` validates every key as dynamo-base would (unknown keys and bad values refused by name), then
applies the table's rule for the target release to each key, and to each defaulted key whose default stock
does not share. A key the user set that cannot carry over is an error; a dynamo-base default that cannot is
a warning (an error with `strict`). The result is one record: the three JSON objects, the environment,
the command-line flags, and every note. Like `vpatch config migrate`, it targets stock vLLM with
dynamo-base-plugin installed beside it unless `with_plugin=False` (the command's `--no-plugin`): stock alone.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

import msgspec
from packaging.version import Version

from toolkit.compat.table import Entry, Kind, Surface, Table, ValueType, default_table, parse_version, rule_at
from toolkit.compat.translators import TRANSLATORS, Outcome
from toolkit.tomlkeys import unknown_key_message

FIRST_STOCK = Version("0.9.0")
DYNAMO_CONNECTORS = ("SharedStorageConnectorV1", "NixlConnectorV1")
FLAG = {Surface.KV_EVENTS: "--kv-events-config", Surface.KV_TRANSFER: "--kv-transfer-config"}


class Migration(msgspec.Struct, kw_only=True):
    to: str
    read_at: list[str]
    kv_events_config: dict[str, Any] | None = None
    kv_transfer_config: dict[str, Any] | None = None
    kv_transfer_params: dict[str, Any] | None = None
    env: dict[str, str] = {}
    plugin: list[str] = []
    flags: list[str] = []
    notes: list[str] = []
    warnings: list[str] = []
    errors: list[str] = []

    @property
    def ok(self) -> bool:
        return not self.errors

    def command_line(self) -> str:
        env = [f"{name}={shlex.quote(value)}" for name, value in self.env.items()]
        return " ".join([*env, *(shlex.quote(part) for part in self.flags)])


def type_problem(entry: Entry, value: Any) -> str | None:
    """What is wrong with `value` for `entry`, as dynamo-base's own validation says it (None: fine)."""
    kind = entry.type
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is ValueType.BOOL and not isinstance(value, bool):
        return f"must be true or false, not {value!r}"
    if kind is ValueType.STR and not isinstance(value, str):
        return f"must be a string, not {value!r}"
    if kind is ValueType.INT and (isinstance(value, bool) or not isinstance(value, int)):
        return f"must be an integer, not {value!r}"
    if kind is ValueType.POSITIVE_INT and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        return f"must be a positive integer, not {value!r}"
    if kind is ValueType.POSITIVE_NUMBER and (not number or value <= 0):
        return f"must be a positive number, not {value!r}"
    if kind is ValueType.CHOICE and value not in entry.choices:
        return f"must be one of {', '.join(entry.choices)}, not {value!r}"
    if kind in (ValueType.ENDPOINT, ValueType.OPTIONAL_ENDPOINT):
        if value is None and kind is ValueType.OPTIONAL_ENDPOINT:
            return None
        if not isinstance(value, str) or not value.startswith(("tcp://", "ipc://", "inproc://")):
            return f"must be a ZMQ endpoint starting with tcp://, ipc:// or inproc://, not {value!r}"
    if kind is ValueType.STR_LIST and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return f"must be a list of strings, not {value!r}"
    if kind is ValueType.INT_LIST and not (isinstance(value, list) and all(type(v) is int for v in value)):
        return f"must be a list of integers, not {value!r}"
    return None


class _Run:
    """One migration in progress: where values go, and what was said about them."""

    def __init__(self, table: Table, version: Version, *, with_plugin: bool, strict: bool) -> None:
        self.table, self.version, self.with_plugin, self.strict = table, version, with_plugin, strict
        self.out: dict[str, dict[str, Any]] = {"kv-events-config": {}, "kv-transfer-config": {}, "extra": {}}
        self.params: dict[str, Any] = {}
        self.env: dict[str, str] = {}
        self.read_at: set[str] = set()
        self.result = Migration(to=str(version), read_at=[])
        self.events_off = False

    def say(self, where: str, message: str, *, explicit: bool) -> None:
        line = f"{where}: {message}"
        if explicit or self.strict:
            self.result.errors.append(line)
        else:
            self.result.warnings.append(f"{line} (dynamo-base's default)")

    def put(self, target: str, value: Any) -> None:
        place, _, key = target.partition(":")
        if place == "env":
            self.env[key] = str(value)
        elif place == "params":
            self.params[key] = value
        else:
            self.out[place][key] = value

    def apply(self, entry: Entry, value: Any, where: str, *, explicit: bool) -> None:
        resolved = rule_at(self.table, entry, self.version, with_plugin=self.with_plugin)
        if isinstance(resolved, str):
            self.say(where, resolved, explicit=explicit)
            return
        self.read_at.add(resolved.verified_at)
        rule = resolved.rule
        text = rule.text.replace("{version}", str(self.version))
        home = {Surface.KV_EVENTS: "kv-events-config", Surface.KV_TRANSFER: "kv-transfer-config"}
        same_target = f"{home.get(entry.surface, 'extra' if entry.surface is Surface.EXTRA else 'params')}:{entry.key}"
        if rule.kind is Kind.SAME:
            self.put(same_target, value)
        elif rule.kind is Kind.RENAMED:
            self.put(rule.to or same_target, value)
            self.result.notes.append(f"{where}: becomes {rule.to}" + (f": {text}" if text else ""))
        elif rule.kind is Kind.DROPPED:
            self.result.notes.append(f"{where}: left out: {text}")
        elif rule.kind is Kind.NONE:
            self.say(where, text, explicit=explicit)
        elif rule.translator is not None:
            self.outcome(TRANSLATORS[rule.translator](value, rule.to or same_target, text), where, explicit)
        elif rule.kind is Kind.PLUGIN:
            self.outcome(Outcome(plugin=True, refusal=text), where, explicit)
        else:  # translate by moving the value
            self.put(rule.to or same_target, value)
            self.result.notes.append(f"{where}: becomes {rule.to}" + (f": {text}" if text else ""))

    def outcome(self, outcome: Outcome, where: str, explicit: bool) -> None:
        for target, value in outcome.sets:
            self.put(target, value)
        if outcome.note:
            self.result.notes.append(f"{where}: {outcome.note}")
        if outcome.caution and explicit:
            self.result.notes.append(f"{where}: {outcome.caution}")
        elif outcome.caution:
            self.say(where, outcome.caution, explicit=False)
        self.events_off |= outcome.events_off
        if outcome.plugin and self.with_plugin:
            self.result.plugin.append(where)
        elif outcome.refusal:
            self.say(where, outcome.refusal, explicit=explicit)

    def surface(self, surface: Surface, given: dict[str, Any], where: str, connector: str = "*") -> None:
        """Every key given, then every defaulted key that must be carried or reported."""
        entries = {e.key: e for e in self.table.entries(surface, connector)}
        for key, value in given.items():
            entry = entries.get(key)
            if entry is None:
                self.result.errors.append(f"{where}{key}: {unknown_key_message(key, sorted(entries))}")
            elif problem := type_problem(entry, value):
                self.result.errors.append(f"{where}{key}: {problem}")
        if any(line.startswith(where) for line in self.result.errors):
            return
        for key, entry in entries.items():
            if entry.requires and not given.get(entry.requires, entries[entry.requires].default):
                continue
            if key in given:
                self.apply(entry, given[key], f"{where}{key}", explicit=True)
            elif entry.default is not None and (entry.emit_default or self.may_refuse(entry)):
                self.apply(entry, entry.default, f"{where}{key}", explicit=False)

    def may_refuse(self, entry: Entry) -> bool:
        """A default stock cannot honour is reported even when nobody wrote the key."""
        resolved = rule_at(self.table, entry, self.version, with_plugin=self.with_plugin)
        return isinstance(resolved, str) or resolved.rule.kind in (Kind.NONE, Kind.PLUGIN)


def _object(value: Any, where: str, errors: list[str]) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        errors.append(f"{where}: must be a JSON object, not {json.dumps(value)}")
        return None
    return value


def migrate(
    version: str,
    *,
    kv_events_config: Any = None,
    kv_transfer_config: Any = None,
    kv_transfer_params: Any = None,
    with_plugin: bool = True,
    strict: bool = False,
    table: Table | None = None,
) -> Migration:
    table = table or default_table()
    target = parse_version(version, what="--to")
    run = _Run(table, target, with_plugin=with_plugin, strict=strict)
    errors = run.result.errors
    if target < FIRST_STOCK:
        errors.append(
            f"--to {version}: stock vLLM before 0.9.0 has neither KV-cache events nor an asynchronous V1 "
            "connector; keep dynamo-base"
        )
        return run.result
    newest = Version(table.verified[-1])
    if target > newest:
        run.result.warnings.append(f"--to {version}: newer than the newest release read ({newest}); its rules used")
    events = _object(kv_events_config, "--kv-events-config", errors)
    transfer = _object(kv_transfer_config, "--kv-transfer-config", errors)
    params = _object(kv_transfer_params, "kv_transfer_params", errors)
    if events is not None:
        run.surface(Surface.KV_EVENTS, events, "--kv-events-config: ")
    if transfer is not None:
        _transfer(run, transfer)
    if params is not None:
        run.surface(Surface.PARAMS, params, "kv_transfer_params: ")
    return _finish(run, events is not None, transfer is not None, params is not None)


def _transfer(run: _Run, transfer: dict[str, Any]) -> None:
    where = "--kv-transfer-config: "
    rest = dict(transfer)
    connector = rest.pop("kv_connector", None)
    extra = rest.pop("kv_connector_extra_config", {})
    if not isinstance(connector, str):
        run.result.errors.append(f"{where}kv_connector: must name a connector, not {connector!r}")
        return
    if not isinstance(extra, dict):
        run.result.errors.append(f"{where}kv_connector_extra_config: must be a JSON object, not {extra!r}")
        return
    entry = run.table.find(Surface.CONNECTOR, connector)
    if entry is None and "kv_connector_module_path" not in rest:
        known = run.table.keys(Surface.CONNECTOR)
        run.result.errors.append(f"{where}kv_connector: {unknown_key_message(connector, known)}")
        return
    scope = connector if connector in DYNAMO_CONNECTORS else "*"
    if entry is None:  # an out-of-tree connector: its name and options are its own
        run.put("kv-transfer-config:kv_connector", connector)
        run.surface(Surface.KV_TRANSFER, rest, where, scope)
        run.out["extra"].update(extra)
        return
    if not _connector(run, entry, f"{where}kv_connector: {connector}"):
        return
    run.surface(Surface.KV_TRANSFER, rest, where, scope)
    if connector in DYNAMO_CONNECTORS:
        run.surface(Surface.EXTRA, extra, f"{where}kv_connector_extra_config.", connector)
    else:  # a stock connector reads its own options
        run.out["extra"].update(extra)


def _connector(run: _Run, entry: Entry, where: str) -> bool:
    """The stock connector name; False when there is none at the target release."""
    resolved = rule_at(run.table, entry, run.version, with_plugin=run.with_plugin)
    if isinstance(resolved, str):
        run.result.errors.append(f"{where}: {resolved}")
        return False
    run.read_at.add(resolved.verified_at)
    rule = resolved.rule
    text = rule.text.replace("{version}", str(run.version))
    if rule.kind is Kind.SAME:
        run.put("kv-transfer-config:kv_connector", entry.key)
        return True
    if rule.to is None or rule.kind not in (Kind.RENAMED, Kind.TRANSLATE):
        run.result.errors.append(f"{where}: {text or 'no upstream equivalent'}")
        return False
    name = rule.to.partition(":")[2]
    run.put("kv-transfer-config:kv_connector", name)
    run.result.notes.append(f"{where}: becomes {name}" + (f": {text}" if text else ""))
    return True


def _finish(run: _Run, has_events: bool, has_transfer: bool, has_params: bool) -> Migration:
    result = run.result
    result.read_at = sorted(run.read_at, key=Version)
    if result.errors:
        return result
    events = run.out["kv-events-config"]
    if has_events:
        if run.events_off or not events.get("enable_kv_cache_events"):
            result.notes.append("--kv-events-config: events are off: leave --kv-events-config out")
        else:
            result.kv_events_config = events
    if has_transfer:
        transfer = run.out["kv-transfer-config"]
        if run.out["extra"]:
            transfer["kv_connector_extra_config"] = run.out["extra"]
        result.kv_transfer_config = transfer
    if has_params:
        result.kv_transfer_params = run.params
    result.env = dict(sorted(run.env.items()))
    for surface, value in (
        (Surface.KV_EVENTS, result.kv_events_config),
        (Surface.KV_TRANSFER, result.kv_transfer_config),
    ):
        if value is not None:
            result.flags += [FLAG[surface], json.dumps(value, separators=(",", ":"))]
    return result
