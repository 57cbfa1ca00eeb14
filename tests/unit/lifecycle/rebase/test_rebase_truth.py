"""After a rebase, an imported patch's name, subject and `Origin:` still say what it is and where it came from,
and range-diff pairs each patch by its stable name. A synthetic fork (a plain `diff -ruN` against vllm 1.0,
split per file by feature) rebased one release with real git; 1.1 changed the line the block-pool patch
changes, and the resolution moves that change into another file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import DIFF_AUTHORSHIP, module_text
from tests.unit.importer.test_import import KV_EVENTS, base_and_fork, diff_ruN, run
from tests.unit.lifecycle.rebase.test_rebase import evidence, publish, rebase, series_names, statuses
from toolkit.git import Git
from toolkit.model import parse_patch

BLOCK_POOL = "0001-kv-routing-core-block-pool.patch"
EVENTS = "0002-kv-routing-core-kv-events.patch"
ARGS = "0003-pd-disagg-engine-args.patch"
MOVED = "0001-kv-routing-core-block-config.patch"
FORK = {
    "vllm/core/block_pool.py": module_text("block_pool").replace("VALUE_20 = 20 ", "VALUE_20 = 2000 "),
    "vllm/core/kv_events.py": KV_EVENTS,
    "vllm/engine/args.py": module_text("args").replace("VALUE_12 = 12 ", "VALUE_12 = 1212 "),
}
NEW_BLOCK_POOL = module_text("block_pool").replace("VALUE_20 = 20 ", "VALUE_20 = 21 ")
ORIGIN = "import, file fork.diff"


@pytest.fixture
def fork_11(pinned, tmp_path, capsys):
    """The fork imported onto 1.0 (three patches), and 1.1 published with block_pool.py's line 20 changed."""
    ws = pinned
    base_and_fork(tmp_path, FORK)
    diff = diff_ruN(tmp_path)
    args = ["import", str(diff), "--version", "1.0", *DIFF_AUTHORSHIP, "--split", "per-file"]
    code, data, _ = run(ws, capsys, *args, "--feature", "vllm/core/**=kv-routing", "--feature", "pd-disagg", "--json")
    assert code == 0 and data is not None
    assert [p["name"] for p in data["patches"]] == [BLOCK_POOL, EVENTS, ARGS]
    publish(ws, "1.1", **{"vllm/core/block_pool.py": NEW_BLOCK_POOL})
    return ws


def mail(ws, version: str, name: str):
    return parse_patch(ws.series_dir(version) / name)


def stop_and_resolve(ws, capsys, files: dict[str, str]) -> None:
    code, result = rebase(ws, capsys, "1.0", "--onto", "1.1")
    assert code == 1 and statuses(result)[BLOCK_POOL] == "conflict"
    checkout = ws.root / "checkouts" / "vllm-1.1-rebase"
    for path, text in files.items():
        (checkout / path).write_text(text)
    Git(checkout).run("add", "--sparse", *files)  # the checkout is sparse: only what the series touches


def range_diff_heads(ws, version: str) -> list[str]:
    text = (ws.series_dir(version) / "range-diff.txt").read_text()
    return [line for line in text.splitlines() if line[:1].isdigit() or line.startswith("-:")]


def test_a_resolution_that_moves_the_change_renames_and_retitles_it_and_origin_says_so(fork_11, capsys):
    ws = fork_11
    # The change now lives in a new file; block_pool.py is NEW's.
    stop_and_resolve(
        ws,
        capsys,
        {"vllm/core/block_pool.py": NEW_BLOCK_POOL, "vllm/core/block_config.py": "BLOCK_VALUE_20 = 2000\n"},
    )
    code, result = rebase(ws, capsys, "--continue")
    assert code == 0 and result["done"], result
    assert statuses(result) == {MOVED: "merged", EVENTS: "clean", ARGS: "clean"}
    assert result["patches"][0]["details"] == [
        "conflict resolved by hand",
        f"renamed from {BLOCK_POOL} and retitled: "
        "it now touches vllm/core/block_config.py, not vllm/core/block_pool.py",
    ]
    assert series_names(ws, "1.1") == [MOVED, EVENTS, ARGS]
    moved = mail(ws, "1.1", MOVED)
    assert moved.subject == "[kv-routing] vllm/core/block_config.py"
    assert moved.touched_paths == ("vllm/core/block_config.py",)
    assert moved.header("Patch-File") == MOVED
    assert moved.header("Origin") == f"{ORIGIN} (against vllm 1.0), changed by the rebase onto vllm 1.1"
    # Carried unchanged: still exactly the diff's change, named and titled as before.
    for name, subject in ((EVENTS, "[kv-routing] vllm/core/kv_events.py"), (ARGS, "[pd-disagg] vllm/engine/args.py")):
        kept = mail(ws, "1.1", name)
        assert (kept.subject, kept.header("Origin"), kept.header("Patch-File")) == (subject, ORIGIN, name)
    facts = evidence(ws, "1.1")
    assert facts["patches"][MOVED]["renamed_from"] == BLOCK_POOL and BLOCK_POOL not in facts["patches"]
    assert facts["kept"] == [MOVED, EVENTS, ARGS]
    # range-diff: the one changed patch, paired by its stable name although its diff and subject both changed.
    heads = range_diff_heads(ws, "1.1")
    assert len(heads) == 3, heads
    assert " ! " in heads[0] and heads[0].endswith(" [kv-routing] vllm/core/block_config.py"), heads
    assert all(" = " in head for head in heads[1:]), heads
    assert not any(" < " in head or " > " in head for head in heads), heads
    # The checkout is the written series, and the series checks and reviews as written.
    checkout = Git(ws.root / "checkouts" / "vllm-1.1-rebase")
    assert checkout.out("log", "-1", "--format=%s", "HEAD~2") == moved.subject
    assert ws.run("check", "1.1", "--no-wheels") == 0
    capsys.readouterr()
    assert ws.run("review", "1.1", "--json") == 0
    reviewed = json.loads(capsys.readouterr().out)
    assert reviewed is not None
    again = range_diff_heads(ws, "1.1")
    assert again == heads


def test_a_resolution_in_the_same_file_keeps_name_and_subject_and_origin_says_it_changed(fork_11, capsys):
    ws = fork_11
    stop_and_resolve(
        ws, capsys, {"vllm/core/block_pool.py": NEW_BLOCK_POOL.replace("VALUE_20 = 21 ", "VALUE_20 = 2100 ")}
    )
    code, result = rebase(ws, capsys, "--continue")
    assert code == 0 and statuses(result) == {BLOCK_POOL: "merged", EVENTS: "clean", ARGS: "clean"}
    assert result["patches"][0]["details"] == ["conflict resolved by hand"]
    resolved = mail(ws, "1.1", BLOCK_POOL)
    assert resolved.subject == "[kv-routing] vllm/core/block_pool.py"
    assert resolved.header("Origin") == f"{ORIGIN} (against vllm 1.0), changed by the rebase onto vllm 1.1"
    assert mail(ws, "1.1", EVENTS).header("Origin") == ORIGIN
    heads = range_diff_heads(ws, "1.1")
    assert len(heads) == 3 and " ! " in heads[0] and heads[0].endswith("[kv-routing] vllm/core/block_pool.py")
    assert "renamed_from" not in evidence(ws, "1.1")["patches"][BLOCK_POOL]


# ---------------------------------------------------------------- the walk-through, by the console script

# 1.1 made the block-pool change itself, with the lines around it changed too: a conflict, upstream has it.
UPSTREAM_BLOCK_POOL = (
    module_text("block_pool")
    .replace("VALUE_19 = 19 ", "VALUE_19 = 190 ")
    .replace("VALUE_20 = 20 ", "VALUE_20 = 2000 ")
    .replace("VALUE_21 = 21 ", "VALUE_21 = 0 ")
)


def vpatch(ws, *args: str, expect: int) -> tuple[str, str]:
    """The `vpatch` console script in a process of its own, stdin not a terminal; asserts its exit code."""
    proc = subprocess.run(
        [
            *(str(Path(sys.executable).with_name("vpatch")), "--root", str(ws.root), "--cache-dir", str(ws.cache)),
            *("--index-url", ws.index.url, *args),
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
        check=False,
    )
    assert proc.returncode == expect, (args, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc.stdout, proc.stderr


def test_the_cli_walk_through_skip_records_evidence_and_beside_deletes_nothing(pinned, tmp_path):
    ws = pinned
    base_and_fork(tmp_path, FORK)
    diff = diff_ruN(tmp_path)
    features = ["--feature", "vllm/core/**=kv-routing", "--feature", "pd-disagg", "--split", "per-file"]
    vpatch(ws, "import", str(diff), "--version", "1.0", *DIFF_AUTHORSHIP, *features, expect=0)
    assert series_names(ws, "1.0") == [BLOCK_POOL, EVENTS, ARGS]
    publish(ws, "1.1", **{"vllm/core/block_pool.py": UPSTREAM_BLOCK_POOL})

    _, err = vpatch(ws, "rebase", "1.0", "--onto", "1.1", expect=1)
    assert f"stopped at {BLOCK_POOL} (upstream has it):" in err
    _, err = vpatch(ws, "rebase", "--skip", expect=1)  # no terminal to ask for the reason
    assert err.strip().splitlines()[-1].startswith("vpatch: error: --skip needs --reason TEXT")
    vpatch(ws, "rebase", "--skip", "--reason", "vLLM 1.1 has it", expect=0)
    facts = evidence(ws, "1.1")
    entry = facts["patches"][BLOCK_POOL]
    assert (entry["outcome"], entry["skip_reason"]) == ("skipped", "vLLM 1.1 has it")
    assert "post_image_in_new" in entry["upstream_signals"]
    assert entry["evidence"]["post_image_in_new"]["found"] == entry["evidence"]["post_image_in_new"]["total"] == 1
    assert {"name": BLOCK_POOL, "feature": "kv-routing", "reason": "skipped", "skip_reason": "vLLM 1.1 has it"} in (
        facts["dropped"]
    )
    assert series_names(ws, "1.1") == [EVENTS, ARGS]

    # A second rebase onto 1.1: refused in one line, then written beside it with nothing deleted.
    before = ws.snapshot()
    _, err = vpatch(ws, "rebase", "1.0", "--onto", "1.1", expect=1)
    (line,) = err.strip().splitlines()
    assert "already has a series; use --beside" in line
    assert ws.snapshot() == before
    review = str(ws.root / "checkouts" / "review")
    vpatch(ws, "rebase", "1.0", "--onto", "1.1", "--beside", "--into", review, expect=1)  # upstream has it again
    vpatch(ws, "rebase", "--skip", "--reason", "vLLM 1.1 has it", expect=0)  # found under checkouts/ without --into
    after = ws.snapshot()
    assert {k: v for k, v in after.items() if k in before} == before  # nothing deleted or changed
    beside = sorted(k for k in after if k.startswith("vllm-1.1.rebased/"))
    assert beside == sorted(
        f"vllm-1.1.rebased/{n}" for n in (EVENTS, ARGS, "series", "evidence.json", "range-diff.txt")
    )
    out, _ = vpatch(ws, "rebase", "--discard", "1.1", expect=0)
    assert "discarded" in out and ws.snapshot() == before
