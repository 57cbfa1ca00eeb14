"""apply / export / continue / abort on small synthetic upstreams built in tmp dirs."""

from __future__ import annotations

import json

import pytest

from tests.harness import commit_in, default_tree, module_text
from toolkit.git import Git


def scheduler(replace: dict[str, str] | None = None, prepend: str = "") -> str:
    text = module_text("scheduler")
    for old, new in (replace or {}).items():
        assert old in text
        text = text.replace(old, new)
    return prepend + text


def tree_with(version: str, **files: str) -> dict:
    tree = default_tree(version)
    tree.update({k.replace("__", "/") + ".py": v for k, v in files.items()})
    return tree


@pytest.fixture
def series_10(pinned):
    """vllm 1.0 pinned with a three-patch series exported from real commits."""
    ws = pinned
    ws.write_series("1.0", {})
    assert ws.run("apply", "1.0") == 0
    checkout = ws.checkout("1.0")
    commit_in(
        checkout,
        {"vllm/core/scheduler.py": scheduler({"VALUE_20 = 20": "VALUE_20 = 2000"})},
        subject="[Core] scale value twenty",
        body="The router needs it.",
    )
    commit_in(
        checkout,
        {
            "vllm/core/block_pool.py": module_text("block_pool").replace("VALUE_5 = 5", "VALUE_5 = -5"),
            "vllm/core/kv_events.py": '"""Events."""\n',
        },
        subject="[V1] publish block events",
        headers="Upstream-Status: Pending\nFeature: kv-routing",
    )
    commit_in(
        checkout,
        {"vllm/engine/args.py": module_text("args").replace("VALUE_30 = 30", "VALUE_30 = 3")},
        subject="[Engine] add disagg args",
        headers="Upstream-Status: Submitted [https://example.com/pr/1]\nFeature: pd-disagg",
    )
    assert ws.run("export", "1.0") == 0
    return ws


def outcomes(capsys) -> dict:
    data = json.loads(capsys.readouterr().out)
    return {p["name"]: p for p in data["patches"]}


def test_export_names_are_stable_and_round_trip_is_byte_identical(series_10, capsys):
    ws = series_10
    lines = (ws.series_dir("1.0") / "series").read_text().split("\n")
    assert lines[0] == "# test series"
    assert [n for n in lines if n and not n.startswith("#")] == [
        "0001-core-scale-value-twenty.patch",
        "0002-v1-publish-block-events.patch",
        "0003-engine-add-disagg-args.patch",
    ]
    before = ws.snapshot()
    assert ws.run("apply", "1.0", "--force") == 0
    assert ws.run("export", "1.0") == 0
    assert ws.snapshot() == before
    for data in before.values():
        assert b"\n-- \n" not in data  # no git version signature
    first = before["vllm-1.0/0001-core-scale-value-twenty.patch"]
    assert first.startswith(b"From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n")
    assert b"index " in first and len(first.split(b"index ")[1].split(b"..")[0]) == 40  # full index


def test_editing_one_commit_changes_only_that_patch(series_10):
    ws = series_10
    before = ws.snapshot()
    assert ws.run("apply", "1.0", "--force") == 0
    repo = Git(ws.checkout("1.0"))
    # Reword the middle commit with ordinary git: rebase onto its parent with an edited message.
    commits = repo.commits("refs/vpatch/upstream..HEAD")
    repo.run("checkout", "-q", commits[1])
    repo.run(
        "commit",
        "-q",
        "--amend",
        "-m",
        "[V1] publish block events\n\nNow with a reason.\n\n"
        "Upstream-Status: Pending\nFeature: kv-routing\nPatch-File: 0002-v1-publish-block-events.patch",
    )
    amended = repo.out("rev-parse", "HEAD")
    repo.run("cherry-pick", commits[2])
    repo.run("branch", "-f", "vpatch/1.0", "HEAD")
    repo.run("checkout", "-q", "vpatch/1.0")
    assert repo.out("rev-parse", "HEAD~1") == amended
    assert ws.run("export", "1.0") == 0
    after = ws.snapshot()
    changed = {k for k in before if before[k] != after.get(k)}
    assert changed == {"vllm-1.0/0002-v1-publish-block-events.patch"}
    assert b"Now with a reason." in after["vllm-1.0/0002-v1-publish-block-events.patch"]


def test_new_commit_gets_a_new_name_and_series_keeps_comments(series_10):
    ws = series_10
    assert ws.run("apply", "1.0", "--force") == 0
    commit_in(
        ws.checkout("1.0"),
        {"README.md": "# vllm, patched\n"},
        subject="Docs: say it is patched",
        headers="Upstream-Status: Inappropriate [downstream only]\nFeature: kv-routing",
    )
    assert ws.run("export", "1.0") == 0
    series = (ws.series_dir("1.0") / "series").read_text()
    assert series.startswith("# test series\n")
    assert series.strip().endswith("0004-docs-say-it-is-patched.patch")
    new = (ws.series_dir("1.0") / "0004-docs-say-it-is-patched.patch").read_bytes()
    assert b"Feature: kv-routing\nPatch-File: 0004-docs-say-it-is-patched.patch\n---\n" in new
    assert ws.run("check", "1.0", "--no-wheels") == 0


def test_a_new_commit_is_numbered_after_the_highest_number_the_project_used(series_10):
    """Not by its position: with 0002 dropped and 0004 retired (kept in retired/), a commit added third is
    0005, not a second 0003; the others keep their files byte for byte. Another release's series (retired/
    too) counts as well: a number names one patch in every release."""
    ws = series_10
    retired = ws.series_dir("1.0") / "retired"
    retired.mkdir()
    (retired / "0004-v1-an-upstreamed-patch.patch").write_bytes(b"a retired patch, kept\n")
    assert ws.run("apply", "1.0", "--force") == 0
    repo = Git(ws.checkout("1.0"))
    commits = repo.commits("refs/vpatch/upstream..HEAD")
    repo.run("reset", "-q", "--hard", commits[0])
    repo.run("cherry-pick", commits[2])
    commit_in(ws.checkout("1.0"), {"README.md": "# patched\n"}, subject="Docs: say it is patched")
    before = ws.snapshot()
    assert ws.run("export", "1.0") == 0
    after = ws.snapshot()
    names = [n for n in (ws.series_dir("1.0") / "series").read_text().split() if n.endswith(".patch")]
    assert names == [
        "0001-core-scale-value-twenty.patch",
        "0003-engine-add-disagg-args.patch",
        "0005-docs-say-it-is-patched.patch",
    ]
    for kept in names[:2]:
        assert after[f"vllm-1.0/{kept}"] == before[f"vllm-1.0/{kept}"]
    assert "vllm-1.0/0002-v1-publish-block-events.patch" not in after
    assert after["vllm-1.0/retired/0004-v1-an-upstreamed-patch.patch"] == b"a retired patch, kept\n"
    assert ws.run("export", "1.0") == 0 and ws.snapshot() == after  # the headerless commit keeps its name

    ws.publish("1.1")
    assert ws.run("pin", "add", "1.1") == 0
    (ws.series_dir("1.1") / "retired").mkdir(parents=True)
    (ws.series_dir("1.1") / "retired" / "0009-v1-retired-at-1-1.patch").write_bytes(b"retired at 1.1\n")
    commit_in(ws.checkout("1.0"), {"NOTES.md": "notes\n"}, subject="Docs: notes")
    assert ws.run("export", "1.0") == 0
    assert (ws.series_dir("1.0") / "series").read_text().split()[-1] == "0010-docs-notes.patch"


def test_dropping_a_commit_removes_its_file(series_10):
    ws = series_10
    assert ws.run("apply", "1.0", "--force") == 0
    repo = Git(ws.checkout("1.0"))
    commits = repo.commits("refs/vpatch/upstream..HEAD")
    repo.run("reset", "-q", "--hard", commits[0])
    repo.run("cherry-pick", commits[2])
    assert ws.run("export", "1.0") == 0
    files = sorted(p.name for p in ws.series_dir("1.0").iterdir())
    assert files == ["0001-core-scale-value-twenty.patch", "0003-engine-add-disagg-args.patch", "series"]


def test_offsets_are_reported_per_hunk(series_10, capsys):
    ws = series_10
    ws.pin_carrying("1.1", tree_with("1.1", vllm__core__scheduler=scheduler(prepend="# new header line\n# another\n")))
    capsys.readouterr()
    assert ws.run("apply", "1.1", "--json") == 0
    result = outcomes(capsys)
    first = result["0001-core-scale-value-twenty.patch"]
    assert first["status"] == "offset"
    assert first["details"] == ["vllm/core/scheduler.py: hunk #1 at line 21 (offset +2 lines)"]
    assert result["0002-v1-publish-block-events.patch"]["status"] == "clean"
    # check flags the offset as out of sync, since re-export moves the hunk header
    assert ws.run("check", "1.1", "--no-wheels") == 1
    assert "0001-core-scale-value-twenty.patch:" in capsys.readouterr().out


@pytest.fixture
def conflicting_12(series_10, capsys):
    """vllm 1.2 changed a context line of patch 0001: it no longer applies with zero fuzz."""
    ws = series_10
    ws.pin_carrying(
        "1.2", tree_with("1.2", vllm__core__scheduler=scheduler({"VALUE_18 = 18": "VALUE_18 = 18  # touched upstream"}))
    )
    capsys.readouterr()
    return ws


def test_failed_patch_stops_resumably_and_continue_finishes(conflicting_12, capsys):
    ws = conflicting_12
    before = ws.snapshot()
    assert ws.run("apply", "1.2", "--json") == 1
    result = outcomes(capsys)
    failed = result["0001-core-scale-value-twenty.patch"]
    assert failed["status"] == "failed"
    assert failed["details"] == ["vllm/core/scheduler.py: hunk #1 at line 19 does not apply"]
    assert result["0002-v1-publish-block-events.patch"]["status"] == "not applied"
    checkout = ws.checkout("1.2")
    repo = Git(checkout)
    assert (checkout / ".git" / "rebase-apply").is_dir()
    # The maintainer fixes it with ordinary git ...
    path = checkout / "vllm/core/scheduler.py"
    path.write_text(path.read_text().replace("VALUE_20 = 20", "VALUE_20 = 2000"))
    repo.run("add", "vllm/core/scheduler.py")
    assert ws.run("apply", "1.2", "--continue", "--json") == 0
    result = outcomes(capsys)
    assert [p["status"] for p in result.values()] == ["merged", "clean", "clean"]
    assert len(repo.commits("refs/vpatch/upstream..HEAD")) == 3
    assert ws.snapshot() == before  # apply never writes patches/
    assert ws.run("export", "1.2") == 0
    after = ws.snapshot()
    assert {k for k in after if after[k] != before[k]} == {"vllm-1.2/0001-core-scale-value-twenty.patch"}
    assert ws.run("check", "1.2", "--no-wheels") == 0


def test_abort_returns_to_the_base(conflicting_12, capsys):
    ws = conflicting_12
    assert ws.run("apply", "1.2") == 1
    assert ws.run("apply", "1.2", "--abort") == 0
    repo = Git(ws.checkout("1.2"))
    assert repo.rev_parse("HEAD") == repo.rev_parse("refs/vpatch/upstream")
    assert not (ws.checkout("1.2") / ".git" / "rebase-apply").exists()
    assert repo.is_clean()


def test_fuzz_applies_when_allowed_and_is_reported(conflicting_12, capsys):
    ws = conflicting_12
    # VALUE_18 is the second context line above the change to VALUE_20: fuzz 2 (-C1) ignores it
    assert ws.run("apply", "1.2", "--fuzz", "2", "--json") == 0
    result = outcomes(capsys)
    assert result["0001-core-scale-value-twenty.patch"]["status"] == "fuzz"
    assert [p["status"] for p in result.values()][1:] == ["clean", "clean"]


def test_three_way_merges_what_zero_fuzz_refuses(conflicting_12, capsys):
    ws = conflicting_12
    assert ws.run("apply", "1.2", "--3way", "--json") == 0
    result = outcomes(capsys)
    assert result["0001-core-scale-value-twenty.patch"]["status"] == "merged"
    text = (ws.checkout("1.2") / "vllm/core/scheduler.py").read_text()
    assert "VALUE_18 = 18  # touched upstream" in text and "VALUE_20 = 2000" in text


def test_three_way_conflict_lists_files_and_continues(series_10, capsys):
    ws = series_10
    ws.pin_carrying("1.3", tree_with("1.3", vllm__core__scheduler=scheduler({"VALUE_20 = 20": "VALUE_20 = 20000"})))
    capsys.readouterr()
    assert ws.run("apply", "1.3", "--3way", "--json") == 1
    result = outcomes(capsys)
    stopped = result["0001-core-scale-value-twenty.patch"]
    assert stopped["status"] == "conflict"
    assert stopped["details"] == ["vllm/core/scheduler.py: conflict, resolve and `git add` it"]
    checkout = ws.checkout("1.3")
    path = checkout / "vllm/core/scheduler.py"
    assert "<<<<<<<" in path.read_text()
    path.write_text(scheduler({"VALUE_20 = 20": "VALUE_20 = 2000"}))
    Git(checkout).run("add", "vllm/core/scheduler.py")
    assert ws.run("apply", "--continue", "--into", str(checkout), "--json") == 0
    assert [p["status"] for p in outcomes(capsys).values()] == ["merged", "clean", "clean"]


def test_apply_refuses_to_overwrite_an_existing_checkout(series_10, capsys):
    ws = series_10
    assert ws.run("apply", "1.0", "--force") == 0
    marker = ws.checkout("1.0") / "my-work.txt"
    marker.write_text("unsaved")
    capsys.readouterr()
    assert ws.run("apply", "1.0") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vpatch: error:") and "--force" in err[0]
    assert marker.read_text() == "unsaved"


def test_export_refuses_a_dirty_checkout_and_writes_nothing(series_10, capsys):
    ws = series_10
    assert ws.run("apply", "1.0", "--force") == 0
    (ws.checkout("1.0") / "vllm/core/scheduler.py").write_text("dirty\n")
    before = ws.snapshot()
    capsys.readouterr()
    assert ws.run("export", "1.0") == 1
    assert "uncommitted changes" in capsys.readouterr().err
    assert ws.snapshot() == before


def test_applied_commits_are_deterministic(series_10, tmp_path):
    ws = series_10
    assert ws.run("apply", "1.0", "--force") == 0
    first = Git(ws.checkout("1.0")).rev_parse("HEAD")
    assert ws.run("apply", "1.0", "--into", str(tmp_path / "elsewhere")) == 0
    assert Git(tmp_path / "elsewhere").rev_parse("HEAD") == first


def test_re_export_from_the_same_checkout_keeps_names(pinned):
    """Commits made by hand carry no Patch-File header; exporting twice must not rename them."""
    ws = pinned
    ws.write_series("1.0", {})
    assert ws.run("apply", "1.0") == 0
    commit_in(ws.checkout("1.0"), {"README.md": "# patched\n"}, subject="A subject long enough to be cut " * 3)
    assert ws.run("export", "1.0") == 0
    first = ws.snapshot()
    assert ws.run("export", "1.0") == 0
    assert ws.snapshot() == first
    (name,) = [n for n in first if n.endswith(".patch")]
    assert name == "vllm-1.0/0001-a-subject-long-enough-to-be-cut-a-subject-long.patch"  # cut on a word


def test_each_patch_is_what_format_patch_writes_for_it_alone(series_10, tmp_path):
    """A mail's bytes must not depend on its position in the series (--stdout adds a blank line between mails)."""
    from toolkit.git import FORMAT_PATCH_ARGS

    ws = series_10
    assert ws.run("apply", "1.0", "--force") == 0
    repo = Git(ws.checkout("1.0"))
    args = [a for a in FORMAT_PATCH_ARGS if a != "--stdout"]
    repo.run(*args, "-o", str(tmp_path / "single"), "refs/vpatch/upstream..HEAD")
    singles = sorted((tmp_path / "single").iterdir())
    exported = [
        ws.series_dir("1.0") / n for n in (ws.series_dir("1.0") / "series").read_text().split() if n.endswith(".patch")
    ]
    assert len(singles) == len(exported) == 3
    for single, ours in zip(singles, exported, strict=True):
        assert ours.read_bytes() == single.read_bytes(), ours.name
