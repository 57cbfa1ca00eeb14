"""The source build: the patched checkout through the standard build frontend (pypa/build).

`VLLM_TARGET_DEVICE` is passed through (`cuda` by default, as vLLM's own builds;
`empty` for a Python-only wheel, the only kind this CPU-only machine can build).
The version comes from `SETUPTOOLS_SCM_PRETEND_VERSION`, since the checkout's git
history is ours, not upstream's. Provenance is added to the built wheel's
dist-info afterwards, RECORD updated.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import os
import tempfile
import time
import zipfile
from pathlib import Path

from packaging.utils import parse_wheel_filename
from packaging.version import Version

from toolkit import faults, tempnames
from toolkit.apply import apply_series
from toolkit.envs import build_env, venv_python
from toolkit.errors import VpatchError
from toolkit.model import Pin
from toolkit.project import Project
from toolkit.wheel.naming import default_version
from toolkit.wheel.overlay import BuiltWheel, build_time
from toolkit.wheel.provenance import PROVENANCE_FILE, FileChanges, Provenance
from toolkit.wheel.zipraw import RawZipWriter, member_spans

TARGET_DEVICES = ("cuda", "rocm", "cpu", "tpu", "xpu", "neuron", "hpu", "openvino", "empty")


def build_source(
    project: Project,
    pin: Pin,
    out_dir: Path,
    *,
    dist_name: str | None = None,
    version: str | None = None,
    target_device: str | None = None,
) -> BuiltWheel:
    started = time.perf_counter()
    device = target_device or os.environ.get("VLLM_TARGET_DEVICE") or "cuda"
    if device not in TARGET_DEVICES:
        raise VpatchError(f"VLLM_TARGET_DEVICE={device!r} is not one of {', '.join(TARGET_DEVICES)}")
    if dist_name and dist_name != pin.project:
        raise VpatchError("--dist-name is for overlay builds; a source build keeps the project's own name")
    series = project.series(pin)
    wanted = Version(version) if version else default_version(pin.version, series.fingerprint())
    env_dir = build_env(project.options.cache_dir)
    with project.scratch_checkout(pin) as checkout:
        result = apply_series(checkout, series)
        if not result.ok:
            stopped = result.stopped_at
            assert stopped is not None
            raise VpatchError(
                f"does not apply to {pin.label}: {'; '.join(stopped.details)}", path=series.directory / stopped.name
            )
        diff = checkout.git.name_status("refs/vpatch/upstream", "HEAD")
        changes = _changes(diff)
        env = dict(os.environ)
        env.update(
            {
                "VLLM_TARGET_DEVICE": device,
                "SETUPTOOLS_SCM_PRETEND_VERSION": str(wanted),
                "MAX_JOBS": env.get("MAX_JOBS", str(os.cpu_count() or 1)),
                "PIP_NO_INPUT": "1",
            }
        )
        with tempfile.TemporaryDirectory(prefix=tempnames.prefix("source-build"), dir=checkout.path.parent) as tmp:
            import subprocess

            proc = subprocess.run(
                [
                    str(venv_python(env_dir)),
                    "-m",
                    "build",
                    "--wheel",
                    "--no-isolation",
                    "--skip-dependency-check",
                    "--outdir",
                    tmp,
                    str(checkout.path),
                ],
                capture_output=True,
                text=True,
                env=env,
                cwd=checkout.path,
            )
            if proc.returncode != 0:
                log = out_dir / f"build-{pin.version}-{device}.log"
                out_dir.mkdir(parents=True, exist_ok=True)
                log.write_text(proc.stdout + proc.stderr)
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise VpatchError(
                    f"source build of {pin.label} (VLLM_TARGET_DEVICE={device}) failed: {last} (full log: {log})"
                )
            built = next(Path(tmp).glob("*.whl"), None)
            if built is None:
                raise VpatchError(f"source build of {pin.label} produced no wheel")
            timestamp, time_source = build_time(zipfile.ZipFile(built))
            _, built_version, _, _ = parse_wheel_filename(built.name)
            provenance = Provenance(
                pin=pin,
                series=series,
                base_commit=checkout.base_commit,
                stock_wheel="",
                stock_sha256="",
                dist_name=pin.project,
                version=str(built_version),
                mode=f"source ({device})",
                time_source=time_source,
                timestamp=timestamp,
                changes=changes,
            )
            target = _add_provenance(built, out_dir, provenance)
    return BuiltWheel(
        target,
        pin.project,
        built_version,
        target.stat().st_size,
        target,
        provenance,
        time.perf_counter() - started,
    )


def _changes(diff: str) -> FileChanges:
    modified: list[str] = []
    added: list[str] = []
    removed: list[str] = []
    for line in diff.splitlines():
        status, path = line.split("\t", 1)
        {"A": added, "D": removed}.get(status, modified).append(path)
    return FileChanges(tuple(modified), tuple(added), tuple(removed))


def _add_provenance(built: Path, out_dir: Path, provenance: Provenance) -> Path:
    """Copy the built wheel into `out_dir` with the provenance file added to its dist-info and RECORD."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / built.name
    tempnames.sweep(out_dir)  # partial wheels of killed builds
    fd, tmp_name = tempfile.mkstemp(prefix=tempnames.prefix(built.name), suffix=".tmp", dir=out_dir)
    tmp = Path(tmp_name)
    try:
        with (
            zipfile.ZipFile(built) as source_zip,
            built.open("rb") as source,
            os.fdopen(fd, "w+b") as out,
            RawZipWriter(out) as writer,
        ):
            infos = source_zip.infolist()
            dist_info = next(i.filename.split("/")[0] for i in infos if i.filename.split("/")[0].endswith(".dist-info"))
            record_name = f"{dist_info}/RECORD"
            spans = member_spans(source_zip, built.stat().st_size)
            data = provenance.to_json()
            date_time = time.gmtime(provenance.timestamp)[:6]
            for info in infos:
                if info.filename != record_name:
                    writer.copy_raw(source, info, spans[info.filename])
            writer.write(f"{dist_info}/{PROVENANCE_FILE}", data, date_time=date_time)
            rows = [
                r for r in csv.reader(io.StringIO(source_zip.read(record_name).decode())) if r and r[0] != record_name
            ]
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows += [[f"{dist_info}/{PROVENANCE_FILE}", f"sha256={digest}", str(len(data))], [record_name, "", ""]]
            record = io.StringIO()
            csv.writer(record, lineterminator="\n").writerows(rows)
            writer.write(record_name, record.getvalue().encode(), date_time=date_time)
            faults.reached("wheel.write")
            writer.close()
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return target
