"""What a wheel's METADATA asks for on this platform: its file, and its Requires-Dist with markers evaluated."""

from __future__ import annotations

import zipfile
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from toolkit.errors import VpatchError


def wheel_metadata(wheel: Path) -> str:
    try:
        with zipfile.ZipFile(wheel) as archive:
            name = next((n for n in archive.namelist() if n.endswith(".dist-info/METADATA")), None)
            if name is None:
                raise VpatchError("the wheel has no METADATA", path=wheel)
            return archive.read(name).decode("utf-8")
    except (zipfile.BadZipFile, OSError) as exc:
        raise VpatchError(f"cannot read the wheel: {exc}", path=wheel) from None


def applicable_requirements(metadata: str, source: Path) -> list[Requirement]:
    """The Requires-Dist of the METADATA's header that apply here (markers evaluated, no extras), each with its
    marker cleared; an unreadable one is an error naming `source`."""
    found = []
    for line in metadata.split("\n\n", 1)[0].splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        try:
            req = Requirement(line.removeprefix("Requires-Dist:").strip())
        except InvalidRequirement as exc:
            raise VpatchError(f"unreadable Requires-Dist {line!r}: {exc}", path=source) from None
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        req.marker = None
        found.append(req)
    return found
