"""The import stage's options and its product: the new patches, notes and what was skipped."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from toolkit.importer.features import FeatureRule


@dataclass(frozen=True)
class ImportOptions:
    split: str = "none"
    feature: str | None = None  # the default feature (all files, without rules)
    feature_rules: tuple[FeatureRule, ...] = ()  # --feature GLOB=NAME flags, then the --feature-map's
    upstream_status: str | None = None
    subject: str | None = None
    author: str | None = None
    date: str | None = None  # git's raw form (`EPOCH +HHMM`), from --date
    allow_offset: bool = False
    dry_run: bool = False


@dataclass(frozen=True)
class NewPatch:
    name: str
    subject: str
    feature: str
    upstream_status: str
    origin: str
    author: str
    files: tuple[str, ...]
    added: int
    removed: int


@dataclass
class ImportResult:
    version: str
    directory: Path
    existing: int
    patches: list[NewPatch]
    notes: list[str]
    skipped: list[str]
    source: dict
    written: bool = False
    seconds: float = 0.0
    already: list[str] = field(default_factory=list)  # the series' patches that carry this source already

    def as_dict(self) -> dict:
        return {
            "version": self.version,
            "directory": str(self.directory),
            "existing": self.existing,
            "source": self.source,
            "patches": [p.__dict__ for p in self.patches],
            "notes": self.notes,
            "skipped": self.skipped,
            "written": self.written,
            "already_imported": self.already,
            "seconds": round(self.seconds, 3),
        }
