"""`vpatch doctor` against real venvs holding synthetic stock and dynamo-base wheels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import commit_in, module_text
from toolkit.envs import create_venv, install, venv_python


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3.*")) / "site-packages"


@pytest.fixture
def built(pinned, tmp_path):
    """A one-patch series built into an overlay wheel (no verification: doctor is under test)."""
    ws = pinned
    ws.write_series("1.0", {})
    assert ws.run("apply", "1.0") == 0
    commit_in(
        ws.checkout("1.0"),
        {"vllm/core/scheduler.py": module_text("scheduler").replace("= 7 ", "= 77 ")},
        subject="[Core] schedule differently",
        headers="Upstream-Status: Pending\nFeature: kv-routing",
    )
    assert ws.run("export", "1.0") == 0
    assert ws.run("build", "1.0", "-o", str(tmp_path / "dist"), "--no-verify") == 0
    return ws, next((tmp_path / "dist").glob("*.whl"))


def doctor(ws, capsys, python: Path) -> tuple[int, dict]:
    capsys.readouterr()
    code = ws.run("doctor", "--python", str(python), "--json")
    return code, json.loads(capsys.readouterr().out)


def test_dynamo_base_intact_then_damaged(built, capsys, tmp_path):
    ws, wheel = built
    venv = create_venv(tmp_path / "venv")
    install(venv, [str(wheel)], installer="uv", no_deps=True)
    code, result = doctor(ws, capsys, venv_python(venv))
    assert code == 0 and result["state"] == "dynamo-base"
    assert [p["file"] for p in result["patches"]] == ["0001-core-schedule-differently.patch"]
    assert result["features"] == ["kv-routing"] and result["problems"] == []

    patched = site_packages(venv) / "vllm/core/scheduler.py"
    patched.write_text(patched.read_text() + "# edited after install\n")
    code, result = doctor(ws, capsys, venv_python(venv))
    assert code == 4 and result["state"] == "damaged"
    assert result["problems"] == ["vllm/core/scheduler.py (changed by the series) differs from the wheel's RECORD"]


def test_damaged_compiled_file(built, capsys, tmp_path):
    ws, wheel = built
    venv = create_venv(tmp_path / "venv")
    install(venv, [str(wheel)], installer="uv", no_deps=True)
    compiled = site_packages(venv) / "vllm/_C.abi3.so"
    data = bytearray(compiled.read_bytes())
    data[100] ^= 0xFF
    compiled.write_bytes(bytes(data))
    code, result = doctor(ws, capsys, venv_python(venv))
    assert code == 4
    assert result["problems"] == ["compiled file vllm/_C.abi3.so differs from the pinned stock wheel"]


def test_stock_and_missing(pinned, capsys, tmp_path):
    ws = pinned
    stock = next(ws.index.files_dir.glob("*.whl"))
    venv = create_venv(tmp_path / "stock")
    install(venv, [str(stock)], installer="pip", no_deps=True)
    code, result = doctor(ws, capsys, venv_python(venv))
    assert code == 3 and result["state"] == "stock" and result["version"] == "1.0"
    assert "stock vllm 1.0 lacks the kv-routing feature" in result["warnings"]

    empty = create_venv(tmp_path / "empty")
    code, result = doctor(ws, capsys, venv_python(empty))
    assert code == 5 and result["state"] == "missing"


def test_native_since_silences_the_warning(pinned, capsys, tmp_path):
    ws = pinned
    pins = ws.patches / "pins.toml"
    text = pins.read_text().replace(
        'kv-routing = "KV-cache events and load metrics for KV-aware routing"',
        'kv-routing = { description = "events", native-since = "0.9" }',
    )
    assert "native-since" in text
    pins.write_text(text)
    venv = create_venv(tmp_path / "stock")
    install(venv, [str(next(ws.index.files_dir.glob("*.whl")))], installer="uv", no_deps=True)
    code, result = doctor(ws, capsys, venv_python(venv))
    assert code == 3
    assert "kv-routing" in result["features"]
    assert all("kv-routing" not in w for w in result["warnings"])


def test_sub_features_stock_lacks_are_one_warning_per_parent(pinned, capsys, tmp_path):
    ws = pinned
    for name, extra in (
        ("pd-disagg/nixl", []),
        ("pd-disagg/failed-loads", []),
        ("kv-routing/x", ["--native-since", "0.9"]),
    ):
        assert ws.run("feature", "add", name, *extra) == 0
    venv = create_venv(tmp_path / "stock")
    install(venv, [str(next(ws.index.files_dir.glob("*.whl")))], installer="uv", no_deps=True)
    code, result = doctor(ws, capsys, venv_python(venv))
    assert code == 3
    assert "stock vllm 1.0 lacks parts of pd-disagg: failed-loads, nixl" in result["warnings"]
    assert not any("pd-disagg/" in w or "kv-routing/x" in w for w in result["warnings"])
    assert result["features"] == []  # a sub-feature stock has is not listed as a feature of its own


def test_stock_of_a_release_whose_verdict_is_stock_plus_plugin_says_so(pinned, capsys, tmp_path):
    """Stock 1.0 with an empty series, NOTES.md and contract evidence meeting both features with the plugin: doctor
    names the verdict instead of the features stock lacks, and whether the plugin is installed there."""
    from tests.unit.test_verdict import PLUGIN
    from toolkit.records.contract import BuildSpec, ConfigRun, ContractResults, ItemResult, encode_contract
    from toolkit.records.status import Status

    ws = pinned
    ws.write_series("1.0", {}, comment="# nothing carried: see NOTES.md")
    (ws.series_dir("1.0") / "NOTES.md").write_text("# 1.0\n")
    new = BuildSpec("1.0", "stock+plugin", ("p.whl",), (PLUGIN,))
    items = [ItemResult(f, i, Status.PASS) for f, i in (("kv-routing", "load-figures"), ("pd-disagg", "no-leaks"))]
    results = ContractResults(
        "vllm",
        new,
        BuildSpec("1.0", "stock"),
        ["kv-routing", "pd-disagg"],
        "-",
        [ConfigRun("new-e", "new", new, None, items)],
        ok=True,
    )
    (ws.patches / "conformance").mkdir()
    (ws.patches / "conformance" / "vllm-1.0+plugin-against-1.0.json").write_text(encode_contract(results))
    venv = create_venv(tmp_path / "stock")
    install(venv, [str(next(ws.index.files_dir.glob("*.whl")))], installer="uv", no_deps=True)
    code, result = doctor(ws, capsys, venv_python(venv))
    assert code == 3 and result["state"] == "stock" and result["warnings"] == []
    default = result["stock_default"]
    assert (default["version"], default["engine"], default["plugin"]) == ("1.0", "stock+plugin", "dynamo-base-plugin")
    assert default["plugin_installed"] is None
    assert default["summary"].startswith("stock vLLM 1.0 with dynamo-base-plugin 1.1+plugin.abc provides every feature")
