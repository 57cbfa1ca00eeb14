"""Feature maps: which feature each changed file of an imported source belongs to.

Rules come from repeated `--feature GLOB=NAME` flags and a `--feature-map FILE`, flags first; the
first rule whose glob matches a file's path wins. A map file is TOML (`.toml`: a `[map]` table of
`"GLOB" = "NAME"`) or plain text (`GLOB NAME` or `GLOB = NAME` per line, `#` comments). Globs are
matched against the whole tree path: `*` and `?` stay within one path component, `**` spans any
number of them (`vllm/distributed/**` is everything under that directory).
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import VpatchError

_PLAIN_LINE_RE = re.compile(r"^(?P<glob>\S+)\s*(?:=\s*|\s+)(?P<name>\S+)$")


@dataclass(frozen=True)
class FeatureRule:
    glob: str
    feature: str
    where: str  # for messages: "--feature" or "map.txt:3"

    def matches(self, path: str) -> bool:
        return glob_regex(self.glob).fullmatch(path) is not None


class UnmatchedChanges(VpatchError):
    """Changes no rule (nor a default or a mail's Feature: header) assigns: one line each, then the error."""

    def __init__(self, lines: list[str], message: str) -> None:
        self.lines = lines
        super().__init__(message)


def glob_regex(glob: str) -> re.Pattern[str]:
    parts: list[str] = []
    i = 0
    while i < len(glob):
        if glob.startswith("**/", i):
            parts.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            parts.append(".*")
            i += 2
        elif glob[i] == "*":
            parts.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            parts.append("[^/]")
            i += 1
        else:
            parts.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(parts))


def rules_from_flags(values: list[str]) -> tuple[str | None, list[FeatureRule]]:
    """`--feature NAME` (the default, at most one) and `--feature GLOB=NAME` (rules) as given."""
    default: str | None = None
    rules: list[FeatureRule] = []
    for value in values:
        glob, sep, name = value.rpartition("=")
        if not sep:
            if default is not None and default != value:
                raise VpatchError(f"--feature {value}: a second default feature (already {default}); give one")
            default = value
        elif not glob.strip() or not name.strip():
            raise VpatchError(f"--feature {value!r}: expected GLOB=NAME or NAME")
        else:
            rules.append(FeatureRule(glob.strip(), name.strip(), "--feature"))
    return default, rules


def load_feature_map(path: Path) -> list[FeatureRule]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise VpatchError("no such feature map", path=path) from None
    except IsADirectoryError:
        raise VpatchError("is a directory, not a feature map", path=path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise VpatchError("feature map is not UTF-8", path=path) from None
    if path.suffix == ".toml":
        return _toml_rules(text, path)
    rules = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PLAIN_LINE_RE.match(line)
        if not match:
            raise VpatchError(f"expected 'GLOB NAME' or 'GLOB = NAME', not {line!r}", path=path, line=number)
        rules.append(FeatureRule(match["glob"], match["name"], f"{path.name}:{number}"))
    if not rules:
        raise VpatchError("the feature map holds no rules", path=path)
    return rules


def _toml_rules(text: str, path: Path) -> list[FeatureRule]:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise VpatchError(f"invalid TOML: {exc}", path=path) from None
    table = document.get("map")
    unknown = sorted(set(document) - {"map"})
    if unknown:
        raise VpatchError(f"unknown table {unknown[0]!r} (a feature map has one [map] table)", path=path)
    if not isinstance(table, dict) or not table:
        raise VpatchError('expected a [map] table of "GLOB" = "NAME" entries', path=path)
    rules = []
    lines = text.splitlines()
    for glob, name in table.items():
        if not isinstance(name, str):
            raise VpatchError(f"[map] {glob!r}: the feature must be a string", path=path)
        number = next((i for i, line in enumerate(lines, start=1) if line.lstrip().startswith(f'"{glob}"')), None)
        rules.append(FeatureRule(glob, name, f"{path.name}:{number}" if number else path.name))
    return rules


def check_declared(feature: str, features: dict[str, str], where: str) -> None:
    """An undeclared feature is refused, with the closest declared name when there is one."""
    if feature in features:
        return
    close = difflib.get_close_matches(feature, list(features), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    declared = ", ".join(sorted(features)) or "none"
    raise VpatchError(
        f"{where}: unknown feature {feature!r}{hint} (declared: {declared}; "
        f"declare it with `vpatch feature add {feature}`)"
    )


def feature_of(path: str, rules: list[FeatureRule]) -> str | None:
    return next((rule.feature for rule in rules if rule.matches(path)), None)
