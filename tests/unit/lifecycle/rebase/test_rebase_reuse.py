"""Recorded resolutions announced with where they came from, `--no-reuse`, and `--beside` / `--adopt` /
`--discard`: real git on the synthetic upstreams of test_rebase."""

from __future__ import annotations

import json
import shutil

from tests.unit.lifecycle.rebase.test_rebase import (
    P1,
    P2,
    P3,
    conflicting_13,
    publish,
    rebase,
    resolve_p1,
    series_10,
    series_names,
    statuses,
)
from toolkit.lifecycle.rebase import rerere_cache
from toolkit.lifecycle.rebase.reuse import index_path

__all__ = ["conflicting_13", "series_10"]  # fixtures used here


def test_a_reused_resolution_is_indexed_announced_and_refused_with_no_reuse(conflicting_13, capsys):
    ws = conflicting_13
    store = rerere_cache(ws.cache, "vllm", ws.root)
    assert ws.run("rebase", "1.0", "--onto", "1.3") == 1
    resolve_p1(ws)
    assert ws.run("rebase", "--continue") == 0
    (entry,) = json.loads(index_path(store).read_text()).values()
    assert entry["file"] == "vllm/core/scheduler.py" and entry["patch"] == P1 and entry["rebase"] == "1.0 → 1.3"
    (rr_id,) = json.loads(index_path(store).read_text())
    assert (store / rr_id.split(".")[0] / "postimage").is_file()  # keyed by rerere's own id

    # Reused: said on stderr and in the patch's details, with the patch and time it was recorded.
    capsys.readouterr()
    shutil.rmtree(ws.series_dir("1.3") / "resolutions")  # the rr-cache alone (the tree's: test_rebase_resolutions)
    assert ws.run("rebase", "1.0", "--onto", "1.3", "--force") == 0
    err = capsys.readouterr().err
    said = f"vpatch: {P1}: conflict in vllm/core/scheduler.py resolved by a recorded resolution (rerere), "
    said += f"recorded for {P1}"
    assert said in err and entry["recorded"] in err

    # --no-reuse: the same conflict stops, with the resolution still recorded and nothing replayed.
    code, result = rebase(ws, capsys, "1.0", "--onto", "1.3", "--force", "--no-reuse")
    assert code == 1 and statuses(result)[P1] == "conflict"
    checkout = ws.root / "checkouts" / "vllm-1.3-rebase"
    assert b"<<<<<<<" in (checkout / "vllm/core/scheduler.py").read_bytes()
    assert not any("recorded resolution" in d for d in result["patches"][0]["details"])
    assert ws.run("rebase", "--abort") == 0
    assert len(list(store.glob("*/postimage"))) == 1


def test_beside_writes_next_to_the_committed_series_then_adopt_or_discard(conflicting_13, capsys):
    ws = conflicting_13
    publish(ws, "1.1", **{"vllm/core/scheduler.py": "# 1.1 moved things\n" + open_module(ws)})
    assert ws.run("rebase", "1.0", "--onto", "1.1") == 0
    committed = ws.series_dir("1.1")
    (committed / "NOTES.md").write_text("kept by hand\n")
    (committed / P3).write_bytes(
        (committed / P3).read_bytes().replace(b"Feature: pd-disagg", b"Feature: pd-disagg\nX: 1")
    )
    before = {p.name: p.read_bytes() for p in committed.iterdir()}

    # The first rebase's checkout holds its commits: this one gets its own.
    code, result = rebase(ws, capsys, "1.0", "--onto", "1.1", "--beside", "--into", str(ws.root / "review"))
    beside = committed.with_name("vllm-1.1.rebased")
    assert code == 0 and result["series"] == str(beside)
    assert {p.name: p.read_bytes() for p in committed.iterdir()} == before  # nothing deleted or changed
    assert series_names(ws, "1.1") == [P1, P2, P3]
    assert sorted(p.name for p in beside.iterdir()) == sorted([P1, P2, P3, "series", "evidence.json", "range-diff.txt"])

    # A second --beside would overwrite the review copy: refused in one line until adopted or discarded.
    capsys.readouterr()
    assert ws.run("rebase", "1.0", "--onto", "1.1", "--beside") == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "already holds a rebase for review" in line and "--adopt 1.1" in line

    assert ws.run("rebase", "--adopt", "1.1") == 0
    assert not beside.exists()
    assert (committed / "NOTES.md").read_text() == "kept by hand\n"  # the user's file stays
    assert b"X: 1" not in (committed / P3).read_bytes()  # vpatch's files are the rebased ones

    assert ws.run("rebase", "1.0", "--onto", "1.1", "--beside", "--into", str(ws.root / "review"), "--force") == 0
    capsys.readouterr()
    assert ws.run("rebase", "--discard", "1.1") == 0
    assert "discarded" in capsys.readouterr().out and not beside.exists()
    assert ws.run("rebase", "--discard", "1.1") == 1  # nothing left to discard


def open_module(ws) -> str:
    from tests.harness import module_text

    return module_text("scheduler")
