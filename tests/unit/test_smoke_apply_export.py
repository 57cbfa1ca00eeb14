from __future__ import annotations

from tests.harness import commit_in, module_text
from toolkit.git import Git


def test_apply_then_export_round_trip(pinned):
    ws = pinned
    ws.write_series("1.0", {})
    assert ws.run("apply", "1.0") == 0
    checkout = ws.checkout("1.0")
    text = module_text("scheduler").replace("VALUE_10 = 10", "VALUE_10 = 1000")
    commit_in(checkout, {"vllm/core/scheduler.py": text}, subject="[Core] bigger value", body="Because.")
    assert ws.run("export", "1.0") == 0
    files = sorted(p.name for p in ws.series_dir("1.0").iterdir())
    assert files == ["0001-core-bigger-value.patch", "series"]
    data = (ws.series_dir("1.0") / "0001-core-bigger-value.patch").read_bytes()
    assert b"Patch-File: 0001-core-bigger-value.patch" in data
    assert b"Subject: [PATCH] [Core] bigger value" in data
    snapshot = ws.snapshot()
    assert ws.run("apply", "1.0", "--force") == 0
    assert ws.run("export", "1.0") == 0
    assert ws.snapshot() == snapshot
    assert Git(checkout).out("log", "-1", "--format=%s") == "[Core] bigger value"
    assert ws.run("check", "1.0") == 0
