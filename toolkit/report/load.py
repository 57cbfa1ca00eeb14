"""Read and validate the report's inputs into a small typed model.

The input is the directory `vpatch ci` wrote: `ci-summary.json` (schema 1) and the conformance results it
points to (`conform/<project>-<version>-<tier>.json`, schema 1, relative to the input directory); the
retirement evidence (`patches/<project>-<version>/evidence.json`) is relative to the project root.

A summary that is missing, not JSON, of another schema or of the wrong shape is an error (`VpatchError`,
one line naming the file and the field). A conformance or evidence file that is missing or unreadable is
not: the report shows the problem where the results would have been (`error` on the loaded record).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion
from packaging.version import Version as PackagingVersion

from toolkit.errors import VpatchError
from toolkit.model import UpstreamStatus

SUMMARY_FILE = "ci-summary.json"
SUMMARY_SCHEMA = 1
CONFORMANCE_SCHEMA = 1
EVIDENCE_FORMAT = 1
TIER_ORDER = ("static", "cpu", "gpu")
CHECK_STATUSES = ("pass", "fail", "not-applicable")
STEP_STATUSES = ("pass", "fail", "skipped")
_URL = re.compile(r"^https?://[^\s<>\"']+$")


class Invalid(Exception):
    """A field of an input file has the wrong shape; `where` is its path inside the document."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    native_since: str | None


@dataclass(frozen=True)
class Patch:
    name: str
    subject: str
    feature: str | None
    upstream_status: str
    files: tuple[str, ...]
    added_lines: int
    removed_lines: int
    apply: str | None
    rebase: str | None
    retired_since: str | None

    def active_in(self, version: str) -> bool:
        """Whether the patch is in force in `version`: not retired, or retired only from a later release on
        (the last series carrying a patch records its `Retired-Since:`)."""
        if self.retired_since is None:
            return True
        try:
            return PackagingVersion(self.retired_since) > PackagingVersion(version)
        except InvalidVersion:
            return False

    @property
    def changed_lines(self) -> int:
        return self.added_lines + self.removed_lines

    @property
    def upstream_kind(self) -> str:
        try:
            return UpstreamStatus.parse(self.upstream_status).kind
        except ValueError:
            return ""

    @property
    def upstream_url(self) -> str | None:
        """The status's bracketed detail when it is an http(s) URL (Submitted, Backport, Denied)."""
        try:
            detail = UpstreamStatus.parse(self.upstream_status).detail
        except ValueError:
            return None
        return detail if _URL.match(detail) else None


@dataclass(frozen=True)
class Series:
    fingerprint: str
    patches: tuple[Patch, ...]
    version: str

    @property
    def active(self) -> tuple[Patch, ...]:
        return tuple(p for p in self.patches if p.active_in(self.version))

    @property
    def changed_lines(self) -> int:
        """Lines added plus lines removed by the active (not retired) patches."""
        return sum(p.changed_lines for p in self.active)


@dataclass(frozen=True)
class Step:
    name: str
    status: str
    seconds: float
    detail: str


@dataclass(frozen=True)
class Wheel:
    file: str
    version: str
    sha256: str
    size: int
    seconds: float


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    diff: str
    seconds: float


@dataclass(frozen=True)
class Conformance:
    """One tier's results file; `error` says why it could not be read (then `checks` is empty)."""

    tier: str
    path: str
    error: str | None = None
    checks: tuple[Check, ...] = ()
    ok: bool | None = None
    started: str = ""
    seconds: float = 0.0
    python: str = ""
    stock_wheel: str = ""
    patched_wheel: str = ""

    def count(self, status: str) -> int:
        return sum(1 for c in self.checks if c.status == status)

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status == "fail")


@dataclass(frozen=True)
class EvidencePatch:
    name: str
    subject: str
    feature: str | None
    outcome: str
    kept: bool
    signals: tuple[str, ...]


@dataclass(frozen=True)
class Dropped:
    name: str
    feature: str | None
    reason: str
    dropped_in: str | None


@dataclass(frozen=True)
class Evidence:
    """A rebase's evidence.json; `error` says why it could not be read."""

    path: str
    error: str | None = None
    old_version: str = ""
    new_version: str = ""
    patches: tuple[EvidencePatch, ...] = ()
    dropped: tuple[Dropped, ...] = ()
    earlier: tuple[Dropped, ...] = ()


@dataclass(frozen=True)
class Version:
    version: str
    verdict: str
    series: Series | None
    steps: tuple[Step, ...]
    wheel: Wheel | None
    conformance: tuple[Conformance, ...]
    evidence: Evidence | None

    @property
    def failed_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.status == "fail")


@dataclass(frozen=True)
class Report:
    project: str
    toolkit: str
    started: str
    seconds: float
    ok: bool
    features: tuple[Feature, ...]
    versions: tuple[Version, ...]

    @property
    def project_name(self) -> str:
        return "vLLM" if self.project == "vllm" else self.project

    @property
    def problems(self) -> list[str]:
        """The input files the report could not read (shown in the report, not fatal)."""
        found = [c.error for v in self.versions for c in v.conformance if c.error]
        found += [v.evidence.error for v in self.versions if v.evidence and v.evidence.error]
        return found


# ---------------------------------------------------------------- field access with validation

_KINDS: dict[str, tuple[str, Any]] = {
    "str": ("a string", lambda v: isinstance(v, str)),
    "int": ("a non-negative integer", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    "number": (
        "a non-negative number",
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v >= 0,
    ),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "list": ("a list", lambda v: isinstance(v, list)),
    "object": ("an object", lambda v: isinstance(v, dict)),
}
_MISSING = object()


def _get(data: dict, key: str, where: str, kind: str, *, null: bool = False, default: Any = _MISSING) -> Any:
    here = f"{where}.{key}" if where else key
    if key not in data:
        if default is _MISSING:
            raise Invalid(here, f"missing (expected {_KINDS[kind][0]})")
        return default
    value = data[key]
    if value is None and null:
        return None
    description, ok = _KINDS[kind]
    if not ok(value):
        raise Invalid(here, f"expected {description}{' or null' if null else ''}, got {_show(value)}")
    return value


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_json(path: Path) -> Any:
    """The parsed document, or OSError / ValueError with a message free of absolute paths."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OSError("not found") from None
    except IsADirectoryError:
        raise OSError("is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise OSError(exc.strerror or type(exc).__name__) from None
    return json.loads(text)


# ---------------------------------------------------------------- the summary


def load_report(input_dir: Path, root: Path) -> Report:
    """Read INPUT/ci-summary.json and everything it points to; evidence paths are relative to `root`."""
    path = input_dir / SUMMARY_FILE
    if not input_dir.is_dir():
        raise VpatchError("no such directory (the output directory of `vpatch ci`)", path=input_dir)
    if not path.exists():
        raise VpatchError("not found: run `vpatch ci` first, or point -i at its output directory", path=path)
    try:
        data = _read_json(path)
    except json.JSONDecodeError as exc:
        raise VpatchError(f"invalid JSON: {exc.msg} (column {exc.colno})", path=path, line=exc.lineno) from None
    except (OSError, ValueError) as exc:
        raise VpatchError(str(exc), path=path) from None
    try:
        return _report(data, input_dir, root)
    except Invalid as exc:
        raise VpatchError(str(exc), path=path) from None


def _report(data: Any, input_dir: Path, root: Path) -> Report:
    if not isinstance(data, dict):
        raise Invalid("", f"expected a JSON object, got {_show(data)}")
    schema = data.get("schema")
    if schema != SUMMARY_SCHEMA:
        raise Invalid(
            "schema", f"unsupported schema {_show(schema)} (this vpatch reads schema {SUMMARY_SCHEMA}); upgrade vpatch"
        )
    features = []
    for name, entry in sorted(_get(data, "features", "", "object", default={}).items()):
        where = f"features.{name}"
        if not isinstance(entry, dict):
            raise Invalid(where, f"expected an object, got {_show(entry)}")
        features.append(
            Feature(
                name,
                _get(entry, "description", where, "str", default=""),
                _get(entry, "native_since", where, "str", null=True, default=None),
            )
        )
    versions: list[Version] = []
    seen: set[str] = set()
    for position, entry in enumerate(_get(data, "versions", "", "list")):
        version = _version(entry, f"versions[{position}]", input_dir, root)
        if version.version in seen:
            raise Invalid(f"versions[{position}].version", f"{version.version} appears more than once")
        seen.add(version.version)
        versions.append(version)
    return Report(
        project=_get(data, "project", "", "str"),
        toolkit=_get(data, "toolkit", "", "str", default=""),
        started=_get(data, "started", "", "str"),
        seconds=float(_get(data, "seconds", "", "number", default=0.0)),
        ok=_get(data, "ok", "", "bool"),
        features=tuple(features),
        versions=tuple(versions),
    )


def _version(entry: Any, where: str, input_dir: Path, root: Path) -> Version:
    if not isinstance(entry, dict):
        raise Invalid(where, f"expected an object, got {_show(entry)}")
    version = _get(entry, "version", where, "str")
    raw_series = _get(entry, "series", where, "object", null=True, default=None)
    series = _series(raw_series, f"{where}.series", version) if raw_series is not None else None
    steps = []
    for position, step in enumerate(_get(entry, "steps", where, "list", default=[])):
        here = f"{where}.steps[{position}]"
        if not isinstance(step, dict):
            raise Invalid(here, f"expected an object, got {_show(step)}")
        status = _get(step, "status", here, "str")
        if status not in STEP_STATUSES:
            raise Invalid(f"{here}.status", f"unknown status {_show(status)} (expected {', '.join(STEP_STATUSES)})")
        steps.append(
            Step(
                _get(step, "name", here, "str"),
                status,
                float(_get(step, "seconds", here, "number", default=0.0)),
                _get(step, "detail", here, "str", null=True, default="") or "",
            )
        )
    raw_wheel = _get(entry, "wheel", where, "object", null=True, default=None)
    wheel = None
    if raw_wheel is not None:
        here = f"{where}.wheel"
        wheel = Wheel(
            _get(raw_wheel, "file", here, "str"),
            _get(raw_wheel, "version", here, "str"),
            _get(raw_wheel, "sha256", here, "str"),
            _get(raw_wheel, "size", here, "int"),
            float(_get(raw_wheel, "seconds", here, "number", default=0.0)),
        )
    conformance_paths = _get(entry, "conformance", where, "object", null=True, default=None) or {}
    for tier, rel in conformance_paths.items():
        if not isinstance(rel, str) or not rel:
            raise Invalid(
                f"{where}.conformance.{tier}", f"expected a path relative to the input directory, got {_show(rel)}"
            )
    tiers = sorted(conformance_paths, key=lambda t: (TIER_ORDER.index(t) if t in TIER_ORDER else len(TIER_ORDER), t))
    conformance = tuple(_conformance(input_dir, conformance_paths[t], version, t) for t in tiers)
    evidence_path = _get(entry, "evidence", where, "str", null=True, default=None)
    return Version(
        version=version,
        verdict=_get(entry, "verdict", where, "str", null=True, default=None) or "no verdict recorded",
        series=series,
        steps=tuple(steps),
        wheel=wheel,
        conformance=conformance,
        evidence=_evidence(root, evidence_path) if evidence_path else None,
    )


def _series(data: dict, where: str, version: str) -> Series:
    patches = []
    for position, entry in enumerate(_get(data, "patches", where, "list")):
        here = f"{where}.patches[{position}]"
        if not isinstance(entry, dict):
            raise Invalid(here, f"expected an object, got {_show(entry)}")
        files = _get(entry, "files", here, "list", default=[])
        if not all(isinstance(f, str) for f in files):
            raise Invalid(f"{here}.files", "expected a list of paths")
        patches.append(
            Patch(
                name=_get(entry, "name", here, "str"),
                subject=_get(entry, "subject", here, "str", default=""),
                feature=_get(entry, "feature", here, "str", null=True, default=None),
                upstream_status=_get(entry, "upstream_status", here, "str", null=True, default="") or "",
                files=tuple(files),
                added_lines=_get(entry, "added_lines", here, "int"),
                removed_lines=_get(entry, "removed_lines", here, "int"),
                apply=_get(entry, "apply", here, "str", null=True, default=None),
                rebase=_get(entry, "rebase", here, "str", null=True, default=None),
                retired_since=_get(entry, "retired_since", here, "str", null=True, default=None),
            )
        )
    return Series(_get(data, "fingerprint", where, "str"), tuple(patches), version)


# ---------------------------------------------------------------- conformance results and evidence


def _conformance(input_dir: Path, rel: str, version: str, tier: str) -> Conformance:
    try:
        data = _read_json(input_dir / rel)
    except json.JSONDecodeError as exc:
        return Conformance(tier, rel, f"{rel}:{exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})")
    except (OSError, ValueError) as exc:
        return Conformance(tier, rel, f"{rel}: {exc}")
    try:
        return _conformance_data(data, rel, version, tier)
    except Invalid as exc:
        return Conformance(tier, rel, f"{rel}: {exc}")


def _conformance_data(data: Any, rel: str, version: str, tier: str) -> Conformance:
    if not isinstance(data, dict):
        raise Invalid("", f"expected a JSON object, got {_show(data)}")
    if data.get("schema") != CONFORMANCE_SCHEMA:
        raise Invalid("schema", f"unsupported schema {_show(data.get('schema'))} (expected {CONFORMANCE_SCHEMA})")
    found = (_get(data, "version", "", "str"), _get(data, "tier", "", "str"))
    if found != (version, tier):
        raise Invalid("", f"holds the results of {found[0]} {found[1]}, not {version} {tier}")
    checks = []
    for position, entry in enumerate(_get(data, "checks", "", "list")):
        here = f"checks[{position}]"
        if not isinstance(entry, dict):
            raise Invalid(here, f"expected an object, got {_show(entry)}")
        status = _get(entry, "status", here, "str")
        if status not in CHECK_STATUSES:
            raise Invalid(f"{here}.status", f"unknown status {_show(status)} (expected {', '.join(CHECK_STATUSES)})")
        checks.append(
            Check(
                _get(entry, "name", here, "str"),
                status,
                _get(entry, "detail", here, "str", default=""),
                _get(entry, "diff", here, "str", default=""),
                float(_get(entry, "seconds", here, "number", default=0.0)),
            )
        )
    stock = _get(data, "stock", "", "object", null=True, default=None) or {}
    patched = _get(data, "patched", "", "object", null=True, default=None) or {}
    return Conformance(
        tier=tier,
        path=rel,
        checks=tuple(checks),
        ok=_get(data, "ok", "", "bool"),
        started=_get(data, "started", "", "str", default=""),
        seconds=float(_get(data, "seconds", "", "number", default=0.0)),
        python=_get(data, "python", "", "str", default=""),
        stock_wheel=str(stock.get("wheel") or ""),
        patched_wheel=str(patched.get("wheel") or ""),
    )


def _evidence(root: Path, rel: str) -> Evidence:
    try:
        data = _read_json(root / rel)
    except json.JSONDecodeError as exc:
        return Evidence(rel, f"{rel}:{exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})")
    except (OSError, ValueError) as exc:
        return Evidence(rel, f"{rel}: {exc}")
    try:
        return _evidence_data(data, rel)
    except Invalid as exc:
        return Evidence(rel, f"{rel}: {exc}")


def _dropped(entries: list, where: str) -> tuple[Dropped, ...]:
    result = []
    for position, entry in enumerate(entries):
        here = f"{where}[{position}]"
        if not isinstance(entry, dict):
            raise Invalid(here, f"expected an object, got {_show(entry)}")
        result.append(
            Dropped(
                _get(entry, "name", here, "str"),
                _get(entry, "feature", here, "str", null=True, default=None),
                _get(entry, "reason", here, "str", default=""),
                _get(entry, "dropped_in", here, "str", null=True, default=None),
            )
        )
    return tuple(result)


def _evidence_data(data: Any, rel: str) -> Evidence:
    if not isinstance(data, dict):
        raise Invalid("", f"expected a JSON object, got {_show(data)}")
    if data.get("format") != EVIDENCE_FORMAT:
        raise Invalid("format", f"unsupported format {_show(data.get('format'))} (expected {EVIDENCE_FORMAT})")
    patches = []
    raw = _get(data, "patches", "", "object", default={})
    ordered = sorted(raw.items(), key=lambda item: (_position(item[1]), item[0]))
    for name, entry in ordered:
        here = f"patches.{name}"
        if not isinstance(entry, dict):
            raise Invalid(here, f"expected an object, got {_show(entry)}")
        signals = _get(entry, "upstream_signals", here, "list", default=[])
        patches.append(
            EvidencePatch(
                name=name,
                subject=_get(entry, "subject", here, "str", default=""),
                feature=_get(entry, "feature", here, "str", null=True, default=None),
                outcome=_get(entry, "outcome", here, "str", default=""),
                kept=_get(entry, "kept", here, "bool", default=False),
                signals=tuple(str(s) for s in signals),
            )
        )
    old = _get(data, "old", "", "object", default={})
    new = _get(data, "new", "", "object", default={})
    return Evidence(
        path=rel,
        old_version=str(old.get("version") or ""),
        new_version=str(new.get("version") or ""),
        patches=tuple(patches),
        dropped=_dropped(_get(data, "dropped", "", "list", default=[]), "dropped"),
        earlier=_dropped(_get(data, "earlier", "", "list", default=[]), "earlier"),
    )


def _position(entry: Any) -> int:
    position = entry.get("position") if isinstance(entry, dict) else None
    return position if isinstance(position, int) and not isinstance(position, bool) else 1 << 30
