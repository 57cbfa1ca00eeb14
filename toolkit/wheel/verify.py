"""Verification of a dynamo-base wheel, after `vpatch build` or on its own (`vpatch verify WHEEL`).

Each check is named and reports ok / failed with a reason:
- names: no member escapes the install tree;
- metadata: file name, dist-info directory, METADATA Name/Version, WHEEL tags and provenance agree;
- record: RECORD lists every member once, with the right sha256 and size (all recomputed, once per
  wheel sha256: a pass is kept in the cache and reused for the same bytes, as the install checks are);
- stock-members: every member the build did not change is byte-identical to the pinned stock wheel
  (compressed bytes, CRC and sizes), compiled `.so` files above all;
- changed-set: the members that differ from the stock wheel are exactly the files the series changes
  (plus the version file the build regenerates);
- check-wheel-contents: the linter passes, with each ignored check justified below;
- install-pip / install-uv: `pip install --no-deps` and `uv pip install --no-deps` into fresh venvs (with
  the runtime layer and the wheel's own requirements beyond stock), then the installed distribution and
  `vllm.__version__` report the wheel's version; a missing module is named with the patch that imports it.

A wheel without vpatch's provenance (a fork's own unpack-patch-repack) gets `stock-diff` and, when its pin
has a series, `changed-set` instead (toolkit/wheel/foreign.py). Warnings (not failures): a distribution
name the series' code contradicts (toolkit/wheel/blame.py).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import subprocess
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from toolkit import __version__ as toolkit_version
from toolkit.cache import sha256_file
from toolkit.errors import VpatchError
from toolkit.index import fetch_artifact
from toolkit.model import Artifact, check_tree_path
from toolkit.wheel.blame import Added, added_by_files, added_by_patches, dist_name_contradictions, who_imports
from toolkit.wheel.foreign import changed_python, check_foreign, pin_of
from toolkit.wheel.kept import as_reused, keep, kept_path, read_kept
from toolkit.wheel.naming import dist_info_dir, wheel_tags
from toolkit.wheel.provenance import PROVENANCE_FILE, read_provenance

# check-wheel-contents checks we ignore, and why.
CHECK_WHEEL_CONTENTS_IGNORES = {
    # vLLM's stock wheels ship byte-identical kernel tuning configs under several device names
    # (e.g. AMD_Instinct_MI325X and AMD_Instinct_MI325_OAM); the overlay carries them unchanged.
    "W002": "duplicate files shipped by the stock vLLM wheel",
}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class VerifyReport:
    wheel: Path
    checks: list[Check] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append(Check(name, ok, detail))

    def as_dict(self) -> dict:
        return {
            "wheel": str(self.wheel),
            "ok": self.ok,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "warnings": self.warnings,
        }


def _record_digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _raw_bytes(archive: zipfile.ZipFile, handle, info: zipfile.ZipInfo) -> bytes:
    """The member's compressed bytes as stored (for byte-identity with the stock wheel)."""
    handle.seek(info.header_offset)
    header = handle.read(30)
    name_len = int.from_bytes(header[26:28], "little")
    extra_len = int.from_bytes(header[28:30], "little")
    handle.seek(info.header_offset + 30 + name_len + extra_len)
    return handle.read(info.compress_size)


def verify_wheel(path: Path, project=None, *, install: bool = True, runtime: bool = True) -> VerifyReport:
    report = VerifyReport(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise VpatchError(f"not a wheel: {exc}", path=path) from None
    with archive:
        infos = archive.infolist()
        names = [i.filename for i in infos]
        unsafe = [f"{n}: {p}" for n in names if (p := check_tree_path(n.rstrip("/")))]
        report.add(
            "names",
            not unsafe and len(set(names)) == len(names),
            "; ".join(unsafe) or ("" if len(set(names)) == len(names) else "duplicate member names"),
        )
        try:
            dist, version, _, _ = parse_wheel_filename(path.name)
        except Exception as exc:  # packaging raises several types for bad names
            report.add("metadata", False, f"bad wheel file name: {exc}")
            return report
        dist_info = next((n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")), "")
        provenance = (
            read_provenance(archive.read(f"{dist_info}/{PROVENANCE_FILE}"))
            if f"{dist_info}/{PROVENANCE_FILE}" in names
            else None
        )
        _check_metadata(report, archive, path, dist, version, dist_info, provenance)
        # The wheel's sha256 keys the results that depend on its bytes alone (RECORD, installs).
        wheel_sha = sha256_file(path) if project is not None else None
        _check_record_once(report, archive, dist_info, project, wheel_sha)
        found = None
        if provenance is None:
            # Built by someone else's recipe (unpack, patch, repack): read against the stock wheel instead.
            report.add("provenance", True, f"none ({dist_info}/{PROVENANCE_FILE}): not built by vpatch")
            if project is not None:
                found = check_foreign(report, archive, version, project)
        elif project is not None and provenance["build"]["mode"] == "overlay":
            # Source builds are compiled (or Python-only) afresh: there is no stock wheel to compare with.
            _check_against_stock(report, archive, path, provenance, project)
        lines = added_lines(project, provenance, version, archive, found)
    report.warnings += dist_name_contradictions(dist, lines)
    _check_wheel_contents(report, path)
    if install:
        from toolkit.wheel.install import install_checks

        overlay = provenance is not None and provenance["build"]["mode"] == "overlay"
        for name, ok, detail in install_checks(
            path,
            str(version),
            project,
            runtime=runtime,
            exact_module_version=overlay,
            sha256=wheel_sha,
            blame=lambda module: _blame(module, lines),
        ):
            report.add(name, ok, detail)
    return report


def added_lines(project, provenance: dict | None, version, archive: zipfile.ZipFile, found) -> list[Added]:
    """The lines the wheel's changes add: its series' patches (the pin of its provenance, else of its
    version), or the changed Python files of a wheel vpatch did not build whose pin has no series."""
    if project is not None:
        release = provenance["upstream"]["version"] if provenance is not None else version
        pin = pin_of(project, Version(str(release)))
        if pin is not None and project.has_series(pin):
            return added_by_patches(project.series(pin).patches)
    if found is not None:
        return added_by_files(changed_python(archive, found))
    return []


def _blame(module: str, lines: list[Added]) -> str | None:
    added = who_imports(module, lines)
    if added is None:
        return None
    return f"{module} is imported by {added.where()}: {added.text.strip()}"


def _check_metadata(
    report: VerifyReport,
    archive: zipfile.ZipFile,
    path: Path,
    dist: str,
    version,
    dist_info: str,
    provenance: dict | None,
) -> None:
    problems = []
    expected_dir = dist_info_dir(dist, version)
    if dist_info != expected_dir:
        problems.append(f"dist-info directory {dist_info!r}, expected {expected_dir!r}")
    try:
        metadata = archive.read(f"{dist_info}/METADATA").decode()
        headers = metadata.split("\n\n", 1)[0].splitlines()
        meta = {k: v.strip() for k, _, v in (h.partition(":") for h in headers) if k in ("Name", "Version")}
        if canonicalize_name(meta.get("Name", "")) != dist:
            problems.append(f"METADATA Name {meta.get('Name')!r} does not match the file name ({dist})")
        if meta.get("Version") != str(version):
            problems.append(f"METADATA Version {meta.get('Version')!r} does not match the file name ({version})")
        wheel = archive.read(f"{dist_info}/WHEEL").decode()
        tags = sorted(line.split(":", 1)[1].strip() for line in wheel.splitlines() if line.startswith("Tag:"))
        if tags != wheel_tags(path.name):
            problems.append(f"WHEEL tags {tags} do not match the file name's {wheel_tags(path.name)}")
    except KeyError as exc:
        problems.append(f"missing {exc}")
    if provenance is not None and provenance["distribution"]["version"] != str(version):
        problems.append("provenance records another version")
    report.add("metadata", not problems, "; ".join(problems))


def _check_record_once(
    report: VerifyReport, archive: zipfile.ZipFile, dist_info: str, project, wheel_sha: str | None
) -> None:
    """The RECORD check (every member inflated and hashed: seconds for vLLM), once per wheel sha256."""
    if wheel_sha is None:
        _check_record(report, archive, dist_info)
        return
    kept = kept_path(project.options.cache_dir, "verify", ["record", wheel_sha, toolkit_version])
    reused = read_kept(kept)
    if reused is not None:
        for name, ok, detail in as_reused(reused):
            report.add(name, ok, detail)
        return
    first = len(report.checks)
    _check_record(report, archive, dist_info)
    keep(kept, [(c.name, c.ok, c.detail) for c in report.checks[first:]])


def _check_record(report: VerifyReport, archive: zipfile.ZipFile, dist_info: str) -> None:
    record_name = f"{dist_info}/RECORD"
    try:
        rows = list(csv.reader(io.StringIO(archive.read(record_name).decode())))
    except KeyError:
        report.add("record", False, "RECORD is missing")
        return
    listed: dict[str, tuple[str, str]] = {}
    problems = []
    for row in rows:
        if not row:
            continue
        if len(row) != 3:
            problems.append(f"malformed RECORD row {row!r}")
            continue
        if row[0] in listed:
            problems.append(f"{row[0]} listed twice")
        listed[row[0]] = (row[1], row[2])
    members = {i.filename: i for i in archive.infolist() if not i.filename.endswith("/")}
    for name in sorted(set(members) - set(listed)):
        problems.append(f"{name} is not in RECORD")
    for name in sorted(set(listed) - set(members)):
        problems.append(f"RECORD lists {name}, which the wheel does not contain")
    for name, info in members.items():
        if name == record_name or name not in listed:
            continue
        digest, size = listed[name]
        sha = hashlib.sha256()
        with archive.open(info) as handle:
            while chunk := handle.read(1 << 20):
                sha.update(chunk)
        actual = "sha256=" + base64.urlsafe_b64encode(sha.digest()).rstrip(b"=").decode()
        if digest != actual or size != str(info.file_size):
            problems.append(f"{name}: RECORD says {digest},{size}; content is {actual},{info.file_size}")
    report.add(
        "record",
        not problems,
        "; ".join(problems[:10]) + (f" (+{len(problems) - 10} more)" if len(problems) > 10 else ""),
    )


def _check_against_stock(report: VerifyReport, archive: zipfile.ZipFile, path: Path, provenance: dict, project) -> None:
    upstream = provenance["upstream"]
    stock_artifact = Artifact(upstream["wheel"], upstream["wheel_sha256"])
    # a flavor build's "stock" wheel is the flavor's pinned wheel it was overlaid on
    wheels = [w for p in project.pins.pins for w in (*p.wheels, *(fw for f in p.flavors for fw in f.wheels))]
    pinned = [w for w in wheels if w.sha256 == stock_artifact.sha256]
    if not pinned:
        report.add("stock-members", False, f"the stock wheel {stock_artifact.file} is not pinned here")
        return
    try:
        stock_path = fetch_artifact(project.options.cache_dir, pinned[0], quiet=True)
    except VpatchError as error:
        report.add("stock-members", False, error.message)
        return
    files = provenance["files"]
    declared = {*files["modified"], *files["added"], *files["removed"], *files["generated"]}
    with zipfile.ZipFile(stock_path) as stock, stock_path.open("rb") as stock_handle, path.open("rb") as handle:
        stock_infos = {i.filename: i for i in stock.infolist()}
        ours = {i.filename: i for i in archive.infolist()}
        stock_dist_info = next(n.split("/")[0] for n in stock_infos if n.split("/")[0].endswith(".dist-info"))
        our_dist_info = next(n.split("/")[0] for n in ours if n.split("/")[0].endswith(".dist-info"))
        mismatched, changed = [], set()
        for name, info in stock_infos.items():
            if name.startswith(stock_dist_info + "/"):
                continue
            mine = ours.get(name)
            if mine is None:
                changed.add(name)
                continue
            same = (mine.CRC, mine.file_size) == (info.CRC, info.file_size)
            if not same:
                changed.add(name)
                continue
            if name not in declared and _raw_bytes(archive, handle, mine) != _raw_bytes(stock, stock_handle, info):
                mismatched.append(name)
        changed |= {n for n in ours if n not in stock_infos and not n.startswith(our_dist_info + "/")}
        compiled = [n for n in stock_infos if n.endswith((".so", ".pyd"))]
        bad_compiled = [n for n in compiled if n in changed or n in mismatched]
        # the stock dist-info is always replaced, and added files were never in the stock wheel
        identical = [n for n in stock_infos if not n.startswith(stock_dist_info + "/") and n not in changed]
        report.add(
            "stock-members",
            not mismatched and not bad_compiled,
            "; ".join([*(f"{n} differs from the stock wheel" for n in mismatched + bad_compiled)][:10])
            or f"{len(identical)} members identical to the stock wheel, {len(compiled)} compiled",
        )
        expected = declared
        series_note = ""
        if project is not None:
            pin = project.pins.get(upstream["version"])
            if project.has_series(pin):
                series = project.series(pin)
                if series.fingerprint() == provenance["series"]["fingerprint"]:
                    package = pin.project.replace("-", "_")
                    touched = {p for patch in series.patches for p in patch.touched_paths if p.split("/")[0] == package}
                    if touched != {*files["modified"], *files["added"], *files["removed"]}:
                        report.add(
                            "changed-set",
                            False,
                            f"provenance lists other files than the series touches: "
                            f"{sorted(touched ^ {*files['modified'], *files['added'], *files['removed']})}",
                        )
                        return
                    series_note = " (matches the series)"
        ok = changed == expected
        detail = (
            f"{len(changed)} changed members{series_note}"
            if ok
            else f"changed but not declared: {sorted(changed - expected)}; declared but unchanged: "
            f"{sorted(expected - changed)}"
        )
        report.add("changed-set", ok, detail)


def _check_wheel_contents(report: VerifyReport, path: Path) -> None:
    import shutil
    import sys

    tool = shutil.which("check-wheel-contents") or str(Path(sys.executable).with_name("check-wheel-contents"))
    if not Path(tool).exists():
        report.add("check-wheel-contents", False, "check-wheel-contents is not installed")
        return
    proc = subprocess.run(
        [tool, "--no-config", "--ignore", ",".join(CHECK_WHEEL_CONTENTS_IGNORES), str(path)],
        capture_output=True,
        text=True,
    )
    output = (proc.stdout + proc.stderr).strip()
    report.add(
        "check-wheel-contents",
        proc.returncode == 0,
        (output.splitlines()[0] if output else "")
        if proc.returncode
        else f"passes (ignoring {', '.join(f'{k}: {v}' for k, v in CHECK_WHEEL_CONTENTS_IGNORES.items())})",
    )
