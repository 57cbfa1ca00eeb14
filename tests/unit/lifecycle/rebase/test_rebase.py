"""vpatch rebase: replay a series onto another release on synthetic upstreams (sdist and git)."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path

import pytest

from tests.harness import AUTHOR_ENV, commit_in, commit_tree, default_tree, env_var, git_repo, module_text
from toolkit.git import Git
from toolkit.lifecycle.rebase import rerere_cache

P1 = "0001-core-scale-value-twenty.patch"
P2 = "0002-v1-publish-block-events.patch"
P3 = "0003-engine-add-disagg-args.patch"
EPOCH = "1700000000"  # SOURCE_DATE_EPOCH for Last-Update: 2023-11-14
EPOCH_DAY = "2023-11-14"

SCHEDULER_P1 = module_text("scheduler").replace("VALUE_20 = 20", "VALUE_20 = 2000")
BLOCK_POOL_P2 = module_text("block_pool").replace("VALUE_5 = 5", "VALUE_5 = -5")
EVENTS_P2 = '"""Events."""\n'
ARGS_P3 = module_text("args").replace("VALUE_30 = 30", "VALUE_30 = 3")


def make_series(ws, version: str) -> None:
    """Three patches exported from real commits in a checkout of `version`."""
    ws.write_series(version, {}, comment=f"# series for vLLM {version}\n# vLLM {version}x stays")
    assert ws.run("apply", version) == 0
    checkout = ws.checkout(version)
    commit_in(checkout, {"vllm/core/scheduler.py": SCHEDULER_P1}, subject="[Core] scale value twenty")
    commit_in(
        checkout,
        {"vllm/core/block_pool.py": BLOCK_POOL_P2, "vllm/core/kv_events.py": EVENTS_P2},
        subject="[V1] publish block events",
        headers="Upstream-Status: Pending\nFeature: kv-routing\nApplied-Upstream: https://example.com/commit/1",
    )
    commit_in(
        checkout,
        {"vllm/engine/args.py": ARGS_P3},
        subject="[Engine] add disagg args",
        headers="Upstream-Status: Submitted [https://example.com/pr/1]\nFeature: pd-disagg",
    )
    assert ws.run("export", version) == 0


@pytest.fixture
def series_10(pinned):
    make_series(pinned, "1.0")
    return pinned


def publish(ws, version: str, **files: str) -> None:
    """Publish `version`: the default tree with some files replaced ('vllm/core/scheduler.py' = text)."""
    tree = default_tree(version)
    tree.update(files)
    ws.publish(version, tree)


def rebase(ws, capsys, *args: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = ws.run("rebase", *args, "--json")
    return code, json.loads(capsys.readouterr().out)


def statuses(result: dict) -> dict[str, str]:
    return {p["name"]: p["status"] for p in result["patches"]}


def series_names(ws, version: str) -> list[str]:
    text = (ws.series_dir(version) / "series").read_text()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def evidence(ws, version: str) -> dict:
    return json.loads((ws.series_dir(version) / "evidence.json").read_text())


def pinned_versions(ws) -> set[str]:
    return set(tomllib.loads((ws.patches / "pins.toml").read_text())["pins"])


def verdicts(ws, capsys) -> dict[str, dict]:
    capsys.readouterr()
    assert ws.run("status", "--json") == 0
    return {v["version"]: v["verdict"] for v in json.loads(capsys.readouterr().out)["versions"]}


def old_series(ws) -> dict[str, bytes]:
    return {k: v for k, v in ws.snapshot().items() if k.startswith("vllm-1.0/")}


# ---------------------------------------------------------------- outcomes


def test_clean_rebase_pins_new_writes_series_range_diff_and_evidence(series_10, capsys):
    ws = series_10
    publish(ws, "1.1")
    before = old_series(ws)
    code, result = rebase(ws, capsys, "1.0", "--onto", "1.1")
    assert code == 0 and result["done"] and result["pinned"]
    assert statuses(result) == {P1: "clean", P2: "clean", P3: "clean"}
    assert "1.1" in pinned_versions(ws)
    assert old_series(ws) == before  # the old series is never touched
    assert series_names(ws, "1.1") == [P1, P2, P3]
    new = ws.series_dir("1.1")
    # Comments kept, naming the new release where they named the old one.
    old_text = (ws.series_dir("1.0") / "series").read_text()
    assert "vLLM 1.0" in old_text
    assert (new / "series").read_text() == old_text.replace("# series for vLLM 1.0", "# series for vLLM 1.1")
    for name in (P1, P2, P3):  # nothing changed: no Last-Update, headers carried over
        assert b"Last-Update:" not in (new / name).read_bytes()
        assert f"Patch-File: {name}".encode() in (new / name).read_bytes()
    assert b"Applied-Upstream: https://example.com/commit/1" in (new / P2).read_bytes()
    range_diff = (new / "range-diff.txt").read_text()
    assert len(re.findall(r"^\d+:  [0-9a-f]{12} = \d+:  [0-9a-f]{12} ", range_diff, re.M)) == 3
    assert result["range_diff"] == range_diff
    facts = evidence(ws, "1.1")
    assert facts["kept"] == [P1, P2, P3] and facts["dropped"] == []
    assert facts["old"]["version"] == "1.0" and facts["new"]["version"] == "1.1"
    for name, entry in facts["patches"].items():
        assert entry["outcome"] == "clean" and entry["content_changed"] is False
        assert entry["evidence"]["became_empty"] is False
        assert entry["evidence"]["reverse_applies"] is False
        assert entry["evidence"]["patch_id_match"] == "not available: sdist bases have no history"
        assert entry["evidence"]["conformance"] is None
        assert entry["evidence"]["header"]["says_upstream"] is (name == P2)
    assert facts["patches"][P2]["upstream_signals"] == ["header"]
    text = (new / "evidence.json").read_text()
    assert text == json.dumps(json.loads(text), indent=1, sort_keys=True) + "\n"  # stable and sorted
    # The new series is a proper series: zero-fuzz apply and byte-identical re-export.
    assert ws.run("check", "1.1", "--no-wheels") == 0
    checkout = Git(ws.root / "checkouts" / "vllm-1.1-rebase")
    assert len(checkout.commits("refs/vpatch/upstream..HEAD")) == 3
    verdict = verdicts(ws, capsys)["1.1"]
    assert {k: verdict[k] for k in ("engine", "active_patches", "features", "summary")} == {
        "engine": "dynamo-base",
        "active_patches": 3,
        "features": ["kv-routing", "pd-disagg"],
        "summary": "dynamo-base needed (3 active patches: kv-routing, pd-disagg)",
    }
    assert [(f["feature"], f["engine"]) for f in verdict["feature_verdicts"]] == [
        ("kv-routing", "dynamo-base"),
        ("pd-disagg", "dynamo-base"),
    ]


def test_three_way_merge_refreshes_last_update_of_changed_patches_only(series_10, capsys):
    ws = series_10
    # 1.2 touched a context line of patch 1 (it no longer applies as written) and moved patch 3's hunk.
    scheduler = module_text("scheduler").replace("VALUE_18 = 18", "VALUE_18 = 18  # touched upstream")
    args = "# new header line\n# another\n" + module_text("args")
    publish(ws, "1.2", **{"vllm/core/scheduler.py": scheduler, "vllm/engine/args.py": args})
    with env_var("SOURCE_DATE_EPOCH", EPOCH):
        code, result = rebase(ws, capsys, "1.0", "--onto", "1.2")
    assert code == 0
    assert statuses(result) == {P1: "merged", P2: "clean", P3: "clean"}
    assert {p["name"]: p.get("content_changed") for p in result["patches"]} == {P1: True, P2: False, P3: False}
    new = ws.series_dir("1.2")
    first = (new / P1).read_bytes()
    assert f"Feature: kv-routing\nLast-Update: {EPOCH_DAY}\nPatch-File: {P1}\n---\n".encode() in first
    assert b"VALUE_18 = 18  # touched upstream" in first
    assert b"Last-Update" not in (new / P2).read_bytes() + (new / P3).read_bytes()
    assert b"@@ -31,7 +31,7 @@" in (new / P3).read_bytes()  # the moved hunk, at its new place
    assert evidence(ws, "1.2")["patches"][P1]["content_changed"] is True
    range_diff = (new / "range-diff.txt").read_text()
    assert re.search(r"^1:  [0-9a-f]{12} ! 1:  [0-9a-f]{12} \[Core\] scale value twenty$", range_diff, re.M)
    assert re.search(r"^3:  [0-9a-f]{12} = 3:  ", range_diff, re.M)  # offsets alone are no change
    assert "+    Last-Update: 2023-11-14" in range_diff
    assert ws.run("check", "1.2", "--no-wheels") == 0


@pytest.fixture
def conflicting_13(series_10):
    """1.3 changed the very line patch 1 changes: a real conflict. Not pinned yet."""
    publish(series_10, "1.3", **{"vllm/core/scheduler.py": module_text("scheduler").replace("= 20 ", "= 20000 ")})
    return series_10


def resolve_p1(ws) -> Git:
    checkout = ws.root / "checkouts" / "vllm-1.3-rebase"
    path = checkout / "vllm/core/scheduler.py"
    path.write_text(module_text("scheduler").replace("VALUE_20 = 20 ", "VALUE_20 = 20000 + 2000 "))
    repo = Git(checkout)
    repo.run("add", "vllm/core/scheduler.py")
    return repo


def test_conflict_stops_with_hunks_and_continue_finishes(conflicting_13, capsys):
    ws = conflicting_13
    before = ws.snapshot()
    with env_var("SOURCE_DATE_EPOCH", EPOCH):
        code, result = rebase(ws, capsys, "1.0", "--onto", "1.3")
    assert code == 1 and not result["done"]
    assert statuses(result) == {P1: "conflict", P2: "pending", P3: "pending"}
    checkout = ws.root / "checkouts" / "vllm-1.3-rebase"
    lines = (checkout / "vllm/core/scheduler.py").read_text().splitlines()
    start = lines.index("<<<<<<< HEAD") + 1
    end = next(i for i, line in enumerate(lines, 1) if line.startswith(">>>>>>> "))
    (conflict,) = result["stopped"]["files"]
    assert conflict == {"path": "vllm/core/scheduler.py", "kind": "content conflict", "hunks": [[start, end]]}
    assert result["stopped"]["details"] == [f"vllm/core/scheduler.py: content conflict at lines {start}-{end}"]
    assert ws.snapshot() == before  # nothing under patches/, not even NEW's pin, until the rebase completes
    assert "1.3" not in pinned_versions(ws)
    state = json.loads((checkout / ".git" / "vpatch.json").read_text())["rebase"]
    assert (state["old_version"], state["new_version"], state["remaining"]) == ("1.0", "1.3", [P2, P3])

    # Not resolved yet: refused, state kept.
    assert ws.run("rebase", "--continue") == 1
    assert "still unmerged: vllm/core/scheduler.py" in capsys.readouterr().err
    # Staged with its markers still in: refused too.
    Git(checkout).run("add", "vllm/core/scheduler.py")
    assert ws.run("rebase", "--continue") == 1
    assert f"conflict markers remain at lines {start}-{end}" in capsys.readouterr().err
    assert ws.snapshot() == before

    resolve_p1(ws)
    with env_var("SOURCE_DATE_EPOCH", EPOCH):
        code, result = rebase(ws, capsys, "--continue")
    assert code == 0 and result["done"]
    assert statuses(result) == {P1: "merged", P2: "clean", P3: "clean"}
    assert result["patches"][0]["details"] == ["conflict resolved by hand"]
    assert "1.3" in pinned_versions(ws)
    first = (ws.series_dir("1.3") / P1).read_bytes()
    assert b"+VALUE_20 = 20000 + 2000" in first and f"Last-Update: {EPOCH_DAY}".encode() in first
    assert not (checkout / ".git" / "vpatch-rebase").exists()
    assert "rebase" not in json.loads((checkout / ".git" / "vpatch.json").read_text())
    assert ws.run("check", "1.3", "--no-wheels") == 0


def test_a_resolution_committed_with_git_while_am_waits_is_the_merged_patch(conflicting_13, capsys):
    """A maintainer who resolves and commits with git (to reword the message) before continuing."""
    ws = conflicting_13
    code, _ = rebase(ws, capsys, "1.0", "--onto", "1.3")
    assert code == 1
    checkout = ws.root / "checkouts" / "vllm-1.3-rebase"
    resolve_p1(ws)
    message = "[Core] scale value twenty, on 1.3's new base\n\nUpstream-Status: Pending\nFeature: kv-routing\n"
    Git(checkout).run("commit", "--quiet", "-m", message, env=AUTHOR_ENV)
    with env_var("SOURCE_DATE_EPOCH", EPOCH):
        code, result = rebase(ws, capsys, "--continue")
    assert code == 0 and result["done"]
    assert statuses(result) == {P1: "merged", P2: "clean", P3: "clean"}
    assert result["patches"][0]["details"] == ["resolved by hand (committed with git)"]
    assert series_names(ws, "1.3")[0] == "0001-core-scale-value-twenty.patch"
    first = (ws.series_dir("1.3") / P1).read_bytes()
    assert b"on 1.3's new base" in first and b"+VALUE_20 = 20000 + 2000" in first


def test_skip_drops_the_patch_and_lists_it(conflicting_13, capsys):
    ws = conflicting_13
    assert ws.run("pin", "add", "1.3") == 0
    code, _ = rebase(ws, capsys, "1.0", "--onto", "1.3")
    assert code == 1
    code, result = rebase(ws, capsys, "--skip", "--onto", "1.3", "--reason", "reworked later")
    assert code == 0 and not result["pinned"]
    assert statuses(result) == {P1: "skipped", P2: "clean", P3: "clean"}
    assert result["dropped"] == [P1]
    assert series_names(ws, "1.3") == [P2, P3]
    assert not (ws.series_dir("1.3") / P1).exists()
    facts = evidence(ws, "1.3")
    assert facts["dropped"] == [
        {"name": P1, "feature": "kv-routing", "reason": "skipped", "skip_reason": "reworked later"}
    ]
    assert facts["patches"][P1]["kept"] is False and facts["patches"][P1]["upstream_signals"] == []
    assert facts["patches"][P1]["skip_reason"] == "reworked later"
    assert facts["patches"][P1]["details"] == ["dropped by hand (vpatch rebase --skip): reworked later"]
    assert re.search(
        r"^1:  [0-9a-f]{12} < -:  -{12} \[Core\]", (ws.series_dir("1.3") / "range-diff.txt").read_text(), re.M
    )
    assert verdicts(ws, capsys)["1.3"]["summary"] == "dynamo-base needed (2 active patches: kv-routing, pd-disagg)"


def test_abort_leaves_patches_unchanged_and_the_checkout_at_the_base(conflicting_13, capsys):
    ws = conflicting_13
    before = ws.snapshot()
    capsys.readouterr()
    assert ws.run("rebase", "1.0", "--onto", "1.3") == 1
    err = capsys.readouterr().err
    assert f"stopped at {P1} (conflict):" in err
    assert re.search(r"^  vllm/core/scheduler.py: content conflict at lines \d+-\d+$", err, re.M)
    checkout = ws.root / "checkouts" / "vllm-1.3-rebase"
    resolve_p1(ws)
    assert ws.run("rebase", "--abort") == 0
    assert ws.snapshot() == before
    repo = Git(checkout)
    assert repo.rev_parse("HEAD") == repo.rev_parse("refs/vpatch/upstream")
    assert not (checkout / ".git" / "rebase-apply").exists() and repo.out("status", "--porcelain") == ""
    assert "rebase" not in json.loads((checkout / ".git" / "vpatch.json").read_text())
    capsys.readouterr()
    assert ws.run("rebase", "--continue", "--into", str(checkout)) == 1
    assert "no rebase is in progress" in capsys.readouterr().err
    assert ws.snapshot() == before


def test_a_patch_that_cannot_be_merged_stops_as_failed_until_its_change_is_staged(conflicting_13, capsys):
    ws = conflicting_13
    # A patch made against a blob neither base has: no three-way merge is possible, and no markers appear.
    path = ws.series_dir("1.0") / P1
    text = re.sub(r"index [0-9a-f]{40}\.\.", "index " + "1" * 40 + "..", path.read_text(), count=1)
    path.write_text(text.replace(" VALUE_18 = 18  # scheduler line 18", " VALUE_18 = 18  # elsewhere"))
    code, result = rebase(ws, capsys, "1.0", "--onto", "1.3")
    assert code == 1 and statuses(result)[P1] == "failed"
    assert result["stopped"]["files"] == []
    assert result["stopped"]["details"][0] == "vllm/core/scheduler.py: hunk #1 at line 19 does not apply"
    assert "error: Repository lacks necessary blobs to fall back on 3-way merge." in result["stopped"]["details"]
    assert ws.run("rebase", "--continue") == 1
    assert f"nothing is staged for {P1}" in capsys.readouterr().err
    resolve_p1(ws)
    code, result = rebase(ws, capsys, "--continue")
    assert code == 0 and statuses(result) == {P1: "merged", P2: "clean", P3: "clean"}
    assert result["patches"][0]["details"] == ["applied by hand"]
    expected = "not available: the old series does not apply to its own base with zero fuzz\n"
    assert (ws.series_dir("1.3") / "range-diff.txt").read_text() == expected


def test_rerere_reuses_a_resolution_after_finishing_and_after_aborting(conflicting_13, capsys):
    ws = conflicting_13
    shared = rerere_cache(ws.cache, "vllm", ws.root)
    checkout = ws.root / "checkouts" / "vllm-1.3-rebase"

    def reused(*extra: str) -> None:
        # The rr-cache alone: the resolutions the last rebase wrote into the tree would be replayed first
        # (tests/unit/test_rebase_resolutions.py).
        shutil.rmtree(ws.series_dir("1.3") / "resolutions", ignore_errors=True)
        code, result = rebase(ws, capsys, "1.0", "--onto", "1.3", *extra)
        assert code == 0 and result["done"], result["stopped"]
        assert statuses(result) == {P1: "merged", P2: "clean", P3: "clean"}
        (detail,) = result["patches"][0]["details"]
        assert re.fullmatch(
            r"conflict in vllm/core/scheduler\.py resolved by a recorded resolution \(rerere\), recorded for "
            rf"{re.escape(P1)} in the rebase 1\.0 → 1\.3 at \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
            detail,
        ), detail
        assert b"+VALUE_20 = 20000 + 2000" in (ws.series_dir("1.3") / P1).read_bytes()

    # Resolved once and finished: recorded in the cache, reused by the next rebase onto the same release.
    assert ws.run("rebase", "1.0", "--onto", "1.3") == 1
    assert (checkout / ".git" / "rr-cache").resolve() == shared.resolve()
    resolve_p1(ws)
    assert ws.run("rebase", "--continue") == 0
    assert len(list(shared.glob("*/postimage"))) == 1
    reused("--force")

    # Forget it: the conflict stops the rebase again. Resolved, then aborted: still remembered.
    for entry in shared.iterdir():
        shutil.rmtree(entry)
    shutil.rmtree(ws.series_dir("1.3") / "resolutions")
    code, result = rebase(ws, capsys, "1.0", "--onto", "1.3", "--force")
    assert code == 1 and statuses(result)[P1] == "conflict"
    resolve_p1(ws)
    assert ws.run("rebase", "--abort") == 0
    assert len(list(shared.glob("*/postimage"))) == 1
    reused("--force")


def test_resolutions_are_kept_per_project_not_per_name(tmp_path: Path) -> None:
    """Two forks of vLLM on one machine both call themselves vllm; their recorded resolutions stay apart:
    a project in git keeps them in its own repository (so two clones of one template do not share them
    either), any other in the cache under its path."""
    cache = tmp_path / "cache"
    forks = []
    for name in ("fork-a", "fork-b"):
        repo = Git.init(tmp_path / name)
        (tmp_path / name / "pins.toml").write_text(f"# {name}\n")
        repo.run("add", "pins.toml")
        repo.run("commit", "-q", "-m", name, env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"})
        forks.append(tmp_path / name)
    clone = tmp_path / "fork-a-clone"
    Git(tmp_path).run("clone", "-q", str(forks[0]), str(clone))
    plain = tmp_path / "not-in-git"
    plain.mkdir()
    a, b, a2, p = (rerere_cache(cache, "vllm", root) for root in (*forks, clone, plain))
    assert len({a, b, a2, p}) == 4
    assert [a, b, a2] == [root / ".git" / "vpatch" / "rr-cache" for root in (*forks, clone)]
    assert p.parent == cache / "rerere" and p.name.startswith("vllm-")


def test_became_empty_and_reverse_apply_evidence(series_10, capsys):
    ws = series_10
    # 1.4 took patch 3 verbatim, and patch 1's change with a neighbouring line edited as well.
    scheduler = SCHEDULER_P1.replace("VALUE_18 = 18", "VALUE_18 = 18  # reviewed")
    publish(ws, "1.4", **{"vllm/core/scheduler.py": scheduler, "vllm/engine/args.py": ARGS_P3})
    code, result = rebase(ws, capsys, "1.0", "--onto", "1.4")
    assert code == 0
    assert statuses(result) == {P1: "empty", P2: "clean", P3: "empty"}
    assert result["dropped"] == [P1, P3]
    assert series_names(ws, "1.4") == [P2]
    facts = evidence(ws, "1.4")
    assert [d["name"] for d in facts["dropped"]] == [P1, P3]
    assert {d["reason"] for d in facts["dropped"]} == {"empty"}
    signals = {name: facts["patches"][name]["evidence"] for name in (P1, P2, P3)}
    assert [signals[n]["became_empty"] for n in (P1, P2, P3)] == [True, False, True]
    # Reverse-applying the old patch file to 1.4's tree: only patch 3 is there exactly as written.
    assert [signals[n]["reverse_applies"] for n in (P1, P2, P3)] == [False, False, True]
    assert facts["patches"][P3]["upstream_signals"] == ["became_empty", "reverse_applies", "post_image_in_new"]
    # By content, patch 1's change is in 1.4 too, beside the line 1.4 edited; patch 2's is not.
    assert signals[P1]["post_image_in_new"] == {
        "hunks": [{"file": "vllm/core/scheduler.py", "hunk": 1, "line": 22, "how": "moved context"}],
        "found": 1,
        "total": 1,
    }
    assert signals[P3]["post_image_in_new"]["hunks"][0]["how"] == "exact"
    assert signals[P2]["post_image_in_new"]["found"] == 0 and signals[P2]["post_image_in_new"]["total"] == 2
    assert facts["patches"][P1]["upstream_signals"] == ["became_empty", "post_image_in_new"]
    range_diff = (ws.series_dir("1.4") / "range-diff.txt").read_text()
    assert len(re.findall(r"^\d:  [0-9a-f]{12} < -:  -{12} ", range_diff, re.M)) == 2
    assert ws.run("check", "1.4", "--no-wheels") == 0


def test_native_since_is_a_hint_in_the_evidence(series_10, capsys):
    """pins.toml's native-since says upstream ships its own version of a feature: the evidence says so for
    that feature's patches once NEW is that release or later, and not before."""
    ws = series_10
    pins = ws.root / "patches" / "pins.toml"
    text = pins.read_text()
    line = 'kv-routing = "KV-cache events and load metrics for KV-aware routing"'
    assert line in text
    pins.write_text(text.replace(line, 'kv-routing = { description = "events", native-since = "1.4" }'))
    publish(ws, "1.3")
    publish(ws, "1.4")
    for version, expected in (("1.3", None), ("1.4", "1.4")):
        code, _ = rebase(ws, capsys, "1.0", "--onto", version)
        assert code == 0
        entries = evidence(ws, version)["patches"].values()
        assert {e["feature"] for e in entries} == {"kv-routing", "pd-disagg"}
        for entry in entries:
            hint = expected if entry["feature"] == "kv-routing" else None
            assert entry["evidence"]["native_since"] == hint
            assert ("native_since" in entry["upstream_signals"]) == (hint is not None)
    # a hint, not evidence: retiring on it alone is refused
    kv = next(n for n, e in evidence(ws, "1.4")["patches"].items() if e["upstream_signals"] == ["native_since"])
    assert ws.run("retire", kv, "--since", "1.4") == 1
    assert "refusing to retire" in capsys.readouterr().err


def test_everything_absorbed_makes_stock_the_recommended_default(series_10, capsys):
    ws = series_10
    absorbed = {
        "vllm/core/scheduler.py": SCHEDULER_P1,
        "vllm/core/block_pool.py": BLOCK_POOL_P2,
        "vllm/core/kv_events.py": EVENTS_P2,
        "vllm/engine/args.py": ARGS_P3,
    }
    publish(ws, "1.5", **absorbed)
    publish(ws, "1.6", **absorbed)
    publish(ws, "1.1")
    for version in ("1.5", "1.1"):
        assert ws.run("pin", "add", version) == 0
    ws.write_series("1.1", {})  # empty, and nothing says why
    found = verdicts(ws, capsys)
    assert found["1.5"] == {
        "engine": None,
        "active_patches": 0,
        "features": [],
        "summary": "no series yet (not rebased)",
    }
    assert found["1.1"]["engine"] is None and found["1.1"]["summary"].startswith("empty series, but no evidence")

    code, result = rebase(ws, capsys, "1.0", "--onto", "1.5")
    assert code == 0 and statuses(result) == {P1: "empty", P2: "empty", P3: "empty"}
    assert series_names(ws, "1.5") == []
    assert sorted(p.name for p in ws.series_dir("1.5").iterdir()) == ["evidence.json", "range-diff.txt", "series"]
    assert len(re.findall(r" < -:  -{12} ", (ws.series_dir("1.5") / "range-diff.txt").read_text())) == 3
    # The empty series carries on to the next release, and so does what explains it.
    assert ws.run("rebase", "1.5", "--onto", "1.6") == 0
    assert [(e["name"], e["dropped_in"]) for e in evidence(ws, "1.6")["earlier"]] == [
        (P1, "1.5"),
        (P2, "1.5"),
        (P3, "1.5"),
    ]
    found = verdicts(ws, capsys)
    for version in ("1.5", "1.6"):
        assert found[version]["engine"] == "stock"
        assert found[version]["summary"] == f"stock vLLM {version} provides every feature; recommended default"
    assert found["1.0"]["engine"] == "dynamo-base"


def test_refuses_an_existing_series_unless_forced(series_10, capsys):
    ws = series_10
    publish(ws, "1.1")
    assert ws.run("rebase", "1.0", "--onto", "1.1") == 0
    (ws.series_dir("1.1") / "NOTE").write_text("mine")
    before = ws.snapshot()
    capsys.readouterr()
    assert ws.run("rebase", "1.0", "--onto", "1.1") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already has a series; use --beside" in err[0] and "or --force" in err[0]
    assert ws.snapshot() == before
    assert ws.run("rebase", "1.0", "--onto", "1.1", "--force") == 0
    assert (ws.series_dir("1.1") / "NOTE").read_text() == "mine"  # a file vpatch does not own is carried over
    assert series_names(ws, "1.1") == [P1, P2, P3]


# ---------------------------------------------------------------- git sources: patch-id against upstream history


def test_patch_id_match_with_an_upstream_commit_between_git_tags(workspace, tmp_path, capsys):
    ws = workspace
    remote = tmp_path / "upstream"
    upstream = git_repo(remote, default_tree("1.0"), tag="v1.0")
    ws.publish("1.0")
    ws.publish("1.1")
    assert ws.run("pin", "add", "1.0", "--source", "git", "--remote", str(remote)) == 0
    make_series(ws, "1.0")
    # Upstream: an unrelated commit, then patch 1's change landing as its own commit, then tag v1.1.
    commit_tree(upstream, {"README.md": "# vllm\n\nNow with docs.\n"}, message="docs")
    landed = commit_tree(upstream, {"vllm/core/scheduler.py": SCHEDULER_P1}, message="[Core] larger value 20 (#42)")
    commit_tree(upstream, version_bump("1.1"), message="release 1.1")
    upstream.run("tag", "-a", "v1.1", "-m", "v1.1", env=AUTHOR_ENV)

    code, result = rebase(ws, capsys, "1.0", "--onto", "1.1")  # pinned like 1.0: git source, same remote
    assert code == 0, result
    assert statuses(result) == {P1: "empty", P2: "clean", P3: "clean"}
    pins = tomllib.loads((ws.patches / "pins.toml").read_text())["pins"]
    assert (pins["1.1"]["source"], pins["1.1"]["tag"]) == ("git", "v1.1")
    facts = evidence(ws, "1.1")
    assert facts["new"]["source"] == "git"
    match = facts["patches"][P1]["evidence"]["patch_id_match"]
    assert match == [{"commit": landed, "subject": "[Core] larger value 20 (#42)"}]
    assert facts["patches"][P1]["upstream_signals"] == [
        "became_empty",
        "patch_id_match",
        "reverse_applies",
        "post_image_in_new",
    ]
    assert facts["patches"][P2]["evidence"]["patch_id_match"] == []
    assert facts["patches"][P3]["evidence"]["patch_id_match"] == []


def version_bump(version: str) -> dict[str, str]:
    tree = default_tree(version)
    return {k: tree[k] for k in ("PKG-INFO", "vllm/_version.py")}


def test_review_refreshes_range_diff_and_evidence_after_a_hand_rework(conflicting_13, capsys):
    """Skip a conflicting patch in the rebase, write it again by hand onto 1.3, then `vpatch review 1.3`."""
    ws = conflicting_13
    code, _ = rebase(ws, capsys, "1.0", "--onto", "1.3")
    assert code == 1
    code, result = rebase(ws, capsys, "--skip", "--reason", "written again by hand")
    assert code == 0 and statuses(result)[P1] == "skipped"
    before = evidence(ws, "1.3")
    assert before["kept"] == [P2, P3]
    assert ws.run("apply", "1.3") == 0
    checkout = ws.checkout("1.3")
    commit_in(
        checkout,
        {"vllm/core/scheduler.py": module_text("scheduler").replace("= 20000 ", "= 20000 * 2 ")},
        subject="[Core] scale value twenty, on 1.3's larger value",
        headers=f"Upstream-Status: Pending\nFeature: kv-routing\nPatch-File: {P1}",
    )
    assert ws.run("export", "1.3") == 0
    assert series_names(ws, "1.3") == [P2, P3, P1]

    capsys.readouterr()
    assert ws.run("review", "1.3", "--json") == 0
    changes = json.loads(capsys.readouterr().out)["changes"]
    assert changes == {P1: "reworked"}
    after = evidence(ws, "1.3")
    entry = after["patches"][P1]
    assert entry["outcome"] == "reworked" and entry["kept"] is True and entry["content_changed"] is True
    assert entry["details"][-1] == "skipped in the rebase; written again by hand onto vllm 1.3 afterwards"
    assert after["kept"] == [P2, P3, P1] and after["dropped"] == []
    assert after["patches"][P2] == before["patches"][P2]  # untouched entries stay as the rebase wrote them
    text = (ws.series_dir("1.3") / "range-diff.txt").read_text()
    assert re.search(r"^1:  [0-9a-f]+ ! 3:  [0-9a-f]+ \[Core\] scale value twenty", text, re.M), text
    assert ws.run("check", "1.3", "--no-wheels") == 0

    # Edit a patch the rebase applied clean: it is reworked too; a second review changes nothing more.
    repo = Git(ws.checkout("1.3"))  # the checkout the rework was made in
    (ws.checkout("1.3") / "vllm/engine/args.py").write_text(ARGS_P3.replace("VALUE_30 = 3", "VALUE_30 = 4"))
    repo.run("add", "-A")
    repo.run("commit", "--quiet", "--fixup", "HEAD~1", env=AUTHOR_ENV)
    repo.run("rebase", "--quiet", "-i", "--autosquash", "HEAD~3", env={**AUTHOR_ENV, "GIT_SEQUENCE_EDITOR": ":"})
    assert ws.run("export", "1.3") == 0
    capsys.readouterr()
    assert ws.run("review", "1.3", "--json") == 0
    assert json.loads(capsys.readouterr().out)["changes"] == {P3: "reworked"}
    assert evidence(ws, "1.3")["patches"][P3]["details"][-1] == (
        "clean in the rebase; reworked by hand onto vllm 1.3 afterwards"
    )
    assert ws.run("review", "1.3", "--json") == 0
    assert json.loads(capsys.readouterr().out)["changes"] == {}

    # Edited once more: still one note, and the recorded patch-id follows.
    details = evidence(ws, "1.3")["patches"][P3]["details"]
    (ws.checkout("1.3") / "vllm/engine/args.py").write_text(ARGS_P3.replace("VALUE_30 = 3", "VALUE_30 = 5"))
    repo.run("add", "-A")
    repo.run("commit", "--quiet", "--fixup", "HEAD~1", env=AUTHOR_ENV)
    repo.run("rebase", "--quiet", "-i", "--autosquash", "HEAD~3", env={**AUTHOR_ENV, "GIT_SEQUENCE_EDITOR": ":"})
    assert ws.run("export", "1.3") == 0
    written = evidence(ws, "1.3")["patches"][P3]["new_patch_id"]
    capsys.readouterr()
    assert ws.run("review", "1.3", "--json") == 0
    assert json.loads(capsys.readouterr().out)["changes"] == {P3: "reworked again"}
    assert evidence(ws, "1.3")["patches"][P3]["details"] == details
    assert evidence(ws, "1.3")["patches"][P3]["new_patch_id"] != written


def test_review_refuses_a_series_without_evidence(series_10, capsys):
    ws = series_10
    capsys.readouterr()
    assert ws.run("review", "1.0") == 1
    err = capsys.readouterr().err
    assert "evidence.json" in err and "no evidence.json" in err


def test_review_names_the_hand_edited_patch_that_no_longer_applies(series_10, capsys):
    """A patch in the rebased series edited so its hunk no longer matches NEW's base: one line naming it."""
    ws = series_10
    publish(ws, "1.1")
    code, _ = rebase(ws, capsys, "1.0", "--onto", "1.1")
    assert code == 0
    broken = ws.series_dir("1.1") / P3
    data = broken.read_bytes()
    assert data.count(b"\n-VALUE_30 = 30 ") == 1
    broken.write_bytes(data.replace(b"\n-VALUE_30 = 30 ", b"\n-VALUE_30 = 31 "))  # a line 1.1 lacks
    review_files = {n: (ws.series_dir("1.1") / n).read_bytes() for n in ("evidence.json", "range-diff.txt")}
    capsys.readouterr()
    assert ws.run("review", "1.1") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("vpatch: error: ") and f"vllm-1.1/{P3}: does not apply to vllm 1.1: " in err, err
    assert "vllm/engine/args.py" in err, err
    # Nothing was rewritten: the review files are still the rebase's.
    assert {n: (ws.series_dir("1.1") / n).read_bytes() for n in review_files} == review_files


def test_a_patch_retired_for_new_is_not_replayed(series_10, capsys):
    """Retire first (its header says upstream has it), then rebase: the patch stays behind, recorded."""
    ws = series_10
    publish(ws, "1.1")
    assert ws.run("pin", "add", "1.1") == 0
    # kv-routing has a contract and no results for 1.1 here: only a forced retirement (header as support)
    assert ws.run("retire", P2, "--since", "1.1") == 1
    assert ws.run("retire", P2, "--since", "1.1", "--force", "--reason", "merged upstream") == 0
    assert b"Retired-Since: 1.1" in (ws.series_dir("1.0") / P2).read_bytes()  # the last series carrying it
    code, result = rebase(ws, capsys, "1.0", "--onto", "1.1")
    assert code == 0 and result["done"]
    assert statuses(result) == {P1: "clean", P2: "retired", P3: "clean"}
    assert series_names(ws, "1.1") == [P1, P3]
    assert not (ws.series_dir("1.1") / P2).exists()
    assert b"Retired-Since: 1.1" in (ws.series_dir("1.1") / "retired" / P2).read_bytes()
    facts = evidence(ws, "1.1")
    entry = facts["patches"][P2]
    assert entry["outcome"] == "retired" and entry["kept"] is False
    (detail,) = entry["details"]
    assert detail.startswith("retired since 1.1: forced: merged upstream; no kv-routing contract results")
    assert detail.endswith("; Applied-Upstream: https://example.com/commit/1")
    assert {"name": P2, "feature": "kv-routing", "reason": "retired"} in facts["dropped"]
    assert ws.run("check", "1.1", "--no-wheels") == 0
    # A retirement for a later release does not stop the replay onto this one.
    publish(ws, "1.2")
    assert ws.run("pin", "add", "1.2") == 0
    assert ws.run("retire", P3, "--since", "1.2", "--force", "--reason", "merged upstream in 1.2") == 0
    code, result = rebase(ws, capsys, "1.1", "--onto", "1.2")
    assert code == 0 and statuses(result) == {P1: "clean", P3: "retired"}


def test_a_passing_against_run_is_recorded_as_conformance_evidence(series_10, capsys):
    ws = series_10
    publish(ws, "1.1")
    from toolkit.records.contract import BuildSpec, ConfigRun, ContractResults, ItemResult, encode_contract
    from toolkit.records.status import Status

    results = ws.root / "out" / "conform"
    results.mkdir(parents=True)
    new = BuildSpec("1.1", "stock")
    for old, load in (("1.0", Status.PASS), ("0.9", Status.NOT_PROVIDED)):
        items = [ItemResult("kv-routing", "overlap", Status.PASS), ItemResult("kv-routing", "load-figures", load)]
        run = ConfigRun("new-bind-builtin", "new", new, None, items)
        record = ContractResults("vllm", new, BuildSpec(old, "dynamo-base"), ["kv-routing"], "kv-watch", [run], True)
        (results / f"vllm-1.1-against-{old}.json").write_text(encode_contract(record))
    # the in-process comparison's files (schema 1) are no evidence any more
    (results / "vllm-1.1-against-0.8.json").write_text(json.dumps({"ok": True, "checks": []}))
    code, _ = rebase(ws, capsys, "1.0", "--onto", "1.1")
    assert code == 0
    entries = evidence(ws, "1.1")["patches"]
    kv = entries[P2]  # Feature: kv-routing
    assert kv["evidence"]["conformance"] == {
        "file": "vllm-1.1-against-1.0.json",
        "build": "stock 1.1",
        "against": "dynamo-base 1.0",
    }
    assert "conformance" in kv["upstream_signals"]
    assert entries[P3]["evidence"]["conformance"] is None  # pd-disagg: no against check for it
    assert "conformance" not in entries[P3]["upstream_signals"]


def test_stale_index_lock_does_not_block_continue_and_a_held_one_is_named(conflicting_13, capsys):
    import subprocess

    ws = conflicting_13
    with env_var("SOURCE_DATE_EPOCH", EPOCH):
        code, _ = rebase(ws, capsys, "1.0", "--onto", "1.3")
    assert code == 1
    resolve_p1(ws)
    checkout = ws.root / "checkouts" / "vllm-1.3-rebase"
    lock = checkout / ".git" / "index.lock"
    lock.write_text("")  # as a killed git leaves it
    holder = subprocess.Popen(["git", "cat-file", "--batch"], cwd=checkout, stdin=subprocess.PIPE)
    try:
        capsys.readouterr()
        assert ws.run("rebase", "--abort") == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "vllm-1.3-rebase/.git/index.lock" in err[0] and "git process" in err[0], err
    finally:
        holder.communicate(b"", timeout=30)
    assert lock.exists()
    with env_var("SOURCE_DATE_EPOCH", EPOCH):
        code, result = rebase(ws, capsys, "--continue")
    assert code == 0 and result["done"] and not lock.exists()


def test_review_after_the_series_was_re_cut_on_both_sides(series_10, capsys):
    """After `rebase 1.0 --onto 1.1`, both series are re-cut the same way (P3 under a new name, P1 moved to a
    sub-feature): review carries the re-cut patch from 1.0's of the same name, drops the name both lost."""
    ws = series_10
    publish(ws, "1.1")
    assert ws.run("rebase", "1.0", "--onto", "1.1") == 0
    assert ws.run("feature", "add", "kv-routing/scale", "--description", "the scale part") == 0
    renamed = "0003-engine-disagg-args-renamed.patch"
    for version in ("1.0", "1.1"):
        assert ws.run("apply", version, "--force") == 0
        repo = Git(ws.checkout(version))
        script = f"s/^Patch-File: {P3}$/Patch-File: {renamed}/;s/^Feature: kv-routing$/Feature: kv-routing\\/scale/"
        repo.run(
            "filter-branch",
            "-f",
            "--msg-filter",
            f"sed -e '{script}'",
            "refs/vpatch/upstream..HEAD",
            env={**AUTHOR_ENV, "FILTER_BRANCH_SQUELCH_WARNING": "1"},
        )
        assert ws.run("export", version) == 0
    assert series_names(ws, "1.1")[-1] == renamed
    capsys.readouterr()
    assert ws.run("review", "1.1", "--json") == 0
    changes = json.loads(capsys.readouterr().out)["changes"]
    assert changes[renamed] == "reworked (re-cut in both series)" and changes[P3] == "gone from both series"
    after = evidence(ws, "1.1")
    assert P3 not in after["patches"] and after["dropped"] == []
    entry = after["patches"][renamed]
    assert (entry["position"], entry["outcome"], entry["kept"], entry["content_changed"]) == (
        3,
        "reworked",
        True,
        False,
    )
    features = {name: e["feature"] for name, e in after["patches"].items()}
    assert "kv-routing/scale" in features.values()
    assert ws.run("review", "1.1", "--json") == 0
    assert json.loads(capsys.readouterr().out)["changes"] == {}
    assert ws.run("check", "1.1", "--no-wheels") == 0
