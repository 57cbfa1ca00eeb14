"""The dynamo-base -> stock vLLM configuration table (`mapping.toml` beside this file), read by one schema.

An `Entry` is one key of one configuration surface dynamo-base reads; its `Rule`s say what the key becomes
on stock vLLM from a release on. `rule_at` picks the rule for a target release, refusing a release the
table cannot speak for (older than stock's first release with these surfaces, or between two verified
releases where the rule changes).
"""

from __future__ import annotations

import enum
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
from packaging.version import InvalidVersion, Version

from toolkit.errors import VpatchError

TABLE_FILE = Path(__file__).with_name("mapping.toml")


class Kind(enum.StrEnum):
    SAME = "same"
    RENAMED = "renamed"
    TRANSLATE = "translate"
    PLUGIN = "plugin"
    DROPPED = "dropped"
    NONE = "none"


class Surface(enum.StrEnum):
    KV_EVENTS = "kv-events-config"
    KV_TRANSFER = "kv-transfer-config"
    CONNECTOR = "kv_connector"
    EXTRA = "kv_connector_extra_config"
    PARAMS = "kv_transfer_params"


class ValueType(enum.StrEnum):
    BOOL = "bool"
    STR = "str"
    INT = "int"
    POSITIVE_INT = "positive_int"
    POSITIVE_NUMBER = "positive_number"
    CHOICE = "choice"
    ENDPOINT = "endpoint"
    OPTIONAL_ENDPOINT = "optional_endpoint"
    STR_LIST = "str_list"
    INT_LIST = "int_list"


class Rule(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    since: str
    kind: Kind
    # A rule for stock vLLM + dynamo-base-plugin: from `since` on it replaces the stock rule when the plugin is
    # installed (the plugin registers the name or reads the option itself).
    plugin: bool = False
    to: str | None = None
    translator: str | None = None
    text: str = ""
    evidence: str = ""


class Entry(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    surface: Surface
    key: str
    source: str
    rule: list[Rule]
    connector: str = "*"
    type: ValueType | None = None
    choices: list[str] = []
    default: Any = None
    emit_default: bool = False
    requires: str | None = None

    @property
    def name(self) -> str:
        return f"{self.surface}:{self.key}" + ("" if self.connector == "*" else f" ({self.connector})")


class Table(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    verified: list[str]
    entry: list[Entry]

    def find(self, surface: Surface, key: str, connector: str = "*") -> Entry | None:
        """The entry for `key`, the connector's own first, then the one for every connector."""
        for wanted in (connector, "*"):
            for entry in self.entry:
                if entry.surface == surface and entry.key == key and entry.connector == wanted:
                    return entry
        return None

    def keys(self, surface: Surface, connector: str = "*") -> list[str]:
        return sorted({e.key for e in self.entry if e.surface == surface and e.connector in (connector, "*")})

    def entries(self, surface: Surface, connector: str = "*") -> list[Entry]:
        """One entry per key of `surface` for `connector` (its own entry shadowing the common one)."""
        found = (self.find(surface, key, connector) for key in self.keys(surface, connector))
        return [entry for entry in found if entry is not None]


TARGET_PREFIXES = ("kv-events-config:", "kv-transfer-config:", "extra:", "env:", "connector:")


def parse_version(text: str, *, what: str = "version") -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise VpatchError(f"{what} {text!r} is not a release version (like 0.9.0)") from None


def _check(table: Table, path: Path) -> None:
    """What the schema cannot say: versions parse and ascend, targets and translators exist."""
    from toolkit.compat.translators import TRANSLATORS

    verified = [parse_version(v, what="verified release") for v in table.verified]
    if verified != sorted(verified):
        raise VpatchError("verified releases must ascend", path=path)
    for entry in table.entry:
        since = [parse_version(rule.since, what=f"{entry.name}: since") for rule in entry.rule if not rule.plugin]
        if not since or since != sorted(since) or since[0] != verified[0]:
            raise VpatchError(f"{entry.name}: rules must start at {verified[0]} and ascend", path=path)
        plugged = [parse_version(rule.since, what=f"{entry.name}: since") for rule in entry.rule if rule.plugin]
        if plugged != sorted(plugged) or any(str(v) not in table.verified for v in plugged):
            raise VpatchError(f"{entry.name}: plugin rules must ascend and start at verified releases", path=path)
        for rule in entry.rule:
            if rule.to is not None and not rule.to.startswith(TARGET_PREFIXES):
                raise VpatchError(f"{entry.name}: target {rule.to!r} is none of {TARGET_PREFIXES}", path=path)
            if rule.translator is not None and rule.translator not in TRANSLATORS:
                raise VpatchError(f"{entry.name}: no translator named {rule.translator!r}", path=path)
            if rule.kind is Kind.RENAMED and rule.to is None:
                raise VpatchError(f"{entry.name}: a renamed key needs `to`", path=path)
        if entry.type is ValueType.CHOICE and not entry.choices:
            raise VpatchError(f"{entry.name}: a choice needs `choices`", path=path)


def load_table(path: Path = TABLE_FILE) -> Table:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        table = msgspec.convert(raw, Table)
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise VpatchError(f"bad compatibility table: {exc}", path=path) from None
    _check(table, path)
    return table


@cache
def default_table() -> Table:
    return load_table()


class Resolved(msgspec.Struct, frozen=True):
    """The rule an entry has at the target release, and the verified release it was read from."""

    rule: Rule
    verified_at: str


def rule_at(table: Table, entry: Entry, version: Version, *, with_plugin: bool = False) -> Resolved | str:
    """The entry's rule at `version` (stock + dynamo-base-plugin with `with_plugin`: a plugin rule in force
    replaces the stock one), or why the table cannot say (a release between two verified ones where the rule
    changes)."""
    verified = [Version(v) for v in table.verified]

    def at(release: Version) -> Rule:
        stock = [rule for rule in entry.rule if not rule.plugin and Version(rule.since) <= release]
        plugged = [rule for rule in entry.rule if rule.plugin and Version(rule.since) <= release]
        return plugged[-1] if with_plugin and plugged else stock[-1]

    below = [v for v in verified if v <= version]
    above = [v for v in verified if v > version]
    lower = below[-1]  # callers refuse versions older than the first verified release
    if lower == version or not above or at(lower) == at(above[0]):
        return Resolved(at(lower), str(lower))
    return f"changes between the verified releases {lower} and {above[0]}; {version} was not read"
