"""Overlay builds of files with non-ASCII names: shipped with the right bytes, RECORD rows and zip flags.

git quotes such paths (`"vllm/gr\\303\\274\\303\\237e.py"`) in its diff output; a build that kept the
quoted form took them for files outside the package and left them out of the wheel.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import pytest

from tests.harness import commit_in, default_tree, module_text
from toolkit.git import Git

TAG = "cp38-abi3-manylinux1_x86_64"
CHANGED = "vllm/naïve/grüße.py"  # shipped by the stock wheel, changed by the series
ADDED = "vllm/naïve/新しい_ünïcode.py"  # added by the series
ORIGINAL = module_text("grüße")
PATCHED = ORIGINAL.replace("VALUE_20 = 20", "VALUE_20 = 'zwanzig – ü'")
NEW = '"""Neu: ß, é, 新."""\n\nVALUE = "ünïcode"\n'


@pytest.fixture
def unicode_series(workspace):
    ws = workspace
    tree = default_tree("1.0")
    tree["vllm/naïve/__init__.py"] = ""
    tree[CHANGED] = ORIGINAL
    ws.publish("1.0", tree)
    assert ws.run("pin", "add", "1.0") == 0
    ws.write_series("1.0", {})
    assert ws.run("apply", "1.0") == 0
    commit_in(ws.checkout("1.0"), {CHANGED: PATCHED, ADDED: NEW}, subject="[Core] unicode names")
    assert ws.run("export", "1.0") == 0
    return ws


def build(ws, capsys, out: Path, *args: str) -> tuple[int, dict | None]:
    capsys.readouterr()
    code = ws.run("build", "1.0", "-o", str(out), "--no-runtime", "--json", *args)
    stdout = capsys.readouterr().out
    return code, (json.loads(stdout) if stdout.strip() else None)


def verify_checks(ws, capsys, wheel: Path) -> tuple[int, dict[str, dict]]:
    capsys.readouterr()
    code = ws.run("verify", str(wheel), "--no-install-check", "--json")
    data = json.loads(capsys.readouterr().out)
    return code, {c["name"]: c for c in data["wheels"][0]["checks"]}


def record_rows(archive: zipfile.ZipFile) -> dict[str, tuple[str, str]]:
    (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/RECORD")]
    return {r[0]: (r[1], r[2]) for r in csv.reader(io.StringIO(archive.read(name).decode("utf-8")))}


def record_hash(data: bytes) -> str:
    import base64
    import hashlib

    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def test_non_ascii_names_are_shipped_with_their_bytes_and_record_rows(unicode_series, capsys, tmp_path):
    ws = unicode_series
    code, data = build(ws, capsys, tmp_path / "out", "--no-verify")
    assert code == 0, data
    wheel = Path(data["wheels"][0]["wheel"])
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert CHANGED in names and ADDED in names
        assert archive.read(CHANGED).decode() == PATCHED
        assert archive.read(ADDED).decode() == NEW
        for name in (CHANGED, ADDED):
            assert archive.getinfo(name).flag_bits & 0x800, f"{name}: utf-8 name flag (bit 11) not set"
        rows = record_rows(archive)
        for name in (CHANGED, ADDED):
            content = archive.read(name)
            assert rows[name] == (record_hash(content), str(len(content))), name
        assert sorted(rows) == sorted(names)
        prov_name = next(n for n in names if n.endswith(".dist-info/dynamo_base.json"))
        files = json.loads(archive.read(prov_name))["files"]
    assert files["modified"] == [CHANGED] and files["added"] == [ADDED]
    assert files["not_shipped"] == []
    code, checks = verify_checks(ws, capsys, wheel)
    assert code == 0 and all(c["ok"] for c in checks.values()), checks
    assert checks["changed-set"]["detail"] == "3 changed members (matches the series)"


def test_verify_catches_a_member_the_series_touches_but_the_wheel_lacks(unicode_series, capsys, tmp_path):
    """A wheel without the added file (as the broken build made it): verify's changed-set check fails."""
    ws = unicode_series
    code, data = build(ws, capsys, tmp_path / "out", "--no-verify")
    assert code == 0
    wheel = Path(data["wheels"][0]["wheel"])
    lacking = tmp_path / "lacking" / wheel.name
    lacking.parent.mkdir()
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(lacking, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            if info.filename == ADDED:
                continue
            data_ = source.read(info)
            if info.filename.endswith("/RECORD"):
                text = data_.decode().splitlines()
                data_ = ("\n".join(line for line in text if not line.startswith(ADDED)) + "\n").encode()
            target.writestr(info, data_)
    code, checks = verify_checks(ws, capsys, lacking)
    assert code == 1
    assert not checks["changed-set"]["ok"]
    assert ADDED in checks["changed-set"]["detail"]


def test_the_patch_quotes_the_names_and_the_checkout_has_them(unicode_series):
    """The mail names the files in git's quoted form; apply puts them under their real names."""
    ws = unicode_series
    (patch,) = sorted(ws.series_dir("1.0").glob("*.patch"))
    assert '"b/vllm/na\\303\\257ve/gr\\303\\274\\303\\237e.py"' in patch.read_text()
    assert ws.run("apply", "1.0", "--force") == 0
    assert (ws.checkout("1.0") / CHANGED).read_text() == PATCHED
    assert (ws.checkout("1.0") / ADDED).read_text() == NEW
    assert Git(ws.checkout("1.0")).out("status", "--porcelain") == ""
