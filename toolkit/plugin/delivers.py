"""What the dynamo-base plugin delivers, per module: toolkit/plugin/delivers.toml, read once, checked.

One table per plugin module (`["dynamo_base_plugin.shared_storage"]`): `capabilities` (features or
sub-features of pins.toml `[features]`), `since` (the first vLLM release the module delivers them on),
`object` (the class or function vLLM loads) and `what` (one sentence, quoted by the wheel's provenance and so
by the verdict's plugin label). The story (toolkit/report/story.py) reads `at`, the build `summaries` and
`delivered` (both for the wheel's vLLM release).

Bad input is one line naming the file and the line: an unknown key, a module the plugin package does not
have, a version that does not parse, a capability name that is not one (`load_table`), or one the project
does not declare (`PluginTable.check`).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from packaging.version import Version

from toolkit.errors import VpatchError
from toolkit.features import is_sub, name_problem, parent_of, undeclared
from toolkit.model import parse_version
from toolkit.serving.plugin import PACKAGE, SOURCE
from toolkit.tomlkeys import key_line, refuse_unknown

DELIVERS_FILE = Path(__file__).resolve().with_name("delivers.toml")
KEYS = ("capabilities", "since", "object", "what")


@dataclass(frozen=True)
class Delivery:
    """One module of the plugin and what it delivers from vLLM `since` on."""

    module: str  # dynamo_base_plugin.shared_storage
    capabilities: tuple[str, ...]
    since: Version
    obj: str = ""
    what: str = ""
    line: int | None = None

    @property
    def label(self) -> str:
        """`dynamo_base_plugin.shared_storage:SharedStorageConnectorV1` (the module alone without an object)."""
        return f"{self.module}:{self.obj}" if self.obj else self.module


@dataclass(frozen=True)
class PluginTable:
    path: Path
    deliveries: tuple[Delivery, ...]

    def check(self, declared: Iterable[str]) -> None:
        """Refuse a capability the project's pins.toml `[features]` does not declare (file and line named). A
        sub-feature of a declared feature that declares no sub-features at all counts for that feature (the
        project does not split it); one of a feature that declares others is refused, as an unknown feature."""
        known = set(declared)
        split = {parent_of(n) for n in known if is_sub(n)}
        for delivery in self.deliveries:
            for name in delivery.capabilities:
                if is_sub(name) and parent_of(name) in known and parent_of(name) not in split:
                    continue
                problem = undeclared(name, known)
                if problem is not None:
                    raise VpatchError(f"{delivery.module}: {problem}", path=self.path, line=delivery.line)

    def at(self, capability: str, version: str | Version, *, parts: bool = False) -> list[Delivery]:
        """The modules that deliver `capability` on vLLM `version` (since <= version); with `parts`, also the
        modules that deliver one of its sub-features (a feature's row sums its parts up)."""
        here = Version(str(version))

        def mine(name: str) -> bool:
            return name == capability or (parts and parent_of(name) == capability and name != capability)

        return [d for d in self.delivered(here) if any(mine(n) for n in d.capabilities)]

    def delivered(self, version: str | Version) -> list[Delivery]:
        """The modules that deliver something on vLLM `version` (since <= version), in table order."""
        here = Version(str(version))
        return [d for d in self.deliveries if d.since <= here]

    def summaries(self, version: str | Version) -> dict[str, str]:
        """feature -> what the plugin delivers for it on vLLM `version` (the `what` of the modules delivered
        there, joined), for the provenance of the wheel built for that release: a module whose `since` is later
        is left out, as the plugin refuses it there (connector_names.py)."""
        found: dict[str, list[str]] = {}
        for delivery in self.delivered(version):
            for feature in dict.fromkeys(parent_of(n) for n in delivery.capabilities):
                if delivery.what and delivery.what not in found.setdefault(feature, []):
                    found[feature].append(delivery.what)
        return {feature: "; ".join(whats) for feature, whats in found.items()}


def load_table(path: Path = DELIVERS_FILE, source: Path = SOURCE) -> PluginTable:
    """The table at `path`, each module checked against the plugin package at `source`."""
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except OSError as exc:
        raise VpatchError(f"cannot read the plugin's delivery table: {exc.strerror or exc}", path=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise VpatchError(f"not valid TOML: {exc}", path=path) from None
    deliveries = []
    for module, entry in data.items():
        line = key_line(text, module)

        def fail(message: str, line: int | None = line, module: str = module) -> VpatchError:
            return VpatchError(f"{module}: {message}", path=path, line=line)

        if not isinstance(entry, dict):
            raise fail("must be a table with capabilities, since, object and what")
        refuse_unknown(entry, KEYS, path, text, start=line, prefix=f"{module}: ")
        head, _, rest = module.partition(".")
        if head != PACKAGE or not rest or "." in rest or not (source / f"{rest}.py").is_file():
            raise fail(f"not a module of the plugin package (expected {PACKAGE}.NAME, NAME.py in {source.name}/)")
        names = entry.get("capabilities")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise fail("capabilities must be a non-empty list of feature or sub-feature names")
        for name in names:
            if (problem := name_problem(name)) is not None:
                raise fail(problem)
        since, obj, what = entry.get("since"), entry.get("object", ""), entry.get("what", "")
        if not isinstance(since, str):
            raise fail('since must be the first vLLM release the module delivers them on, e.g. "0.32.0"')
        if not isinstance(obj, str) or not isinstance(what, str):
            raise fail("object and what must be strings")
        version = parse_version(since, path=path, line=key_line(text, "since", line))
        deliveries.append(Delivery(module, tuple(names), version, obj, what, line))
    return PluginTable(path, tuple(deliveries))


@cache
def default_table() -> PluginTable:
    """The table shipped with vpatch (toolkit/plugin/delivers.toml), read once per process."""
    return load_table()
