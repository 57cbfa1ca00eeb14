"""vpatch rebase: "upstream has it" found by content on sdist bases (no history), --skip with a reason, and a
feature carried past its native-since. Synthetic releases published on the local index, real git."""

from __future__ import annotations

import json

import pytest

from tests.unit.lifecycle.rebase.test_rebase import (
    BLOCK_POOL_P2,
    EVENTS_P2,
    P1,
    P2,
    P3,
    SCHEDULER_P1,
    evidence,
    publish,
    rebase,
    series_names,
    statuses,
)
from tests.unit.lifecycle.rebase.test_rebase import series_10 as series_10

# 1.3 made patch 1's change itself, in its own words: VALUE_20 = 2000, with the lines around it edited
# too, so the three-way merge conflicts although nothing of the patch is left to carry.
UPSTREAM_SCHEDULER = SCHEDULER_P1.replace("VALUE_19 = 19 ", "VALUE_19 = 190 ").replace(
    "VALUE_21 = 21 ", "VALUE_21 = 0 "
)
# 1.4: the same, and patch 2's new file added upstream with more in it; patch 2's block-pool change is not there.
EVENTS_14 = EVENTS_P2 + "\nEVENTS: list = []\n"
UPSTREAM_14 = {"vllm/core/scheduler.py": UPSTREAM_SCHEDULER, "vllm/core/kv_events.py": EVENTS_14}


@pytest.fixture
def upstream_13(series_10):
    publish(series_10, "1.3", **{"vllm/core/scheduler.py": UPSTREAM_SCHEDULER})
    return series_10


def test_a_patch_upstream_has_is_offered_as_such_and_continue_records_it(upstream_13, capsys):
    ws = upstream_13
    capsys.readouterr()
    assert ws.run("rebase", "1.0", "--onto", "1.3") == 1
    out, err = capsys.readouterr()
    assert f"stopped at {P1} (upstream has it):" in err
    assert "  upstream has it: every hunk's change is already in vllm 1.3 (by content)\n" in err
    assert "    vllm/core/scheduler.py hunk #1: in vllm 1.3 at line 22 (moved context)\n" in err
    assert "`vpatch rebase --continue` keeps NEW's version" in err
    assert "upstream has it" in out  # the table's outcome column, not "conflict"
    code, result = rebase(ws, capsys, "--continue", "--onto", "1.3")  # nothing resolved: NEW's version kept
    assert code == 0 and result["done"]
    assert statuses(result) == {P1: "empty", P2: "clean", P3: "clean"}
    assert result["patches"][0]["details"] == [
        "upstream has it: vllm/core/scheduler.py hunk #1: in vllm 1.3 at line 22 (moved context)",
        "vllm 1.3's version kept (vpatch rebase --continue)",
    ]
    assert series_names(ws, "1.3") == [P2, P3]
    entry = evidence(ws, "1.3")["patches"][P1]
    assert entry["outcome"] == "empty" and entry["kept"] is False
    assert entry["evidence"]["post_image_in_new"]["hunks"] == [
        {"file": "vllm/core/scheduler.py", "hunk": 1, "line": 22, "how": "moved context"}
    ]
    assert entry["upstream_signals"] == ["became_empty", "post_image_in_new"]
    assert entry["evidence"]["reverse_applies"] is False  # the context moved: a reverse apply does not see it
    assert ws.run("check", "1.3", "--no-wheels") == 0


def test_skip_needs_a_reason_and_records_it_with_the_evidence(upstream_13, capsys):
    ws = upstream_13
    assert ws.run("rebase", "1.0", "--onto", "1.3") == 1
    before = ws.snapshot()
    capsys.readouterr()
    assert ws.run("rebase", "--skip") == 1  # not a terminal: nobody to ask
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"vpatch: error: --skip needs --reason TEXT: why {P1} leaves the series (recorded in evidence.json)"
    ), err
    assert ws.run("rebase", "--continue", "--reason", "x") == 1
    assert "--reason goes with --skip" in capsys.readouterr().err
    assert ws.snapshot() == before
    code, result = rebase(ws, capsys, "--skip", "--reason", "upstream made it in #4242")
    assert code == 0 and statuses(result) == {P1: "skipped", P2: "clean", P3: "clean"}
    facts = evidence(ws, "1.3")
    entry = facts["patches"][P1]
    assert entry["skip_reason"] == "upstream made it in #4242"
    assert entry["details"] == [
        "dropped by hand (vpatch rebase --skip): upstream made it in #4242",
        "upstream has it: vllm/core/scheduler.py hunk #1: in vllm 1.3 at line 22 (moved context)",
    ]
    assert entry["upstream_signals"] == ["post_image_in_new"]
    assert {"name": P1, "feature": "kv-routing", "reason": "skipped", "skip_reason": "upstream made it in #4242"} in (
        facts["dropped"]
    )


def test_a_patch_upstream_has_in_part_names_those_hunks_in_the_stop(series_10, capsys):
    ws = series_10
    publish(ws, "1.4", **UPSTREAM_14)
    code, result = rebase(ws, capsys, "1.0", "--onto", "1.4")
    assert code == 1 and statuses(result)[P1] == "upstream has it"
    code, result = rebase(ws, capsys, "--continue")
    # patch 2: its new file is in 1.4 (a conflict: added on both sides), its block-pool hunk is not
    assert code == 1 and statuses(result)[P2] == "conflict", result["stopped"]
    stopped = result["stopped"]
    assert stopped["upstream"] == [
        {"file": "vllm/core/block_pool.py", "hunk": 1},
        {"file": "vllm/core/kv_events.py", "hunk": 1, "line": 1, "how": "exact"},
    ]
    assert stopped["details"][-2:] == [
        "upstream has 1 of its 2 hunks:",
        "  vllm/core/kv_events.py hunk #1: in vllm 1.4 at line 1",
    ]
    # resolve by hand: keep 1.4's kv_events.py, carry the block-pool change
    checkout = ws.root / "checkouts" / "vllm-1.4-rebase"
    (checkout / "vllm/core/kv_events.py").write_text(EVENTS_14)
    from toolkit.git import Git

    Git(checkout).run("add", "vllm/core/kv_events.py")
    code, result = rebase(ws, capsys, "--continue")
    assert code == 0 and statuses(result) == {P1: "empty", P2: "merged", P3: "clean"}
    entry = evidence(ws, "1.4")["patches"][P2]
    assert entry["evidence"]["post_image_in_new"]["found"] == 1 and "post_image_in_new" not in entry["upstream_signals"]
    assert (ws.series_dir("1.4") / P2).read_bytes().count(b"diff --git") == 1  # only the block-pool change left
    assert BLOCK_POOL_P2.splitlines()[6] in (ws.series_dir("1.4") / P2).read_text()


def test_a_feature_carried_past_its_native_since_is_flagged(series_10, capsys):
    ws = series_10
    pins = ws.root / "patches" / "pins.toml"
    line = 'kv-routing = "KV-cache events and load metrics for KV-aware routing"'
    pins.write_text(pins.read_text().replace(line, 'kv-routing = { description = "events", native-since = "1.1" }'))
    publish(ws, "1.1")
    capsys.readouterr()
    assert ws.run("rebase", "1.0", "--onto", "1.1") == 0
    err = capsys.readouterr().err
    facts = evidence(ws, "1.1")
    flagged = {name: e["past_native_since"] for name, e in facts["patches"].items()}
    assert flagged == {P1: "1.1", P2: "1.1", P3: None}  # P3 is pd-disagg
    (warning,) = facts["warnings"]  # one line per feature
    assert warning.startswith(
        "kv-routing: 2 patch(es) carried onto vllm 1.1, past the feature's native-since 1.1 (pins.toml), without "
        f"retirement evidence ({P1}, {P2}): check stock 1.1 with `vpatch conform 1.1 --against 1.0 --features "
        "kv-routing --save`"
    ), warning
    assert f"warning: {warning}" in " ".join(err.split())
    # the flag is no evidence: retire still needs the contracts
    capsys.readouterr()
    assert ws.run("retire", P1, "--since", "1.1") == 1
    assert "refusing to retire" in capsys.readouterr().err
    # an older evidence.json (no warnings, no post_image_in_new) still reads in the report
    from toolkit.report.evidence import load_evidence

    old = json.loads((ws.series_dir("1.1") / "evidence.json").read_text())
    del old["warnings"]
    for entry in old["patches"].values():
        del entry["past_native_since"], entry["skip_reason"], entry["evidence"]["post_image_in_new"]
    (ws.series_dir("1.1") / "evidence.json").write_text(json.dumps(old))
    loaded = load_evidence(ws.root, "patches/vllm-1.1/evidence.json")
    assert loaded.error is None and [p.name for p in loaded.patches] == [P1, P2, P3]


def test_skip_asks_for_the_reason_on_a_terminal(upstream_13):
    """`vpatch rebase --skip` in a process of its own whose stdin and stderr are a terminal (a pty)."""
    import os
    import pty
    import select
    import subprocess
    import sys
    import time
    from pathlib import Path

    ws = upstream_13
    assert ws.run("rebase", "1.0", "--onto", "1.3") == 1
    master, slave = pty.openpty()
    vpatch = Path(sys.executable).with_name("vpatch")
    argv = [str(vpatch), "--root", str(ws.root), "--cache-dir", str(ws.cache), "--index-url", ws.index.url]
    proc = subprocess.Popen([*argv, "rebase", "--skip", "--json"], stdin=slave, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen, deadline = b"", time.monotonic() + 60
    while b"leave the series? " not in seen and time.monotonic() < deadline and proc.poll() is None:
        if select.select([master], [], [], 0.5)[0]:
            seen += os.read(master, 4096)
    assert f"why does {P1} leave the series? ".encode() in seen, seen
    os.write(master, b"upstream took it in #4242\n")
    out, _ = proc.communicate(timeout=120)
    os.close(master)
    assert proc.returncode == 0, out
    result = json.loads(out)
    assert statuses(result)[P1] == "skipped"
    assert evidence(ws, "1.3")["patches"][P1]["skip_reason"] == "upstream took it in #4242"
