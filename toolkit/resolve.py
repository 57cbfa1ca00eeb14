"""Pin resolution: a release looked up on the index, its files downloaded and verified, its base materialized.

What `vpatch pin add` records in pins.toml and `vpatch rebase --onto NEW` pins on the way.
"""

from __future__ import annotations

from pathlib import Path

from packaging.utils import parse_sdist_filename
from packaging.version import Version

from toolkit import ui
from toolkit.errors import VpatchError
from toolkit.index import fetch_artifact, list_release_files
from toolkit.model import Artifact, Pin
from toolkit.options import Options
from toolkit.sources import materialize

DEFAULT_REMOTE = "https://github.com/vllm-project/vllm.git"


def _absolute_remote(remote: str) -> str:
    """Local paths are made absolute: git runs from inside the cache, not from here."""
    if "://" in remote or remote.startswith("git@"):
        return remote
    path = Path(remote).expanduser()
    return str(path.resolve()) if path.exists() else remote


def resolve_pin(
    options: Options,
    version: Version,
    *,
    source: str = "sdist",
    remote: str = DEFAULT_REMOTE,
    tag: str | None = None,
    commit: str | None = None,
    project: str = "vllm",
) -> Pin:
    """Everything `pin add` does except writing pins.toml: look up, download, verify, materialize."""
    with ui.step(f"look up {project} {version} on {options.index_url}", quiet=options.json):
        files = list_release_files(options.index_url, project, version)
    sdists = [f for f in files if f.filename.endswith(".tar.gz") and parse_sdist_filename(f.filename)[1] == version]
    wheels = [f for f in files if f.filename.endswith(".whl")]
    if not sdists and source == "sdist":
        raise VpatchError(f"{project} {version}: the index has no sdist for this release")
    artifacts: list[Artifact] = []
    for entry in [*sdists[:1], *wheels]:
        artifact = Artifact(entry.filename, entry.sha256, entry.url)
        # The download is hashed locally and must equal the index's hash before it is recorded.
        with ui.step(f"download and verify {entry.filename}", quiet=options.json):
            fetch_artifact(options.cache_dir, artifact, quiet=options.json)
        artifacts.append(artifact)
    sdist = artifacts[0] if sdists else None
    pin = Pin(
        version=version,
        source=source,
        remote=_absolute_remote(remote),
        tag=tag or f"v{version}",
        commit=commit,
        sdist=sdist,
        wheels=tuple(a for a in artifacts if a.kind == "wheel"),
        base_commit=None,
        project=project,
    )
    base_commit = None
    if sdist is not None:
        with ui.step(f"materialize the sdist base of {project} {version}", quiet=options.json):
            base_commit = materialize(pin, options.cache_dir, source="sdist").commit
    if source == "git":
        with ui.step(f"fetch {pin.tag} from {pin.remote}", quiet=options.json):
            commit = materialize(pin, options.cache_dir, source="git").commit
    return Pin(pin.version, pin.source, pin.remote, pin.tag, commit, sdist, pin.wheels, base_commit, project)
