"""Resolutions kept in the tree (patches/vllm-NEW/resolutions/): recorded with the series, replayed with no
rr-cache, a stale one stopping the rebase, paths escaping the tree refused, `vpatch resolutions export`.
Real git on the synthetic upstreams of test_rebase."""

from __future__ import annotations

import json
import shutil

from tests.unit.lifecycle.rebase.test_rebase import (
    P1,
    conflicting_13,
    module_text,
    rebase,
    resolve_p1,
    series_10,
    statuses,
)
from toolkit.lifecycle.rebase import rerere_cache
from toolkit.lifecycle.rebase.resolutions import conflict_key, sha256
from toolkit.lifecycle.rebase.reuse import index_path
from toolkit.records.resolutions import decode_index, encode_index

__all__ = ["conflicting_13", "series_10"]  # fixtures used here

FILE = "vllm/core/scheduler.py"
STEM = P1.removesuffix(".patch")
RESOLVED = module_text("scheduler").replace("VALUE_20 = 20 ", "VALUE_20 = 20000 + 2000 ")


def recorded_once(ws, capsys) -> dict:
    """Rebase 1.0 onto 1.3, resolve P1's conflict by hand, continue: the index the rebase wrote."""
    code, _ = rebase(ws, capsys, "1.0", "--onto", "1.3")
    assert code == 1
    resolve_p1(ws)
    code, result = rebase(ws, capsys, "--continue")
    assert code == 0 and result["done"]
    return json.loads((ws.series_dir("1.3") / "resolutions" / "index.json").read_text())


def forget_rr_cache(ws) -> None:
    store = rerere_cache(ws.cache, "vllm", ws.root)
    shutil.rmtree(store, ignore_errors=True)
    index_path(store).unlink(missing_ok=True)


def test_a_resolution_is_recorded_with_the_series_as_plain_files(conflicting_13, capsys):
    ws = conflicting_13
    code, _ = rebase(ws, capsys, "1.0", "--onto", "1.3")
    assert code == 1 and not (ws.patches / "vllm-1.3").exists()  # nothing under patches/ while it stops
    resolve_p1(ws)
    assert rebase(ws, capsys, "--continue")[0] == 0
    directory = ws.series_dir("1.3") / "resolutions"
    index = decode_index((directory / "index.json").read_bytes())
    assert (index.old_version, index.new_version, index.project) == ("1.0", "1.3", "vllm")
    (entry,) = index.resolutions
    assert (entry.patch, entry.path, entry.how) == (P1, FILE, "by hand")
    assert entry.preimage == f"{STEM}/{FILE}.conflict" and entry.resolution == f"{STEM}/{FILE}.resolved"
    preimage = (directory / entry.preimage).read_text()
    assert "<<<<<<< HEAD" in preimage and "VALUE_20 = 20000 " in preimage and "VALUE_20 = 2000 " in preimage
    assert len(entry.hunks) == 1 and preimage.splitlines()[entry.hunks[0][0] - 1].startswith("<<<<<<<")
    assert (directory / entry.resolution).read_text() == RESOLVED
    assert sha256((directory / entry.resolution).read_bytes()) == entry.resolution_sha256
    assert (directory / "index.json").read_text() == encode_index(index)  # written through the record
    assert ws.run("check", "1.3", "--no-wheels") == 0  # a series with resolutions/ is still a valid series


def test_replayed_from_the_tree_alone_without_a_stop_and_announced(conflicting_13, capsys):
    ws = conflicting_13
    recorded_once(ws, capsys)
    forget_rr_cache(ws)  # as in a fresh clone: only the tree has it
    kept = {p.name: p.read_bytes() for p in (ws.series_dir("1.3") / "resolutions").rglob("*") if p.is_file()}
    code, result = rebase(ws, capsys, "1.0", "--onto", "1.3", "--force")
    assert code == 0 and result["done"], result["stopped"]
    assert statuses(result)[P1] == "merged"
    said = f"conflict in {FILE} resolved by the recorded resolution patches/vllm-1.3/resolutions/{STEM}/{FILE}.resolved"
    assert said in result["patches"][0]["details"][0] and "(by hand, recorded " in result["patches"][0]["details"][0]
    assert b"+VALUE_20 = 20000 + 2000" in (ws.series_dir("1.3") / P1).read_bytes()
    # Written again with the series, the same files (how and when it was first resolved kept).
    again = {p.name: p.read_bytes() for p in (ws.series_dir("1.3") / "resolutions").rglob("*") if p.is_file()}
    assert again == kept


def test_a_resolution_that_no_longer_matches_stops_and_says_so(conflicting_13, capsys):
    ws = conflicting_13
    recorded_once(ws, capsys)
    # The old series' patch now changes the line another way: the conflict is not the recorded one.
    patch = ws.series_dir("1.0") / P1
    patch.write_bytes(patch.read_bytes().replace(b"+VALUE_20 = 2000", b"+VALUE_20 = 2001"))
    code, result = rebase(ws, capsys, "1.0", "--onto", "1.3", "--force")
    assert code == 1 and statuses(result)[P1] == "conflict"
    details = result["stopped"]["details"]
    assert any(
        d.startswith(f"{FILE}: the recorded resolution patches/vllm-1.3/resolutions/{STEM}/{FILE}.resolved no longer")
        and "not applied" in d
        for d in details
    ), details
    # Not applied, and neither is rerere's (same patch, other conflict): the markers are there to resolve.
    checkout = ws.root / "checkouts" / "vllm-1.3-rebase"
    text = (checkout / FILE).read_text()
    assert "<<<<<<<" in text and "VALUE_20 = 2001" in text and "20000 + 2000" not in text
    assert ws.run("rebase", "--abort") == 0


def test_no_reuse_replays_nothing_from_the_tree(conflicting_13, capsys):
    ws = conflicting_13
    recorded_once(ws, capsys)
    code, result = rebase(ws, capsys, "1.0", "--onto", "1.3", "--force", "--no-reuse")
    assert code == 1 and statuses(result)[P1] == "conflict"
    assert not any("recorded resolution" in d for d in result["stopped"]["details"])


def test_another_steps_resolutions_are_not_replayed(conflicting_13, capsys):
    ws = conflicting_13
    recorded_once(ws, capsys)
    forget_rr_cache(ws)
    index_file = ws.series_dir("1.3") / "resolutions" / "index.json"
    index_file.write_text(index_file.read_text().replace('"old_version": "1.0"', '"old_version": "0.9"'))
    code, result = rebase(ws, capsys, "1.0", "--onto", "1.3", "--force")
    assert code == 1
    assert "records the step 0.9 → 1.3, not 1.0 → 1.3: not replayed" in result["stopped"]["details"][-1]


def test_paths_escaping_the_tree_and_edited_files_are_refused(conflicting_13, capsys, tmp_path):
    ws = conflicting_13
    recorded_once(ws, capsys)
    directory = ws.series_dir("1.3") / "resolutions"
    good = (directory / "index.json").read_text()
    outside = tmp_path / "outside.py"
    outside.write_text("x\n")
    cases = {
        "a file outside vLLM's tree": (f'"path": "{FILE}"', '"path": "../../outside.py"', "not a plain path"),
        "an absolute path": (f'"path": "{FILE}"', f'"path": "{outside}"', "not a plain path"),
        "a record outside resolutions/": (
            f'"resolution": "{STEM}/{FILE}.resolved"',
            '"resolution": "../series"',
            "not a plain path",
        ),
        "an edited resolution": (None, None, "does not match its sha256"),
    }
    for label, (old, new, said) in cases.items():
        (directory / "index.json").write_text(good)
        if old is None:
            (directory / f"{STEM}/{FILE}.resolved").write_text("edited\n")
        else:
            (directory / "index.json").write_text(good.replace(old, new))
        capsys.readouterr()
        assert ws.run("rebase", "1.0", "--onto", "1.3", "--force") == 1, label
        (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
        assert "resolutions/index.json" in line and said in line, (label, line)
        assert outside.read_text() == "x\n"
        assert not (ws.root / "checkouts" / "vllm-1.3-rebase" / ".git" / "vpatch-rebase").exists()  # not started
    # A symlink on the way out of resolutions/ is refused too.
    (directory / "index.json").write_text(good)
    shutil.rmtree(directory / STEM)
    (directory / STEM).symlink_to(tmp_path, target_is_directory=True)
    capsys.readouterr()
    assert ws.run("rebase", "1.0", "--onto", "1.3", "--force") == 1
    assert "leads outside resolutions/" in capsys.readouterr().err


def test_export_copies_the_rr_cache_into_the_tree_and_the_export_replays(conflicting_13, capsys):
    ws = conflicting_13
    recorded_once(ws, capsys)
    shutil.rmtree(ws.series_dir("1.3") / "resolutions")  # as a rebase made before the tree kept them
    capsys.readouterr()
    assert ws.run("resolutions", "export", "1.3", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["old_version"] == "1.0" and out["written"] == [{"patch": P1, "path": FILE}]
    directory = ws.series_dir("1.3") / "resolutions"
    (entry,) = decode_index((directory / "index.json").read_bytes()).resolutions
    assert entry.how == "exported from the rr-cache (rerere)"
    assert (directory / entry.resolution).read_text() == RESOLVED
    # A second export keeps what the tree has.
    assert ws.run("resolutions", "export", "1.3", "--json") == 0
    assert json.loads(capsys.readouterr().out)["kept"] == [{"patch": P1, "path": FILE}]
    # rerere's normalized preimage compares equal to the conflict git makes again: replayed with no rr-cache.
    forget_rr_cache(ws)
    code, result = rebase(ws, capsys, "1.0", "--onto", "1.3", "--force")
    assert code == 0 and result["done"], result["stopped"]
    assert "exported from the rr-cache (rerere)" in result["patches"][0]["details"][0]
    # Nothing recorded for a release: one line, exit 1.
    capsys.readouterr()
    forget_rr_cache(ws)
    assert ws.run("resolutions", "export", "1.3") == 1
    assert "no recorded resolution of a rebase onto 1.3" in capsys.readouterr().err


def test_conflict_key_drops_labels_and_the_diff3_base_and_sorts_the_sides():
    merge = b"a\n<<<<<<< HEAD\nours\n=======\ntheirs\n>>>>>>> patch subject\nz\n"
    diff3 = b"a\n<<<<<<< ours\nours\n||||||| base\nold\n=======\ntheirs\n>>>>>>> theirs\nz\n"
    swapped = b"a\n<<<<<<<\ntheirs\n=======\nours\n>>>>>>>\nz\n"
    assert conflict_key(merge) == conflict_key(diff3) == conflict_key(swapped)
    assert conflict_key(merge) != conflict_key(merge.replace(b"theirs", b"theirs2"))
    assert conflict_key(merge) != conflict_key(merge.replace(b"z\n", b"y\n"))
