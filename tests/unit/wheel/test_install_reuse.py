"""Install checks and the RECORD check are done once per wheel: a pass for the same bytes is reused.

Real installs of the synthetic stock wheel's overlay into real venvs (`--no-runtime`: it imports alone).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.wheel.test_wheel_overlay import KV_EVENTS, PENDING, build, make_series
from toolkit.wheel.install import REUSED

INSTALLS = ("install-pip", "install-uv")


def record_detail(entry: dict) -> str:
    [record] = [c for c in entry["verify"]["checks"] if c["name"] == "record"]
    assert record["ok"], record
    return record["detail"]


def install_details(entry: dict) -> dict[str, str]:
    checks = {c["name"]: c for c in entry["verify"]["checks"]}
    assert all(checks[name]["ok"] for name in INSTALLS), checks
    return {name: checks[name]["detail"] for name in INSTALLS}


def test_a_rebuilt_identical_wheel_reuses_its_install_and_record_checks(
    workspace, capsys: pytest.CaptureFixture[str], tmp_path
):
    ws = workspace
    ws.publish("1.0")
    assert ws.run("pin", "add", "1.0") == 0
    make_series(ws, [({"vllm/core/kv_events.py": KV_EVENTS}, "[Core] KV events", PENDING)])
    out = tmp_path / "out"

    code, first, _ = build(ws, capsys, out)
    assert code == 0 and first is not None
    ran = install_details(first["wheels"][0])
    assert not any(detail.endswith(REUSED) for detail in ran.values())
    [kept] = (ws.cache / "install-checks").iterdir()

    # The same series on the same stock wheel gives the same bytes: the installs are not run again.
    code, second, _ = build(ws, capsys, out)
    assert code == 0 and second is not None
    assert second["wheels"][0]["sha256"] == first["wheels"][0]["sha256"]
    assert install_details(second["wheels"][0]) == {name: detail + REUSED for name, detail in ran.items()}
    assert record_detail(first["wheels"][0]) == "" and record_detail(second["wheels"][0]) == REUSED.strip()

    # `vpatch verify` of that wheel reuses them too.
    wheel = Path(first["wheels"][0]["wheel"])
    capsys.readouterr()
    assert ws.run("verify", str(wheel), "--no-runtime", "--json") == 0
    [report] = json.loads(capsys.readouterr().out)["wheels"]
    assert {c["name"]: c["detail"] for c in report["checks"] if c["name"] in INSTALLS} == {
        name: detail + REUSED for name, detail in ran.items()
    }

    # Other bytes (another version) are installed for real; a kept result that is not a pass is ignored.
    kept.write_text(json.dumps({"format": 1, "results": [["install-pip", False, "broken"]]}) + "\n")
    code, third, _ = build(ws, capsys, out, "--version", "1.0.post1")
    assert code == 0 and third is not None
    assert not any(detail.endswith(REUSED) for detail in install_details(third["wheels"][0]).values())
    assert record_detail(third["wheels"][0]) == ""
    code, fourth, _ = build(ws, capsys, out)
    assert code == 0 and fourth is not None
    assert not any(detail.endswith(REUSED) for detail in install_details(fourth["wheels"][0]).values())
