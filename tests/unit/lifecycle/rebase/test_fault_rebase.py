"""Crash safety of a rebase's replay and of `fetch`: killed between patches, right after a `git am`, and
before each state write (VPATCH_FAULT, see tests/unit/test_fault_injection.py).

The rebase replays three patches onto 1.1, where the middle one conflicts and a resolution recorded
earlier (rerere, kept in the project's repository) resolves it: the replay runs a batch `git am` that stops, a second
batch, a one-patch `git am` with `--continue`, and a last one-patch `git am`. After every kill patches/
is exactly as it was (the series is written only on completion), and `vpatch rebase --continue` (or,
when no rebase state was written yet, the rebase again) finishes with exactly the tree of an
uninterrupted run; so does `--abort` followed by a fresh `rebase --force`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.harness import commit_in, default_tree, module_text
from tests.unit.test_fault_injection import in_process, killed_run, leftovers, stale_in, tree
from toolkit.faults import KILLED
from toolkit.git import Git
from toolkit.tempnames import PREFIX

MAX_N = 16
FIGURES: dict[str, int] = {}

CONFLICTING = module_text("block_pool").replace("VALUE_5 = 5", "VALUE_5 = 500")
P2_CHANGE = module_text("block_pool").replace("VALUE_5 = 5", "VALUE_5 = -5")
RESOLVED = module_text("block_pool").replace("VALUE_5 = 5", "VALUE_5 = 500 - 5")
REBASE = ("rebase", "1.0", "--onto", "1.1")
CHECKOUT = Path("checkouts") / "vllm-1.1-rebase"
PD_HEADERS = "Upstream-Status: Pending\nFeature: pd-disagg"


def patches(files: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in files.items() if k.startswith("patches/")}


def conflicting_project(ws) -> None:
    """1.0 with three patches, 1.1 pinned: its block_pool.py conflicts with patch 2."""
    ws.write_series("1.0", {}, comment="# dynamo-base series for vLLM 1.0")
    assert ws.run("apply", "1.0") == 0
    checkout = ws.checkout("1.0")
    commit_in(checkout, {"vllm/core/scheduler.py": module_text("scheduler") + "KV = 1\n"}, subject="[V1] kv events")
    commit_in(checkout, {"vllm/core/block_pool.py": P2_CHANGE}, subject="[V1] pool", headers=PD_HEADERS)
    commit_in(checkout, {"vllm/engine/args.py": module_text("args") + "PD = 1\n"}, subject="[PD] args")
    assert ws.run("export", "1.0") == 0
    tree_11 = default_tree("1.1")
    tree_11["vllm/core/block_pool.py"] = CONFLICTING
    ws.publish("1.1", tree_11)
    assert ws.run("pin", "add", "1.1") == 0


@pytest.fixture
def replay_template(pinned, tmp_path):
    """`conflicting_project` with the resolution recorded in the project's repository."""
    ws = pinned
    conflicting_project(ws)
    # The project is in git, as a maintainer's is: its recorded resolutions are kept in its repository.
    project = Git.init(ws.root)
    project.run("add", "patches")
    project.run("commit", "-q", "-m", "the project", env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"})
    # Record the resolution in the shared cache (in a copy: the template stays before the rebase).
    scratch = tmp_path / "record"
    shutil.copytree(ws.root, scratch, symlinks=True)
    url = ws.index.url
    assert in_process(scratch, ws.cache, url, *REBASE) == 1  # stops at the conflict
    (scratch / CHECKOUT / "vllm/core/block_pool.py").write_text(RESOLVED)
    Git(scratch / CHECKOUT).run("add", "vllm/core/block_pool.py")
    assert in_process(scratch, ws.cache, url, "rebase", "--continue", "--onto", "1.1") == 0
    # Recorded resolutions live in the project's own repository: the template takes the copy's.
    shutil.copytree(scratch / ".git" / "vpatch", ws.root / ".git" / "vpatch")
    shutil.rmtree(scratch)
    return ws


def resume(root: Path, cache: Path, url: str) -> int:
    """What a person does after the kill: continue the rebase, or start it again if it never started."""
    state = root / CHECKOUT / ".git" / "vpatch.json"
    if state.is_file() and '"rebase"' in state.read_text():
        return in_process(root, cache, url, "rebase", "--continue", "--onto", "1.1")
    return in_process(root, cache, url, *REBASE, "--force")


def test_rebase_replay_killed_between_patches_inside_git_am_and_at_each_state_write(replay_template, tmp_path):
    ws = replay_template
    cache, url = ws.cache, ws.index.url

    def fresh(label: str) -> Path:
        root = tmp_path / "trials" / label
        shutil.copytree(ws.root, root, symlinks=True)
        return root

    reference = fresh("reference")
    old = tree(reference)
    assert in_process(reference, cache, url, *REBASE) == 0
    new = tree(reference)
    p2 = (reference / "patches" / "vllm-1.1" / "0002-v1-pool.patch").read_text()
    assert "+VALUE_5 = 500 - 5" in p2  # resolved by the recorded resolution, not by hand
    assert patches(new) != patches(old)

    kills = aborts = 0
    for point in ("rebase.am", "atomic.write"):
        for n in range(1, MAX_N + 1):
            root = fresh(f"{point}-{n}")
            proc = killed_run(
                root, cache, url, f"{point}:{n}", *REBASE, fresh=kills == 0
            )  # the first: a new interpreter
            if proc.returncode == 0:
                assert tree(root) == new, f"{point}:{n} (not reached) differs from an uninterrupted run"
                break
            assert proc.returncode == KILLED, f"{point}:{n}: {proc.returncode} {proc.stderr[-2000:]}"
            kills += 1
            visible = {k: v for k, v in patches(tree(root)).items() if PREFIX not in k and ".vpatch-journal" not in k}
            if visible != patches(old):  # only a kill inside the completing transaction may get here
                assert in_process(root, cache, url, "pin", "list") == 0
                assert patches(tree(root)) in (patches(old), patches(new)), f"{point}:{n}: patches/ half written"
            if point == "rebase.am":  # give up instead, then start again
                again = fresh(f"{point}-{n}-abort")
                assert killed_run(again, cache, url, f"{point}:{n}", *REBASE).returncode == KILLED
                assert in_process(again, cache, url, "rebase", "--abort", "--onto", "1.1") == 0
                assert patches(tree(again)) == patches(old)
                assert in_process(again, cache, url, *REBASE, "--force") == 0
                assert tree(again) == new, f"abort + rebase --force after a kill at {point}:{n} differs"
                aborts += 1
            assert resume(root, cache, url) == 0, f"resuming after a kill at {point}:{n} failed"
            assert tree(root) == new, (
                f"the resumed rebase after a kill at {point}:{n} differs from an uninterrupted one"
            )
            assert not leftovers(root), f"{point}:{n}: left {leftovers(root)}"
            assert not stale_in(cache), f"{point}:{n}: left {stale_in(cache)} in the cache"
            assert not (root / CHECKOUT / ".git" / "rebase-apply").exists()
            FIGURES[f"rebase {point}"] = FIGURES.get(f"rebase {point}", 0) + 1
        else:
            pytest.fail(f"{point} reached more than {MAX_N} times")
    assert kills >= 10
    FIGURES["rebase replay kills"] = kills
    FIGURES["rebase replay abort + --force"] = aborts


def test_a_kill_inside_a_stopped_batch_am_is_redone_and_said(replay_template, tmp_path, capsys):
    """The first `git am` (the batch) stops at the conflicting patch with its session open; a kill there
    leaves one commit and an am session the state does not know. --continue goes back and replays."""
    ws = replay_template
    root = tmp_path / "killed"
    shutil.copytree(ws.root, root, symlinks=True)
    proc = killed_run(root, ws.cache, ws.index.url, "rebase.am:1", *REBASE)
    assert proc.returncode == KILLED
    assert (root / CHECKOUT / ".git" / "rebase-apply").is_dir()  # the batch's session, stopped at patch 2
    repo = Git(root / CHECKOUT)
    assert len(repo.out("rev-list", "refs/vpatch/upstream..HEAD").split()) == 1
    capsys.readouterr()
    assert in_process(root, ws.cache, ws.index.url, "rebase", "--continue", "--onto", "1.1") == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "git am" in line]
    assert len(said) == 1 and said[0].startswith("vpatch: the replay killed inside `git am` is redone from "), said
    assert (root / "patches" / "vllm-1.1" / "series").is_file()


def test_a_kill_once_a_hand_resolution_is_committed_keeps_its_outcome(pinned, tmp_path):
    """Resolved by hand, then `rebase --continue` killed right after its `git am --continue` committed:
    the next --continue records the patch as resolved by hand, exactly as an uninterrupted one does."""
    ws = pinned
    conflicting_project(ws)
    url = ws.index.url
    trees = []
    for label, fault in (("reference", None), ("killed", "rebase.am:1")):
        root = tmp_path / label
        shutil.copytree(ws.root, root, symlinks=True)
        cache = tmp_path / f"cache-{label}"  # each its own: no resolution recorded by the other
        shutil.copytree(ws.cache, cache, symlinks=True)
        assert in_process(root, cache, url, *REBASE) == 1  # stops at the conflict: nothing recorded here
        (root / CHECKOUT / "vllm/core/block_pool.py").write_text(RESOLVED)
        Git(root / CHECKOUT).run("add", "vllm/core/block_pool.py")
        if fault:
            proc = killed_run(root, cache, url, fault, "rebase", "--continue", "--onto", "1.1")
            assert proc.returncode == KILLED, proc.stderr[-2000:]
            assert not (root / "patches" / "vllm-1.1").exists()
        assert in_process(root, cache, url, "rebase", "--continue", "--onto", "1.1") == 0
        trees.append(tree(root))
    assert trees[0] == trees[1]
    assert b"conflict resolved by hand" in trees[1]["patches/vllm-1.1/evidence.json"]
    FIGURES["hand resolution kills"] = 1


def cache_files(cache: Path) -> dict[str, bytes]:
    """The verified downloads of a cache (temp names, locks and stamps aside)."""
    return {
        str(p.relative_to(cache)): p.read_bytes()
        for p in sorted((cache / "downloads").rglob("*"))
        if p.is_file() and p.name.endswith((".whl", ".tar.gz")) and not p.name.startswith(PREFIX)
    }


def test_fetch_killed_at_each_write(pinned, tmp_path):
    """`fetch --wheels` into a cold cache killed mid-download and before each atomic rename; the rerun
    fetches everything, leaves no temp name, and the cache holds what an uninterrupted fetch gives."""
    ws = pinned
    ws.write_series("1.0", {})
    url = ws.index.url
    reference = tmp_path / "reference-cache"
    assert in_process(ws.root, reference, url, "fetch", "1.0", "--wheels") == 0
    expected = cache_files(reference)
    assert len(expected) == 2
    kills = 0
    for point, counted in (("download.part", True), ("atomic.write", True)):
        for n in range(1, (MAX_N if counted else 1) + 1):
            cache = tmp_path / f"cache-{point}-{n}"
            proc = killed_run(ws.root, cache, url, f"{point}:{n}", "fetch", "1.0", "--wheels")
            if proc.returncode == 0:
                break
            assert proc.returncode == KILLED, proc.stderr[-2000:]
            kills += 1
            assert {k: v for k, v in cache_files(cache).items() if k in expected} == {
                k: v for k, v in expected.items() if k in cache_files(cache)
            }, f"fetch killed at {point}:{n} left a partial file under a final name"
            assert in_process(ws.root, cache, url, "fetch", "1.0", "--wheels") == 0
            assert cache_files(cache) == expected
            assert not stale_in(cache), f"fetch at {point}:{n}: left {stale_in(cache)}"
            FIGURES[f"fetch {point}"] = FIGURES.get(f"fetch {point}", 0) + 1
            # the base the rerun made is usable
            assert in_process(ws.root, cache, url, "apply", "1.0", "--into", str(tmp_path / f"co-{point}-{n}")) == 0
    assert kills >= 2
    FIGURES["fetch kills"] = kills


def test_zz_figures(capsys):
    with capsys.disabled():
        print(f"\nfault injection (rebase replay, fetch): {FIGURES}")
