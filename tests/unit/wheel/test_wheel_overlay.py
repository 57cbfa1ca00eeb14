"""`vpatch build --mode overlay` and `vpatch verify` on the synthetic stock wheel the test index serves.

The stock wheel (`helpers.make_wheel`) has the sdist's Python files under vllm/, an incompressible
`vllm/_C.abi3.so` standing in for the compiled extension, and a dist-info with a CSV RECORD. Installs
always run with `--no-runtime`: the synthetic package imports without torch.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import struct
import time
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.version import Version

import toolkit
from tests.harness import commit_in, make_wheel, module_text, package_files
from toolkit.git import Git
from toolkit.model import load_series
from toolkit.wheel import zipraw

TAG = "cp38-abi3-manylinux1_x86_64"
SO = "vllm/_C.abi3.so"
STOCK = f"vllm-1.0-{TAG}.whl"

SCHEDULER = module_text("scheduler").replace("VALUE_20 = 20", "VALUE_20 = 2000")
KV_EVENTS = '"""KV cache events."""\n\nEVENTS: list = []\n'
TEST_CORE = "def test_nothing():\n    assert True\n"

PENDING = "Upstream-Status: Pending\nFeature: kv-routing"
SUBMITTED = "Upstream-Status: Submitted [https://example.com/pr/1]\nFeature: kv-routing"
TESTS_ONLY = "Upstream-Status: Inappropriate [tests only]\nFeature: pd-disagg"


# ---------------------------------------------------------------- helpers


def make_series(ws, commits: list[tuple[dict[str, str], str, str]]) -> list[str]:
    """Export a series for vllm 1.0 the way a maintainer makes one: apply, commit, export."""
    ws.write_series("1.0", {})
    assert ws.run("apply", "1.0") == 0
    for changes, subject, headers in commits:
        commit_in(ws.checkout("1.0"), changes, subject=subject, headers=headers)
    assert ws.run("export", "1.0") == 0
    return series_names(ws)


def series_names(ws) -> list[str]:
    lines = (ws.series_dir("1.0") / "series").read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def fingerprint(ws) -> str:
    return load_series(ws.series_dir("1.0"), Version("1.0")).fingerprint()


def build(ws, capsys, out: Path, *args: str) -> tuple[int, dict | None, str]:
    """`vpatch build 1.0 -o OUT --no-runtime --json ARGS`: exit code, parsed stdout, stderr."""
    capsys.readouterr()
    code = ws.run("build", "1.0", "-o", str(out), "--no-runtime", "--json", *args)
    stdout, stderr = capsys.readouterr()
    return code, (json.loads(stdout) if stdout.strip() else None), stderr


def verify(ws, capsys, wheel: Path) -> tuple[int, dict[str, dict]]:
    """`vpatch verify WHEEL --no-install-check --json`: exit code and the checks by name."""
    capsys.readouterr()
    code = ws.run("verify", str(wheel), "--no-install-check", "--json")
    data = json.loads(capsys.readouterr().out)
    return code, {c["name"]: c for c in data["wheels"][0]["checks"]}


def failed(checks: dict[str, dict]) -> set[str]:
    return {name for name, check in checks.items() if not check["ok"]}


def error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("vpatch: error: "), stderr
    return lines[0].removeprefix("vpatch: error: ")


def files_in(directory: Path) -> list[str]:
    """Every file under `directory` (hidden temp files included), or [] if it does not exist."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def local_records(path: Path) -> dict[str, tuple[bytes, bytes, zipfile.ZipInfo]]:
    """Each member's (local header, compressed data, info), read straight from the archive bytes."""
    result = {}
    with zipfile.ZipFile(path) as archive, path.open("rb") as handle:
        for info in archive.infolist():
            handle.seek(info.header_offset)
            header = handle.read(30)
            assert header[:4] == b"PK\x03\x04"
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            header += handle.read(name_len + extra_len)
            result[info.filename] = (header, handle.read(info.compress_size), info)
    return result


def read_member(path: Path, name: str) -> bytes:
    with zipfile.ZipFile(path) as archive:
        return archive.read(name)


def dist_info(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        (directory,) = {n.split("/")[0] for n in archive.namelist() if n.split("/")[0].endswith(".dist-info")}
    return directory


def provenance(path: Path) -> dict:
    return json.loads(read_member(path, f"{dist_info(path)}/dynamo_base.json"))


def headers(text: str) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        result.setdefault(key, []).append(value.strip())
    return result


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def repack(
    source: Path,
    target: Path | None = None,
    *,
    replace: dict[str, bytes] | None = None,
    fix_record: bool = False,
    stored: frozenset[str] = frozenset(),
    level: int | None = None,
    date_time: tuple[int, int, int, int, int, int] | None = None,
) -> Path:
    """Rewrite a wheel (in place unless `target`): some members' bytes replaced (RECORD kept as it was
    unless `fix_record`), some stored and the rest deflated at `level`, optionally all redated."""
    replace = replace or {}
    with zipfile.ZipFile(source) as archive:
        members = {info.filename: (info, replace.get(info.filename, archive.read(info))) for info in archive.infolist()}
    if fix_record:
        record_name = f"{dist_info(source)}/RECORD"
        rows = csv.reader(io.StringIO(members[record_name][1].decode()))
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(
            [name, record_hash(members[name][1]), str(len(members[name][1]))] if digest else [name, digest, size]
            for name, digest, size in rows
        )
        members[record_name] = (members[record_name][0], text.getvalue().encode())
    target = target or source
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w") as archive:
        for name, (info, data) in members.items():
            copy = zipfile.ZipInfo(name, date_time=date_time or info.date_time)
            copy.external_attr = info.external_attr
            copy.compress_type = zipfile.ZIP_STORED if name in stored else zipfile.ZIP_DEFLATED
            archive.writestr(copy, data, compresslevel=level)
    return target


@pytest.fixture
def series(pinned):
    """vllm 1.0 pinned, with a series that modifies, adds, and changes a test file."""
    make_series(
        pinned,
        [
            ({"vllm/core/scheduler.py": SCHEDULER}, "[Core] scale value twenty", PENDING),
            ({"vllm/core/kv_events.py": KV_EVENTS}, "[V1] publish kv events", SUBMITTED),
            ({"tests/test_core.py": TEST_CORE}, "[Tests] assert something", TESTS_ONLY),
        ],
    )
    return pinned


@pytest.fixture
def stock(pinned) -> Path:
    """The pinned stock wheel as the index serves it."""
    return pinned.index.files_dir / STOCK


# ---------------------------------------------------------------- the build


def test_overlay_build_carries_the_series_and_keeps_the_stock_members(series, stock, capsys, tmp_path):
    ws = series
    names = series_names(ws)
    assert len(names) == 3
    out = tmp_path / "out"
    code, data, _ = build(ws, capsys, out)
    assert code == 0, data
    fp = fingerprint(ws)
    assert len(fp) == 12 and all(c in "0123456789abcdef" for c in fp)
    version = f"1.0+dynamo.{fp}"
    wheel = out / f"vllm-{version}-{TAG}.whl"
    assert files_in(out) == [wheel.name]
    (entry,) = data["wheels"]
    assert entry["wheel"] == str(wheel) and entry["wheel_version"] == version and entry["mode"] == "overlay"
    assert entry["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()

    # the compiled member and every untouched Python file: local record copied verbatim
    ours, theirs = local_records(wheel), local_records(stock)
    header, raw, info = ours[SO]
    assert raw == theirs[SO][1]
    assert info.CRC == theirs[SO][2].CRC and info.compress_size == theirs[SO][2].compress_size
    assert header == theirs[SO][0]
    assert (info.external_attr, info.date_time) == (theirs[SO][2].external_attr, theirs[SO][2].date_time)
    for name in ("vllm/__init__.py", "vllm/core/block_pool.py", "vllm/engine/args.py"):
        assert ours[name][:2] == theirs[name][:2], name
    assert ours["vllm/core/scheduler.py"][1] != theirs["vllm/core/scheduler.py"][1]

    # the series' files, patched; the test file not shipped; the version regenerated
    assert read_member(wheel, "vllm/core/scheduler.py").decode() == SCHEDULER
    assert read_member(wheel, "vllm/core/kv_events.py").decode() == KV_EVENTS
    namespace: dict = {}
    exec(read_member(wheel, "vllm/_version.py"), namespace)
    assert namespace["__version__"] == version
    with zipfile.ZipFile(wheel) as archive:
        assert not [n for n in archive.namelist() if n.startswith("tests/") or n.startswith("vllm-1.0.dist-info")]
    info_dir = f"vllm-{version}.dist-info"
    assert dist_info(wheel) == info_dir
    metadata = headers(read_member(wheel, f"{info_dir}/METADATA").decode())
    assert metadata["Name"] == ["vllm"] and metadata["Version"] == [version]
    assert metadata["Summary"] == ["a synthetic vLLM"]
    assert headers(read_member(wheel, f"{info_dir}/WHEEL").decode())["Tag"] == [TAG]

    # RECORD: every member once, written files hashed afresh
    rows = list(csv.reader(io.StringIO(read_member(wheel, f"{info_dir}/RECORD").decode())))
    with zipfile.ZipFile(wheel) as archive:
        assert sorted(r[0] for r in rows) == sorted(archive.namelist())
        for name, digest, size in rows:
            if name != f"{info_dir}/RECORD":
                content = archive.read(name)
                assert (digest, size) == (record_hash(content), str(len(content))), name

    # provenance
    prov = provenance(wheel)
    pins = tomllib.loads((ws.patches / "pins.toml").read_text())["pins"]["1.0"]
    assert prov["distribution"] == {"name": "vllm", "version": version}
    upstream = prov["upstream"]
    assert upstream["version"] == "1.0"
    assert upstream["wheel"] == STOCK
    assert upstream["wheel_sha256"] == hashlib.sha256(stock.read_bytes()).hexdigest() == pins["wheels"][0]["sha256"]
    assert upstream["sdist_sha256"] == pins["sdist"]["sha256"]
    assert upstream["sdist_sha256"] == hashlib.sha256((ws.index.files_dir / "vllm-1.0.tar.gz").read_bytes()).hexdigest()
    assert upstream["base_commit"] == pins["base-commit"]
    assert prov["series"]["fingerprint"] == fp
    sha = {name: hashlib.sha256((ws.series_dir("1.0") / name).read_bytes()).hexdigest() for name in names}
    assert [(p["file"], p["sha256"], p["feature"], p["upstream_status"]) for p in prov["series"]["patches"]] == [
        (names[0], sha[names[0]], "kv-routing", "Pending"),
        (names[1], sha[names[1]], "kv-routing", "Submitted [https://example.com/pr/1]"),
        (names[2], sha[names[2]], "pd-disagg", "Inappropriate [tests only]"),
    ]
    assert prov["files"] == {
        "modified": ["vllm/core/scheduler.py"],
        "added": ["vllm/core/kv_events.py"],
        "removed": [],
        "generated": ["vllm/_version.py"],
        "not_shipped": ["tests/test_core.py"],
    }
    assert prov["build"]["mode"] == "overlay"
    assert prov["build"]["time_source"] == "stock-wheel"
    assert prov["toolkit"] == {"name": "vpatch", "version": toolkit.__version__}

    # the post-build verification, installs included
    assert data["ok"] is True
    checks = {c["name"]: c for c in entry["verify"]["checks"]}
    assert entry["verify"]["ok"] is True
    assert {
        "names",
        "metadata",
        "record",
        "stock-members",
        "changed-set",
        "check-wheel-contents",
        "install-pip",
        "install-uv",
    } <= set(checks)
    assert all(c["ok"] for c in checks.values()), checks
    assert version in checks["install-pip"]["detail"] and version in checks["install-uv"]["detail"]
    # and `vpatch verify` on its own agrees
    code, checks = verify(ws, capsys, wheel)
    assert code == 0 and all(c["ok"] for c in checks.values()), checks


def test_untouched_members_keep_the_stock_compression(workspace, capsys, tmp_path):
    """Raw copies, not recompression: members stored or deflated at another level stay exactly so."""
    ws = workspace
    ws.publish("1.0", wheel=False)
    wheel = make_wheel(tmp_path / "stock", "1.0", package_files("1.0"))
    stock = ws.index.add(repack(wheel, stored=frozenset({SO, "vllm/engine/args.py"}), level=1))
    assert ws.run("pin", "add", "1.0") == 0
    make_series(ws, [({"vllm/core/scheduler.py": SCHEDULER}, "[Core] scale value twenty", PENDING)])
    code, data, _ = build(ws, capsys, tmp_path / "out", "--no-install-check")
    assert code == 0, data
    ours, theirs = local_records(Path(data["wheels"][0]["wheel"])), local_records(stock)
    assert ours[SO][2].compress_type == zipfile.ZIP_STORED
    for name in (SO, "vllm/engine/args.py", "vllm/core/block_pool.py", "vllm/__init__.py"):
        assert ours[name][:2] == theirs[name][:2], name
        assert ours[name][2].compress_type == theirs[name][2].compress_type, name
    checks = {c["name"]: c for c in data["wheels"][0]["verify"]["checks"]}
    assert not failed(checks), checks


# ---------------------------------------------------------------- reproducibility


def test_same_inputs_give_a_byte_identical_wheel(series, capsys, tmp_path, monkeypatch):
    ws = series
    wheels = []
    for out in ("a", "b", "b"):  # the third build overwrites the second's file in place
        code, data, _ = build(ws, capsys, tmp_path / out, "--no-verify")
        assert code == 0
        wheels.append(Path(data["wheels"][0]["wheel"]).read_bytes())
    assert wheels[0] == wheels[1] == wheels[2]
    assert files_in(tmp_path / "b") == [Path(data["wheels"][0]["wheel"]).name]
    default = Path(data["wheels"][0]["wheel"])
    stock_time = max(i.date_time for i in zipfile.ZipFile(ws.index.files_dir / STOCK).infolist())
    written = local_records(default)["vllm/core/scheduler.py"][2]
    assert written.date_time == stock_time

    epoch = 1_717_171_717  # 2024-05-31 16:08:37 UTC
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(epoch))
    pinned_time = []
    for out in ("c", "d"):
        code, data, _ = build(ws, capsys, tmp_path / out, "--no-verify")
        assert code == 0
        pinned_time.append(Path(data["wheels"][0]["wheel"]))
    assert pinned_time[0].name == default.name
    assert pinned_time[0].read_bytes() == pinned_time[1].read_bytes()
    assert pinned_time[0].read_bytes() != default.read_bytes()
    prov = provenance(pinned_time[0])
    assert prov["build"]["time_source"] == "SOURCE_DATE_EPOCH" and prov["build"]["timestamp"] == epoch
    records = local_records(pinned_time[0])
    for name in (
        "vllm/core/scheduler.py",
        "vllm/core/kv_events.py",
        "vllm/_version.py",
        f"{dist_info(default)}/RECORD",
    ):
        assert records[name][2].date_time == (2024, 5, 31, 16, 8, 36), name  # DOS time: 2-second resolution
    assert records[SO][:2] == local_records(default)[SO][:2]  # raw copies keep the stock timestamps


@pytest.fixture
def timezone():
    """Set TZ for the process (time.tzset) and restore it afterwards."""
    with pytest.MonkeyPatch.context() as patch:

        def use(name: str) -> None:
            patch.setenv("TZ", name)
            time.tzset()

        yield use
    time.tzset()


def test_the_build_time_does_not_depend_on_the_local_timezone(workspace, capsys, tmp_path, timezone):
    """The default timestamp comes from the stock wheel's dates, which are zone-less: no DST hour may sneak in."""
    ws = workspace
    ws.publish("1.0", wheel=False)
    summer = (2024, 7, 15, 12, 30, 0)
    ws.index.add(repack(make_wheel(tmp_path / "stock", "1.0", package_files("1.0")), date_time=summer))
    assert ws.run("pin", "add", "1.0") == 0
    make_series(ws, [({"vllm/core/scheduler.py": SCHEDULER}, "[Core] scale value twenty", PENDING)])
    wheels = []
    # POSIX TZ rules (no tzdata needed): Central European and US Eastern time, both with summer time
    zones = ("UTC0", "CET-1CEST,M3.5.0,M10.5.0/3", "EST5EDT,M3.2.0,M11.1.0")
    for index, zone in enumerate(zones):
        timezone(zone)
        assert time.localtime(1721046600).tm_isdst == (index > 0)  # 2024-07-15 12:30 UTC
        code, data, _ = build(ws, capsys, tmp_path / f"zone-{index}", "--no-verify")
        assert code == 0
        wheel = Path(data["wheels"][0]["wheel"])
        assert local_records(wheel)["vllm/core/scheduler.py"][2].date_time == summer, zone
        wheels.append(wheel.read_bytes())
    assert wheels[0] == wheels[1] == wheels[2]


# ---------------------------------------------------------------- a renamed fork


def test_renamed_fork_with_an_explicit_version(series, capsys, tmp_path):
    ws = series
    out = tmp_path / "out"
    code, data, _ = build(ws, capsys, out, "--dist-name", "dynamo-vllm", "--version", "1.0.post1")
    assert code == 0, data
    wheel = out / f"dynamo_vllm-1.0.post1-{TAG}.whl"
    assert files_in(out) == [wheel.name]
    assert dist_info(wheel) == "dynamo_vllm-1.0.post1.dist-info"
    metadata = headers(read_member(wheel, "dynamo_vllm-1.0.post1.dist-info/METADATA").decode())
    assert metadata["Name"] == ["dynamo-vllm"] and metadata["Version"] == ["1.0.post1"]
    assert b"'1.0.post1'" in read_member(wheel, "vllm/_version.py")
    prov = provenance(wheel)
    assert prov["distribution"] == {"name": "dynamo-vllm", "version": "1.0.post1"}
    assert prov["upstream"]["version"] == "1.0" and prov["series"]["fingerprint"] == fingerprint(ws)
    entry = data["wheels"][0]
    assert entry["name"] == "dynamo-vllm" and entry["wheel_version"] == "1.0.post1"
    checks = {c["name"]: c for c in entry["verify"]["checks"]}
    assert data["ok"] and all(c["ok"] for c in checks.values()), checks
    assert "1.0.post1" in checks["install-pip"]["detail"] and "1.0.post1" in checks["install-uv"]["detail"]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--version", "1.0-dynamo!", "--version '1.0-dynamo!' is not a valid PEP 440 version"),
        ("--dist-name", "dynamo vllm", "--dist-name 'dynamo vllm' is not a valid distribution name"),
    ],
)
def test_invalid_name_or_version_is_one_line_and_writes_nothing(series, capsys, tmp_path, option, value, message):
    out = tmp_path / "out"
    code, data, stderr = build(series, capsys, out, option, value)
    assert code == 1 and data is None
    assert error_line(stderr) == message
    assert not out.exists()


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("csrc/ops.cu", "__global__ void kernel() { /* faster */ }\n"),
        ("setup.py", "from setuptools import setup\nsetup(name='vllm')\n"),
        ("CMakeLists.txt", "cmake_minimum_required(VERSION 3.26)\n"),
        ("vllm/ops.h", "#pragma once\n"),
    ],
)
def test_build_inputs_are_refused_naming_patch_and_file(pinned, capsys, tmp_path, path, content):
    ws = pinned
    names = make_series(
        ws,
        [
            ({"vllm/core/scheduler.py": SCHEDULER}, "[Core] scale value twenty", PENDING),
            ({path: content}, "[Build] touch a build input", PENDING),
        ],
    )
    out = tmp_path / "out"
    out.mkdir()
    code, data, stderr = build(ws, capsys, out)
    assert code == 1 and data is None
    message = error_line(stderr)
    assert f"{names[1]} changes {path}:" in message
    assert names[0] not in message
    assert "--mode source" in message
    assert files_in(out) == []
    assert files_in(ws.cache / "tmp") == []  # the scratch checkout is gone too


def test_a_file_the_stock_wheel_ships_differently_is_refused(workspace, capsys, tmp_path):
    """The overlay patches the stock wheel's copy, so that copy must be the pinned source's."""
    ws = workspace
    ws.publish("1.0", wheel=False)
    shipped = package_files("1.0")
    shipped["vllm/core/scheduler.py"] += "# built differently\n"
    ws.index.add(make_wheel(tmp_path / "stock", "1.0", shipped))
    assert ws.run("pin", "add", "1.0") == 0
    (name,) = make_series(ws, [({"vllm/core/scheduler.py": SCHEDULER}, "[Core] scale value twenty", PENDING)])
    out = tmp_path / "out"
    code, data, stderr = build(ws, capsys, out)
    assert code == 1 and data is None
    message = error_line(stderr)
    assert f"{name} changes vllm/core/scheduler.py: the stock wheel's copy differs" in message
    assert "--mode source" in message
    assert files_in(out) == []


def test_a_removed_file_is_left_out_and_declared(pinned, stock, capsys, tmp_path):
    ws = pinned
    ws.write_series("1.0", {})
    assert ws.run("apply", "1.0") == 0
    Git(ws.checkout("1.0")).run("rm", "-q", "vllm/core/block_pool.py")
    commit_in(ws.checkout("1.0"), {}, subject="[Core] drop the block pool")
    assert ws.run("export", "1.0") == 0
    code, data, _ = build(ws, capsys, tmp_path / "out", "--no-install-check")
    assert code == 0, data
    wheel = Path(data["wheels"][0]["wheel"])
    with zipfile.ZipFile(wheel) as archive:
        assert "vllm/core/block_pool.py" not in archive.namelist()
    assert provenance(wheel)["files"]["removed"] == ["vllm/core/block_pool.py"]
    checks = {c["name"]: c for c in data["wheels"][0]["verify"]["checks"]}
    assert not failed(checks), checks


# ---------------------------------------------------------------- bad input


def test_tampered_stock_wheel_is_refused(series, capsys, tmp_path):
    ws = series
    served = ws.index.files_dir / STOCK
    pinned_sha = hashlib.sha256(served.read_bytes()).hexdigest()
    make_wheel(tmp_path / "evil", "1.0", package_files("1.0"), extra={"vllm/backdoor.py": b"import os\n"})
    served.write_bytes((tmp_path / "evil" / STOCK).read_bytes())
    cached = ws.cache / "downloads" / pinned_sha / STOCK
    assert cached.is_file()
    cached.unlink()
    out = tmp_path / "out"
    code, data, stderr = build(ws, capsys, out)
    assert code == 1 and data is None
    message = error_line(stderr)
    assert f"{STOCK}: sha256 mismatch: pinned {pinned_sha}" in message
    assert files_in(out) == []
    # neither the bad download nor a partial file is kept
    assert not cached.exists()
    assert [f for f in files_in(ws.cache / "downloads") if f.endswith((".whl", ".part"))] == []


def test_stock_wheel_with_a_traversal_member_is_refused(workspace, capsys, tmp_path):
    ws = workspace
    ws.publish("1.0", wheel=False)
    ws.index.add(make_wheel(tmp_path / "stock", "1.0", package_files("1.0"), extra={"../evil.py": b"pwned = 1\n"}))
    assert ws.run("pin", "add", "1.0") == 0
    make_series(ws, [({"vllm/core/scheduler.py": SCHEDULER}, "[Core] scale value twenty", PENDING)])
    out = tmp_path / "out"
    code, data, stderr = build(ws, capsys, out)
    assert code == 1 and data is None
    message = error_line(stderr)
    assert "unsafe member" in message and "'../evil.py'" in message and STOCK in message
    assert files_in(out) == []
    assert not (tmp_path / "evil.py").exists() and not (out.parent / "evil.py").exists()


def test_a_patch_that_does_not_apply_is_named(series, capsys, tmp_path):
    ws = series
    names = series_names(ws)
    patch = ws.series_dir("1.0") / names[0]
    data = patch.read_bytes()
    context = b"\n VALUE_19 = 19  # scheduler line 19\n"
    assert data.count(context) == 1
    patch.write_bytes(data.replace(context, b"\n VALUE_19 = 19  # not what upstream has\n"))
    out = tmp_path / "out"
    code, result, stderr = build(ws, capsys, out)
    assert code == 1 and result is None
    message = error_line(stderr)
    assert f"{names[0]}: does not apply to vllm 1.0: vllm/core/scheduler.py: hunk #1" in message
    assert "vllm/core/scheduler.py" in message
    assert files_in(out) == []


def count_writes(monkeypatch) -> list[str]:
    calls: list[str] = []
    original = zipraw.RawZipWriter.write

    def counting(self, name, data, **kwargs):
        calls.append(name)
        return original(self, name, data, **kwargs)

    monkeypatch.setattr(zipraw.RawZipWriter, "write", counting)
    return calls


def fail_on_write(monkeypatch, n: int) -> None:
    original = zipraw.RawZipWriter.write
    calls = [0]

    def failing(self, name, data, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise OSError(28, "No space left on device")
        return original(self, name, data, **kwargs)

    monkeypatch.setattr(zipraw.RawZipWriter, "write", failing)


def test_a_wheel_that_fails_verification_leaves_the_output_directory(pinned, capsys, tmp_path):
    """A fork that imports what the install check's runtime lacks: the build's verify step ends ✗, the wheel
    is moved to OUT/rejected/ (publishing OUT/*.whl cannot ship it) and the exit is 1."""
    make_series(
        pinned,
        [({"vllm/__init__.py": 'raise ImportError("the fork needs triton")\n'}, "[Core] import triton", PENDING)],
    )
    out = tmp_path / "dist"
    code, data, err = build(pinned, capsys, out)
    assert code == 1 and data is not None and data["ok"] is False
    (entry,) = data["wheels"]
    assert entry["verify"]["ok"] is False
    assert Path(entry["wheel"]).parent == out / "rejected" and Path(entry["wheel"]).is_file()
    assert list(out.glob("*.whl")) == []
    capsys.readouterr()
    assert pinned.run("build", "1.0", "-o", str(out), "--no-runtime") == 1
    err = capsys.readouterr().err
    verify_lines = [line for line in err.splitlines() if line.endswith("s)") and " verify " in line]
    assert len(verify_lines) == 1 and verify_lines[0].startswith("✗ verify "), err
    assert "failed verification: moved to" in err and list(out.glob("*.whl")) == []


def test_an_interrupted_build_leaves_nothing_behind(series, capsys, tmp_path, monkeypatch):
    ws = series
    with monkeypatch.context() as patch:
        calls = count_writes(patch)
        code, data, _ = build(ws, capsys, tmp_path / "counted", "--no-verify")
        assert code == 0
    wheel_name = Path(data["wheels"][0]["wheel"]).name
    # modified, version file, added, METADATA, WHEEL, provenance, top_level.txt, RECORD
    assert len(calls) == 8 and calls[-1].endswith("/RECORD")

    # an older wheel of the same name, from a build at another time: must survive untouched
    kept = tmp_path / "kept"
    with monkeypatch.context() as patch:
        patch.setenv("SOURCE_DATE_EPOCH", "1700000000")
        assert build(ws, capsys, kept, "--no-verify")[0] == 0
    older = kept / wheel_name
    older_bytes, older_stat = older.read_bytes(), older.stat()

    for n in (1, 2, 3, 4, len(calls)):
        for out in (tmp_path / f"fresh-{n}", kept):
            with monkeypatch.context() as patch:
                fail_on_write(patch, n)
                code, result, stderr = build(ws, capsys, out, "--no-verify")
            assert code == 1 and result is None
            message = error_line(stderr)
            assert "cannot write the wheel" in message and "No space left on device" in message
            assert files_in(out) == ([wheel_name] if out == kept else []), n
        assert older.read_bytes() == older_bytes
        assert (older.stat().st_ino, older.stat().st_mtime_ns) == (older_stat.st_ino, older_stat.st_mtime_ns)
    assert files_in(ws.cache / "tmp") == []


# ---------------------------------------------------------------- verify detects tampering


@pytest.fixture
def built(series, capsys, tmp_path) -> Path:
    code, data, _ = build(series, capsys, tmp_path / "out", "--no-verify")
    assert code == 0
    return Path(data["wheels"][0]["wheel"])


def test_verify_passes_an_untampered_repack(series, built, capsys, tmp_path):
    code, checks = verify(series, capsys, built)
    assert code == 0 and not failed(checks)
    assert checks["changed-set"]["detail"] == "3 changed members (matches the series)"
    assert checks["stock-members"]["detail"] == "6 members identical to the stock wheel, 1 compiled"
    repacked = repack(built, tmp_path / "repacked" / built.name)
    code, checks = verify(series, capsys, repacked)
    assert code == 0 and not failed(checks), checks


def test_verify_detects_a_changed_compiled_member(series, built, capsys, tmp_path):
    ws = series
    so = bytearray(read_member(built, SO))
    so[1000] ^= 0xFF
    kept_record = repack(built, tmp_path / "a" / built.name, replace={SO: bytes(so)})
    code, checks = verify(ws, capsys, kept_record)
    assert code == 1
    assert {"record", "stock-members"} <= failed(checks)
    assert SO in checks["record"]["detail"] and SO in checks["stock-members"]["detail"]

    fixed_record = repack(built, tmp_path / "b" / built.name, replace={SO: bytes(so)}, fix_record=True)
    code, checks = verify(ws, capsys, fixed_record)
    assert code == 1
    assert failed(checks) == {"stock-members", "changed-set"}
    assert SO in checks["stock-members"]["detail"]


def test_verify_detects_a_recompressed_compiled_member(series, built, capsys, tmp_path):
    """Same content, same CRC, but not the stock wheel's compressed bytes."""
    stored = repack(built, tmp_path / "a" / built.name, stored=frozenset({SO}))
    assert local_records(stored)[SO][2].CRC == local_records(built)[SO][2].CRC
    code, checks = verify(series, capsys, stored)
    assert code == 1
    assert failed(checks) == {"stock-members"}
    assert SO in checks["stock-members"]["detail"]


def test_verify_detects_an_undeclared_python_change(series, built, capsys, tmp_path):
    pool = module_text("block_pool").replace("VALUE_1 = 1", "VALUE_1 = 'sneaky'").encode()
    sneaky = repack(built, tmp_path / "a" / built.name, replace={"vllm/core/block_pool.py": pool}, fix_record=True)
    code, checks = verify(series, capsys, sneaky)
    assert code == 1
    assert failed(checks) == {"changed-set"}
    assert "vllm/core/block_pool.py" in checks["changed-set"]["detail"]


def test_verify_detects_metadata_that_disagrees_with_the_file_name(series, built, capsys, tmp_path):
    metadata_name = f"{dist_info(built)}/METADATA"
    metadata = read_member(built, metadata_name).decode()
    version = built.name.split("-")[1]
    assert f"Version: {version}\n" in metadata
    wrong = repack(
        built,
        tmp_path / "a" / built.name,
        replace={metadata_name: metadata.replace(f"Version: {version}", "Version: 1.0").encode()},
        fix_record=True,
    )
    code, checks = verify(series, capsys, wrong)
    assert code == 1
    assert failed(checks) == {"metadata"}
    assert "METADATA Version '1.0' does not match the file name" in checks["metadata"]["detail"]


# ---------------------------------------------------------------- an empty series


def test_an_empty_series_changes_only_the_version_file(pinned, stock, capsys, tmp_path):
    ws = pinned
    ws.write_series("1.0", {})
    fp = hashlib.sha256(b"").hexdigest()[:12]
    assert fingerprint(ws) == fp
    out = tmp_path / "out"
    code, data, _ = build(ws, capsys, out, "--no-install-check")
    assert code == 0, data
    wheel = out / f"vllm-1.0+dynamo.{fp}-{TAG}.whl"
    assert files_in(out) == [wheel.name]
    ours, theirs = local_records(wheel), local_records(stock)
    payload = {n for n in theirs if not n.startswith("vllm-1.0.dist-info/")}
    assert {n for n in ours if not n.startswith(dist_info(wheel) + "/")} == payload
    assert {n for n in payload if ours[n][:2] != theirs[n][:2]} == {"vllm/_version.py"}
    prov = provenance(wheel)
    assert prov["series"]["patches"] == []
    assert prov["files"] == {
        "modified": [],
        "added": [],
        "removed": [],
        "generated": ["vllm/_version.py"],
        "not_shipped": [],
    }
    checks = {c["name"]: c for c in data["wheels"][0]["verify"]["checks"]}
    assert not failed(checks), checks
    assert checks["changed-set"]["detail"] == "1 changed members (matches the series)"
    # 8 stock payload members (7 Python files and the .so), all but the version file untouched
    assert checks["stock-members"]["detail"] == "7 members identical to the stock wheel, 1 compiled"
