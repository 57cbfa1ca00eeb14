"""patches/pins.toml: the pinned upstream releases and the declared feature names.

Read with tomllib into `Pin` objects (validated, with file:line errors); written with
tomlkit so that comments and layout survive `vpatch pin add`.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from packaging.version import Version

from toolkit.cache import update_file
from toolkit.dist_files import FileNameError, canonical_name, sdist_name_version, wheel_name_version
from toolkit.errors import VpatchError
from toolkit.features import is_sub, name_problem, parent_of
from toolkit.model import COMMIT_RE, SHA256_RE, Artifact, Flavor, Pin, parse_version
from toolkit.pin_flavors import artifact_table, flavor_table, parse_flavors, wheels_array
from toolkit.tomlkeys import LazyLine, key_line, refuse_unknown

SOURCES = ("sdist", "git")
# The keys each table may have; anything else is a typo that would otherwise be silently ignored.
TOP_KEYS = ("project", "features", "pins")
PIN_KEYS = ("source", "remote", "tag", "commit", "base-commit", "sdist", "wheels", "flavors")
ARTIFACT_KEYS = ("file", "sha256", "url")
FEATURE_KEYS = ("description", "native-since", "upstream")
DEFAULT_FEATURES = {
    "kv-routing": "KV-cache events and load metrics for KV-aware routing",
    "pd-disagg": "prefill/decode disaggregation: remote prefill and KV block transfer",
}
HEADER = """\
# Pinned upstream releases of vLLM that dynamo-base is built for.
# `vpatch pin add VERSION` fills an entry from the package index (every hash is
# computed from the downloaded file and compared with the index's);
# `vpatch pin verify` checks them again.
"""


@dataclass(frozen=True)
class PinsFile:
    path: Path
    project: str
    pins: tuple[Pin, ...]
    features: dict[str, str]  # name -> description
    # name -> {description, native_since, upstream, parent}; parent is None for a top-level feature
    feature_info: dict[str, dict] = field(default_factory=dict)

    def get(self, version: Version | str) -> Pin:
        wanted = version if isinstance(version, Version) else parse_version(str(version))
        for pin in self.pins:
            if pin.version == wanted:
                return pin
        known = ", ".join(str(p.version) for p in self.pins) or "none"
        raise VpatchError(
            f"no pin for {self.project} {version} (pinned: {known}); run `vpatch pin add {version}`", path=self.path
        )

    def select(self, versions: list[str] | None) -> list[Pin]:
        if not versions:
            return list(self.pins)
        return [self.get(v) for v in versions]


def _line_of(text: str, version: str) -> int | None:
    pattern = re.compile(rf'^[ \t]*\[pins\.(?:"{re.escape(version)}"|{re.escape(version)})\]', re.M)
    match = pattern.search(text)
    return text.count("\n", 0, match.start()) + 1 if match else None


def _feature_line(text: str, name: str) -> int | None:
    return key_line(text, name, key_line(text, "features"))


def load_pins(path: Path) -> PinsFile:
    if not path.exists():
        raise VpatchError("pins file does not exist (run `vpatch pin add VERSION`)", path=path)
    return parse_pins(path, path.read_bytes())


def parse_pins(path: Path, raw: bytes) -> PinsFile:
    """The pins file `path` holding `raw`, validated: every mistake is one error naming the line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VpatchError("pins file is not valid UTF-8", path=path, line=raw[: exc.start].count(b"\n") + 1) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise VpatchError(f"invalid TOML: {exc}", path=path, line=int(match[1]) if match else None) from None
    refuse_unknown(data, TOP_KEYS, path, text)
    project = data.get("project", "vllm")
    if not isinstance(project, str) or not project:
        raise VpatchError(f"project must be a distribution name, not {project!r}", path=path)
    features, feature_info = _features(data.get("features", DEFAULT_FEATURES), path, text)
    if not isinstance(data.get("pins", {}), dict):
        raise VpatchError("[pins] must be a table of versions", path=path)
    pins = []
    for key, entry in data.get("pins", {}).items():
        line = LazyLine(partial(_line_of, text, key))  # searched for only when an error names it

        def fail(message: str, key: str = key, line: LazyLine = line) -> VpatchError:
            return VpatchError(f"pin {key}: {message}", path=path, line=line())

        if not isinstance(entry, dict):
            raise fail("must be a table")
        refuse_unknown(entry, PIN_KEYS, path, text, start=line, prefix=f"pin {key}: ")
        for name in ("source", "remote", "tag", "commit", "base-commit"):
            if not isinstance(entry.get(name, ""), str):
                raise fail(f"{name} must be a string, not {entry[name]!r}")
        if not isinstance(entry.get("wheels", []), list):
            raise fail("wheels must be a list of tables with file and sha256")
        for kind, value in [("sdist", entry.get("sdist")), *(("wheel", w) for w in entry.get("wheels", []) or [])]:
            if isinstance(value, dict):
                table = "sdist" if kind == "sdist" else "wheels"
                where = LazyLine(partial(key_line, text, table, line))
                refuse_unknown(value, ARTIFACT_KEYS, path, text, start=where, prefix=f"pin {key}: {kind}: ")
        version = parse_version(key, path=path, line=line)
        source = entry.get("source", "sdist")
        if source not in SOURCES:
            raise fail(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
        commit = entry.get("commit") or None
        if commit is not None and not COMMIT_RE.match(commit):
            raise fail(f"commit {commit!r} is not a full 40-hex commit id")
        base_commit = entry.get("base-commit") or None
        if base_commit is not None and not COMMIT_RE.match(base_commit):
            raise fail(f"base-commit {base_commit!r} is not a full 40-hex commit id")
        sdist = _artifact(entry.get("sdist"), project, version, "sdist", fail) if entry.get("sdist") else None
        wheels = tuple(_artifact(w, project, version, "wheel", fail) for w in entry.get("wheels", []))
        remote = entry.get("remote", "")
        tag = entry.get("tag", "")
        if source == "sdist" and sdist is None:
            raise fail("source is 'sdist' but no sdist is pinned")
        if source == "git" and not (remote and tag):
            raise fail("source is 'git' but remote or tag is missing")
        flavors = parse_flavors(entry.get("flavors", {}), version, path, text, line, fail, _artifact)
        pins.append(Pin(version, source, remote, tag, commit, sdist, wheels, base_commit, project, flavors))
    pins.sort(key=lambda p: p.version)
    return PinsFile(path, project, tuple(pins), features, feature_info)


def _features(table: object, path: Path, text: str) -> tuple[dict[str, str], dict[str, dict]]:
    """`name = "description"` or `name = { description = "...", native-since = "0.9.0", upstream = "..." }`;
    a sub-feature is the quoted key `"PARENT/SUB"` (toolkit/features.py), its parent declared too."""
    problem = VpatchError(
        "[features] must map feature names to a description or a table with description, "
        "native-since (the first upstream release that has the feature) and upstream (where upstream does it)",
        path=path,
    )
    if not isinstance(table, dict):
        raise problem
    features, info = {}, {}
    for name, value in table.items():
        if isinstance(value, str):
            value = {"description": value}
        if not isinstance(value, dict) or not isinstance(value.get("description", ""), str):
            raise problem
        where = LazyLine(partial(_feature_line, text, name))
        refuse_unknown(value, FEATURE_KEYS, path, text, start=where, prefix=f"feature {name}: ")
        bad_name = name_problem(name)
        if bad_name is not None:
            raise VpatchError(bad_name, path=path, line=where())
        if is_sub(name) and parent_of(name) not in table:
            raise VpatchError(
                f"sub-feature {name!r}: its parent feature {parent_of(name)!r} is not declared in [features]",
                path=path,
                line=where(),
            )
        native, upstream = value.get("native-since"), value.get("upstream")
        if native is not None:
            if not isinstance(native, str):
                raise problem
            parse_version(native, path=path)
        if upstream is not None and not isinstance(upstream, str):
            raise problem
        features[name] = value.get("description", "")
        info[name] = {
            "description": features[name],
            "native_since": native,
            "upstream": upstream,
            "parent": parent_of(name) if is_sub(name) else None,
        }
    return features, info


def _artifact(value: object, project: str, version: Version, kind: str, fail) -> Artifact:
    if not isinstance(value, dict):
        raise fail(f"{kind} entry must be a table with file and sha256")
    file, sha = value.get("file", ""), value.get("sha256", "")
    if not isinstance(sha, str) or not SHA256_RE.match(sha):
        raise fail(f"{kind} {file or '?'}: sha256 {sha!r} is not 64 lowercase hex digits")
    if not isinstance(file, str):
        raise fail(f"invalid {kind} file name {file!r}")
    try:
        name, file_version = wheel_name_version(file) if kind == "wheel" else sdist_name_version(file)
    except FileNameError as exc:
        raise fail(f"invalid {kind} file name {file!r}: {exc}") from None
    if name != canonical_name(project) or file_version != version:
        raise fail(f"{kind} {file} is not {project} {version}")
    return Artifact(file=file, sha256=sha, url=value.get("url", ""))


def write_pin(path: Path, pin: Pin, *, replace: bool = True) -> Pin | None:
    """Add or replace one pin entry, keeping the rest of the file (comments included) as it is.

    Read, changed and replaced under the project lock, so concurrent `pin add`s never lose a pin. Without
    `replace`, a pin of that version already in the file is kept and returned (nothing is written).
    """
    kept: list[Pin] = []

    def change(old: bytes | None) -> bytes | None:
        if old is not None and not replace:
            pinned = [p for p in parse_pins(path, old).pins if p.version == pin.version]
            if pinned:
                kept.extend(pinned)
                return None
        return _with_pin(old, pin).encode("utf-8")

    update_file(path, change)
    return kept[0] if kept else None


def _with_pin(old: bytes | None, pin: Pin) -> str:
    import tomlkit  # only writers need it (~10 ms to import)

    if old is not None:
        document = tomlkit.parse(old.decode("utf-8"))
    else:
        document = tomlkit.document()
        for line in HEADER.strip().splitlines():
            document.add(tomlkit.comment(line.lstrip("# ")))
        document.add(tomlkit.nl())
        document["project"] = pin.project
        features = tomlkit.table()
        for name, description in DEFAULT_FEATURES.items():
            features[name] = description
        document["features"] = features
    pins = document.get("pins")
    if pins is None:
        pins = tomlkit.table(is_super_table=True)
        document["pins"] = pins
    entry = tomlkit.table()
    entry["source"] = pin.source
    entry["remote"] = pin.remote
    entry["tag"] = pin.tag
    entry["commit"] = pin.commit or ""
    if pin.base_commit:
        entry["base-commit"] = pin.base_commit
    if pin.sdist:
        entry["sdist"] = artifact_table(pin.sdist)
    entry["wheels"] = wheels_array(pin.wheels)
    old_entry = pins.get(str(pin.version))
    if pin.flavors:
        flavors = tomlkit.table(is_super_table=True)
        for flavor in pin.flavors:
            flavors[flavor.name] = flavor_table(flavor)
        entry["flavors"] = flavors
    elif old_entry is not None and "flavors" in old_entry:  # a re-pinned release keeps its pinned flavors
        entry["flavors"] = old_entry["flavors"]
    pins[str(pin.version)] = entry
    keys = list(pins.keys())
    ordered = sorted(keys, key=Version)
    if keys != ordered:  # keep versions in order (moving tables is what tomlkit pads with blank lines)
        for key in ordered:
            value = pins[key]
            del pins[key]
            pins[key] = value
    return _tidy_spacing(tomlkit.dumps(document))


def write_flavor(path: Path, version: Version, flavor: Flavor, *, replace: bool = False) -> None:
    """Add (or with `replace`, replace) one flavor of a pinned version; nothing else in the file changes."""

    def change(old: bytes | None) -> bytes:
        import tomlkit

        if old is None:
            raise VpatchError(f"no pin for {version}; run `vpatch pin add {version}` first", path=path)
        pinned = parse_pins(path, old).get(version)
        if pinned.flavor(flavor.name) is not None and not replace:
            raise VpatchError(
                f"pin {version} already has the {flavor.name} flavor (use --replace to re-pin it)", path=path
            )
        document = tomlkit.parse(old.decode("utf-8"))
        entry = next(v for k, v in document["pins"].items() if Version(k) == version)
        if "flavors" not in entry:
            entry["flavors"] = tomlkit.table(is_super_table=True)
        entry["flavors"][flavor.name] = flavor_table(flavor)
        return _tidy_spacing(tomlkit.dumps(document)).encode("utf-8")

    update_file(path, change)


def _tidy_spacing(text: str) -> str:
    """Exactly one blank line before each pin table: tomlkit adds one each time it moves or replaces a
    table, and a file rewritten by every `pin add` must not grow."""
    text = re.sub(r"\n(?:[ \t]*\n)+(?=\[pins\.)", "\n\n", text)
    text = re.sub(r"(?m)^(?![ \t]*#)([^\n]*\S[^\n]*)\n(?=\[pins\.)", "\\1\n\n", text)
    return text.rstrip("\n") + "\n"
