"""Archive resolution: `--base`/`--fork` given as a file, or as NAME==VERSION (the pinned file, else the index's)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import InvalidSdistFilename, canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from toolkit.errors import VpatchError
from toolkit.index import fetch_artifact, list_release_files
from toolkit.model import Artifact, Pin
from toolkit.project import Project

_REQ_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)$")


@dataclass(frozen=True)
class Archive:
    path: Path
    kind: str  # wheel or sdist


def resolve_archive(spec: str, project: Project, *, prefer: str, wheel_like: Path | None = None) -> Archive:
    """A path to a wheel or sdist, or `NAME==VERSION`: the pinned file of that version (or the index's)."""
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_file():
            raise VpatchError("not a wheel or sdist file", path=path)
        return Archive(path.resolve(), _archive_kind(path))
    match = _REQ_RE.match(spec.strip())
    if not match:
        raise VpatchError(f"no such file, and not NAME==VERSION: {spec!r}")
    name, version_text = match["name"], match["version"]
    try:
        version = Version(version_text)
    except InvalidVersion:
        raise VpatchError(f"invalid version in {spec!r}") from None
    cache = project.options.cache_dir
    if canonicalize_name(name) == canonicalize_name(project.pins.project):
        pin = next((p for p in project.pins.pins if p.version == version), None)
        if pin is not None:
            artifact = _pinned_artifact(pin, prefer, wheel_like)
            return Archive(fetch_artifact(cache, artifact, quiet=project.options.json), artifact.kind)
    files = list_release_files(project.options.index_url, name, version)
    wheels = [f for f in files if f.filename.endswith(".whl")]
    sdists = [f for f in files if not f.filename.endswith(".whl")]
    pool = wheels if prefer == "wheel" else sdists
    if not pool:
        raise VpatchError(f"{spec}: the index serves no {prefer} of it (and it is not pinned)")
    chosen = _same_tags(pool, wheel_like) if prefer == "wheel" else pool[0]
    artifact = Artifact(chosen.filename, chosen.sha256, chosen.url)
    return Archive(fetch_artifact(cache, artifact, quiet=project.options.json), artifact.kind)


def _pinned_artifact(pin: Pin, prefer: str, wheel_like: Path | None) -> Artifact:
    if prefer == "sdist":
        if pin.sdist is None:
            raise VpatchError(f"pin {pin.version} has no sdist")
        return pin.sdist
    if not pin.wheels:
        raise VpatchError(f"pin {pin.version} has no stock wheel")
    if wheel_like is not None:
        tags = _tags(wheel_like.name)
        for wheel in pin.wheels:
            if _tags(wheel.file) == tags:
                return wheel
    return pin.wheels[0]


def _tags(filename: str) -> frozenset:
    try:
        return frozenset(parse_wheel_filename(filename)[3])
    except ValueError:
        return frozenset()


def _same_tags(pool: list, wheel_like: Path | None):
    if wheel_like is not None:
        tags = _tags(wheel_like.name)
        for entry in pool:
            if _tags(entry.filename) == tags:
                return entry
    return pool[0]


def _archive_kind(path: Path) -> str:
    if path.name.endswith(".whl"):
        return "wheel"
    try:
        parse_sdist_filename(path.name)
    except InvalidSdistFilename:
        if path.name.endswith((".tar.gz", ".tgz", ".tar")):
            return "sdist"
        raise VpatchError("neither a wheel (.whl) nor an sdist (.tar.gz)", path=path) from None
    return "sdist"
