"""Provenance: what a dynamo-base wheel contains, recorded in its dist-info as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from toolkit import __version__ as toolkit_version
from toolkit.model import Pin, Series

PROVENANCE_FILE = "dynamo_base.json"
SCHEMA = 1


@dataclass(frozen=True)
class FileChanges:
    """How the patched tree differs from the stock wheel's files."""

    modified: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    generated: tuple[str, ...] = ()  # rewritten by the build itself (version file), not by a patch
    not_shipped: tuple[str, ...] = ()  # touched by patches but not part of the wheel (tests, docs)

    @property
    def patched(self) -> set[str]:
        return {*self.modified, *self.added, *self.removed}


@dataclass(frozen=True)
class Provenance:
    pin: Pin
    series: Series
    base_commit: str
    stock_wheel: str
    stock_sha256: str
    dist_name: str
    version: str
    mode: str
    time_source: str
    timestamp: int
    changes: FileChanges
    compiled: dict[str, str] = field(default_factory=dict)  # member -> sha256 (from the stock RECORD)
    flavor: dict | None = None  # a build over a flavor's wheel (toolkit/wheel/flavor.py): what it was built on

    def to_json(self) -> bytes:
        patches = []
        for patch in self.series.patches:
            status = patch.upstream_status_text
            patches.append(
                {
                    "file": patch.name,
                    "sha256": patch.sha256,
                    "subject": patch.subject,
                    "feature": patch.feature,
                    "upstream_status": status,
                }
            )
        data = {
            "schema": SCHEMA,
            "kind": "dynamo-base",
            "distribution": {"name": self.dist_name, "version": self.version},
            "upstream": {
                "project": self.pin.project,
                "version": str(self.pin.version),
                "sdist_sha256": self.pin.sdist.sha256 if self.pin.sdist else None,
                "wheel": self.stock_wheel,
                "wheel_sha256": self.stock_sha256,
                "base_commit": self.base_commit,
                "source": self.pin.source,
            },
            "series": {
                "fingerprint": self.series.fingerprint(),
                "features": sorted({p.feature for p in self.series.patches}),
                "patches": patches,
            },
            "files": {
                "modified": list(self.changes.modified),
                "added": list(self.changes.added),
                "removed": list(self.changes.removed),
                "generated": list(self.changes.generated),
                "not_shipped": list(self.changes.not_shipped),
            },
            "compiled": self.compiled,
            "toolkit": {"name": "vpatch", "version": toolkit_version},
            "build": {"mode": self.mode, "time_source": self.time_source, "timestamp": self.timestamp},
        }
        if self.flavor is not None:
            data["flavor"] = self.flavor
        return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


def read_provenance(data: bytes) -> dict:
    return json.loads(data.decode("utf-8"))
