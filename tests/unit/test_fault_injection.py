"""Crash safety: each writing command killed at each write boundary (VPATCH_FAULT), then recovered and rerun.

For every trial the project starts as a copy of one template; the command runs in a process of its own
with `VPATCH_FAULT=<point>:<n>` and dies there with status 137 (os._exit: no cleanup runs). Then:
- what is visible (vpatch's own temp names and journals aside) is exactly the old tree when the kill came
  before the transaction's journal, and the next vpatch command (`pin list`, any would do) leaves exactly
  the old tree or the new one, with no temp name left;
- rerunning the command exits 0 and leaves exactly the tree of an uninterrupted run.
The counting points (txn.swap, atomic.write) are tried at n = 1, 2, ... until the command no longer
reaches the n-th one, so every swap and every atomic rename of the run is a kill site.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness import DIFF_AUTHORSHIP, commit_in, module_text
from tests.harness.forks import forked_vpatch
from toolkit.cli import main as vpatch_main
from toolkit.faults import KILLED
from toolkit.tempnames import PREFIX, owner_pid, pid_alive
from toolkit.txn import JOURNAL_PREFIX

SINGLE = ("txn.staged", "txn.journal", "txn.swapped")  # reached once per transaction
COUNTED = ("txn.swap", "atomic.write", "txn.write")  # reached once per swap / atomic rename / staged file
BEFORE_JOURNAL = ("txn.write", "txn.staged", "atomic.write")  # the kill leaves the old state visible
MAX_N = 8


@dataclass
class Trials:
    """Figures for docs/reliability.md (printed with -s)."""

    killed: int = 0
    recovered_new: int = 0
    old: int = 0
    reruns: int = 0
    by_command: dict[str, int] = field(default_factory=dict)


FIGURES = Trials()


def tree(root: Path, *, visible_only: bool = False) -> dict[str, bytes]:
    """Every file vpatch may write in the project (checkouts: only their state file)."""
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] == "build" or path.name.endswith(".lock") or not (path.is_file() or path.is_symlink()):
            continue
        state_file = len(rel.parts) == 4 and rel.parts[2:] == (".git", "vpatch.json")
        temp = any(part.startswith(PREFIX) for part in rel.parts[1:3])
        if rel.parts[0] == "checkouts" and not (state_file or temp):
            continue
        if visible_only and any(p.startswith((PREFIX, JOURNAL_PREFIX)) for p in rel.parts):
            continue
        files[str(rel)] = path.read_bytes()
    return files


def leftovers(root: Path) -> list[str]:
    return [
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.name.startswith((PREFIX, JOURNAL_PREFIX))
        and not p.name.endswith(".lock")
        and "build" not in p.relative_to(root).parts[:1]
    ]


def _at(root: Path, args: tuple[str, ...]) -> list[str]:
    return [a.replace("{root}", str(root)) for a in args]


def stale_in(cache: Path) -> list[str]:
    """Temp names in the cache whose process is gone (scratch checkouts, staging bases, .part files)."""
    return [
        str(p.relative_to(cache))
        for p in cache.rglob(f"{PREFIX}*")
        if (pid := owner_pid(p.name)) is not None and not pid_alive(pid) and not p.name.endswith(".lock")
    ]


def in_process(root: Path, cache: Path, url: str, *args: str) -> int:
    return vpatch_main(["--root", str(root), "--cache-dir", str(cache), "--index-url", url, *_at(root, args)])


def killed_run(
    root: Path, cache: Path, url: str, fault: str, *args: str, fresh: bool = False
) -> subprocess.CompletedProcess[str]:
    """`vpatch ARGS` with VPATCH_FAULT=FAULT in a process of its own: forked from one that has imported vpatch
    (tests/harness/fork_server.py), or with `fresh` a new interpreter (`python -m toolkit.cli`)."""
    env = {**os.environ, "VPATCH_FAULT": fault}
    argv = ["--root", str(root), "--cache-dir", str(cache), "--index-url", url, *_at(root, args)]
    if not fresh:
        return forked_vpatch(argv, env=env, cwd=root, timeout=600)
    return subprocess.run(
        [sys.executable, "-m", "toolkit.cli", *argv], env=env, capture_output=True, text=True, timeout=600, cwd=root
    )


def run_trials(
    ws,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    args: tuple[str, ...],
    *,
    rerun: Callable[[Path], tuple[str, ...]] | None = None,
    points: tuple[str, ...] = (*SINGLE, "txn.swap", "atomic.write"),
    scope: str = "",
) -> int:
    """`scope`: the part of the tree that must be exactly old or new right after a kill (a rebase's checkout
    is a third state, "to be continued", checked by the rerun)."""
    """Kill `vpatch ARGS` at every boundary in copies of the workspace; returns the number of kills."""
    template = ws.root
    cache, url = ws.cache, ws.index.url

    def fresh(label: str) -> Path:
        root = tmp_path / "trials" / label
        shutil.copytree(template, root, symlinks=True)
        return root

    reference = fresh("reference")
    old = tree(reference)
    assert in_process(reference, cache, url, *args) == 0
    new = tree(reference)

    def part(files: dict[str, bytes]) -> dict[str, bytes]:
        return {k: v for k, v in files.items() if k.startswith(scope)}

    assert new != old, f"{name}: the command changed nothing"
    kills = 0
    for point in points:
        for n in range(1, (MAX_N if point in COUNTED else 1) + 1):
            root = fresh(f"{point}-{n}")
            # the first kill of each command in a new interpreter, the others forked from an imported vpatch
            proc = killed_run(root, cache, url, f"{point}:{n}", *args, fresh=kills == 0)
            if proc.returncode == 0:
                assert tree(root) == new, f"{name} at {point}:{n} (not reached) differs from an uninterrupted run"
                break
            assert proc.returncode == KILLED, f"{name} at {point}:{n}: {proc.returncode} {proc.stderr[-2000:]}"
            kills += 1
            if point in BEFORE_JOURNAL:  # after the journal, the mix is visible until the next command
                visible = part(tree(root, visible_only=True))
                assert visible == part(old), f"{name} killed at {point}:{n} before its journal: not the old state"
            if point in ("txn.write", "txn.staged", "txn.journal", "txn.swap", "txn.swapped"):
                # any command recovers first: exactly old (no journal yet) or new (rolled forward)
                capsys.readouterr()
                assert in_process(root, cache, url, "pin", "list") == 0
                said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vpatch: ")]
                if point in BEFORE_JOURNAL:
                    assert said and "stale temp file(s) of killed vpatch runs" in said[0], said
                else:  # one line says what was finished
                    assert len(said) == 1 and said[0].startswith("vpatch: finished the interrupted "), said
                after = part(tree(root))
                expected = part(old if point in BEFORE_JOURNAL else new)
                assert after == expected, f"{name} at {point}:{n}: recovery gave neither the old nor the new state"
                assert not [n for n in leftovers(root) if n.startswith(scope)], leftovers(root)
                FIGURES.old += after == part(old)
                FIGURES.recovered_new += after == part(new)
            again = rerun(root) if rerun else args
            assert in_process(root, cache, url, *again) == 0, f"{name}: the rerun after a kill at {point}:{n} failed"
            assert tree(root) == new, f"{name}: the rerun after a kill at {point}:{n} differs from an uninterrupted run"
            assert not leftovers(root), f"{name} at {point}:{n}: left {leftovers(root)}"
            assert not stale_in(cache), f"{name} at {point}:{n}: left {stale_in(cache)} in the cache"
            FIGURES.reruns += 1
        else:
            if point in COUNTED:
                pytest.fail(f"{name}: {point} reached more than {MAX_N} times")
    FIGURES.killed += kills
    FIGURES.by_command[name] = kills
    return kills


# ---------------------------------------------------------------- fixtures


PATCHES = {
    "vllm/core/scheduler.py": ("[V1] kv events", "Feature: kv-routing"),
    "vllm/core/block_pool.py": ("[V1] pd", "Feature: pd-disagg"),
}


def series_of_two(ws) -> list[str]:
    """1.0 pinned with a two-patch series (a commented series file and a hand-written NOTES.md)."""
    ws.write_series("1.0", {}, comment="# dynamo-base series for vLLM 1.0\n# keep this header")
    (ws.series_dir("1.0") / "NOTES.md").write_text("hand-written notes\n")
    assert ws.run("apply", "1.0") == 0
    for path, (subject, feature) in PATCHES.items():
        commit_in(
            ws.checkout("1.0"),
            {path: module_text(path.rsplit("/", 1)[1][:-3]) + f"{subject.split()[-1].upper()} = 1\n"},
            subject=subject,
            headers=f"Upstream-Status: Pending\n{feature}",
        )
    assert ws.run("export", "1.0") == 0
    return [n for n in (ws.series_dir("1.0") / "series").read_text().split() if n.endswith(".patch")]


def test_export_killed_at_each_boundary(pinned, tmp_path, capsys):
    ws = pinned
    series_of_two(ws)
    commit_in(ws.checkout("1.0"), {"vllm/core/kv_events.py": "EVENTS = 2\n"}, subject="[V1] more events")
    kills = run_trials(ws, tmp_path, capsys, "export", ("export", "1.0"))
    assert kills >= 5
    text = (tmp_path / "trials" / "reference" / "patches" / "vllm-1.0" / "series").read_text()
    assert text.startswith("# dynamo-base series for vLLM 1.0\n# keep this header\n")


def test_import_killed_at_each_boundary(pinned, tmp_path, capsys):
    ws = pinned
    series_of_two(ws)
    diff = tmp_path / "extra.diff"
    diff.write_text("--- a/vllm/extra.py\n+++ b/vllm/extra.py\n@@ -0,0 +1,2 @@\n+EXTRA = 1\n+MORE = 2\n")
    args = ("import", str(diff), "--version", "1.0", *DIFF_AUTHORSHIP, "--feature", "kv-routing")
    kills = run_trials(ws, tmp_path, capsys, "import", args)
    assert kills >= 5
    # importing the same source again is recognised: nothing written
    reference = tmp_path / "trials" / "reference"
    before = tree(reference)
    capsys.readouterr()
    assert in_process(reference, ws.cache, ws.index.url, *args) == 0
    assert "already imported" in capsys.readouterr().out
    assert tree(reference) == before


def test_retire_killed_at_each_boundary(pinned, tmp_path, capsys):
    ws = pinned
    names = series_of_two(ws)
    ws.pin_carrying("1.1")
    (ws.root / "CHANGELOG.md").write_text("# Changelog\n\n## [Unreleased]\n\n### Added\n- things\n")
    args = ("retire", names[0], "--since", "1.1", "--force", "--reason", "upstream has it")
    kills = run_trials(ws, tmp_path, capsys, "retire", args, points=(*SINGLE, *COUNTED))
    assert kills >= 10  # three staged files, three swaps: 1.0's series, 1.1's series, CHANGELOG.md
    reference = tmp_path / "trials" / "reference"
    assert (reference / "patches" / "vllm-1.1" / "NOTES.md").read_text() == "hand-written notes\n"
    before = tree(reference)
    capsys.readouterr()
    assert in_process(reference, ws.cache, ws.index.url, *args) == 0  # twice: exit 0, nothing changes
    assert "already retired since vLLM 1.1" in capsys.readouterr().out
    assert tree(reference) == before
    assert (reference / "CHANGELOG.md").read_text().count(names[0]) == 1


def test_rebase_completion_killed_at_each_boundary(pinned, tmp_path, capsys):
    ws = pinned
    series_of_two(ws)
    ws.publish("1.1")
    assert ws.run("pin", "add", "1.1") == 0
    notes = ws.series_dir("1.1")
    notes.mkdir()
    (notes / "NOTES.md").write_text("notes for 1.1, written before the rebase\n")

    def rerun(root: Path) -> tuple[str, ...]:
        checkout = root / "checkouts" / "vllm-1.1-rebase"
        if (checkout / ".git" / "vpatch.json").is_file():
            return ("rebase", "--continue", "--onto", "1.1")
        return ("rebase", "1.0", "--onto", "1.1")

    kills = run_trials(
        ws,
        tmp_path,
        capsys,
        "rebase",
        ("rebase", "1.0", "--onto", "1.1"),
        rerun=rerun,
        points=(*SINGLE, "txn.swap"),
        scope="patches/",
    )
    assert kills >= 5
    reference = tmp_path / "trials" / "reference" / "patches" / "vllm-1.1"
    assert (reference / "NOTES.md").read_text() == "notes for 1.1, written before the rebase\n"


def test_build_output_killed_mid_wheel(pinned, tmp_path, capsys):
    ws = pinned
    series_of_two(ws)
    args = ("build", "1.0", "-o", "{root}/dist", "--no-verify")
    kills = run_trials(ws, tmp_path, capsys, "build", args, points=("wheel.write",))
    assert kills == 1


def test_pin_add_killed_at_each_write(pinned, tmp_path, capsys):
    ws = pinned
    ws.publish("1.1")
    kills = run_trials(ws, tmp_path, capsys, "pin add", ("pin", "add", "1.1"), points=("atomic.write",))
    assert kills >= 1


def test_killed_download_leaves_no_part_file(pinned, tmp_path, capsys):
    ws = pinned
    ws.publish("1.1")
    cache = tmp_path / "cold-cache"
    proc = killed_run(ws.root, cache, ws.index.url, "download.part", "pin", "add", "1.1", fresh=True)
    assert proc.returncode == KILLED, proc.stderr
    parts = [p for p in cache.rglob("*") if p.name.startswith(PREFIX)]
    assert parts and all(p.name.endswith(".part") for p in parts)
    assert in_process(ws.root, cache, ws.index.url, "pin", "add", "1.1") == 0
    assert not [p for p in cache.rglob("*") if p.name.startswith(PREFIX)]
    FIGURES.killed += 1
    FIGURES.by_command["download"] = 1


def test_zz_figures(capsys):
    with capsys.disabled():
        print(
            f"\nfault injection: {FIGURES.killed} kills, {FIGURES.reruns} reruns equal to an uninterrupted run, "
            f"recovery gave old {FIGURES.old} / new {FIGURES.recovered_new}; per command {FIGURES.by_command}"
        )


# ---------------------------------------------------------------- no dead ends


def test_killed_apply_leaves_no_unrecognisable_checkout(pinned, tmp_path, capsys):
    ws = pinned
    series_of_two(ws)
    into = ws.root / "checkouts" / "again"
    proc = killed_run(
        ws.root, ws.cache, ws.index.url, "checkout.staged", "apply", "1.0", "--into", str(into), fresh=True
    )
    assert proc.returncode == KILLED, proc.stderr
    assert not into.exists()  # the clone was complete but is only under its temp name
    assert [p.name for p in (ws.root / "checkouts").iterdir() if p.name.startswith(PREFIX)]
    assert ws.run("apply", "1.0", "--into", str(into)) == 0
    assert not [p.name for p in (ws.root / "checkouts").iterdir() if p.name.startswith(PREFIX)]
    # killed after the rename (before `git am`): the state file is there, so --force replaces it
    proc = killed_run(
        ws.root, ws.cache, ws.index.url, "checkout.placed", "apply", "1.0", "--into", str(into), "--force"
    )
    assert proc.returncode == KILLED, proc.stderr
    assert (into / ".git" / "vpatch.json").is_file()
    assert ws.run("apply", "1.0", "--into", str(into), "--force") == 0


def test_apply_force_leaves_a_directory_vpatch_did_not_create(pinned, tmp_path, capsys):
    ws = pinned
    ws.write_series("1.0", {})
    for mine in (tmp_path / "plain", tmp_path / "repo"):
        (mine / "keep.txt").parent.mkdir(parents=True)
        (mine / "keep.txt").write_text("mine\n")
    (tmp_path / "repo" / ".git").mkdir()  # a git repository, but not vpatch's
    for mine in (tmp_path / "plain", tmp_path / "repo"):
        capsys.readouterr()
        assert ws.run("apply", "1.0", "--into", str(mine), "--force") == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(mine) in err[0] and "not a vpatch checkout" in err[0]
        assert (mine / "keep.txt").read_text() == "mine\n"


def test_stale_index_lock_is_removed_and_a_held_one_named(pinned, tmp_path, capsys):
    ws = pinned
    ws.write_series("1.0", {})
    assert ws.run("apply", "1.0") == 0
    lock = ws.checkout("1.0") / ".git" / "index.lock"
    lock.write_text("")
    capsys.readouterr()
    assert ws.run("apply", "1.0", "--abort") == 0
    assert not lock.exists() and f"removed the stale lock {lock}" in capsys.readouterr().err
    lock.write_text("")
    holder = subprocess.Popen(["git", "cat-file", "--batch"], cwd=ws.checkout("1.0"), stdin=subprocess.PIPE)
    try:
        assert ws.run("apply", "1.0", "--abort") == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "checkouts/vllm-1.0/.git/index.lock" in err[0] and "a git process is working" in err[0]
        assert lock.exists()
    finally:
        holder.communicate(b"", timeout=30)


def test_sweep_removes_only_stale_temp_names_of_vpatch(tmp_path):
    from toolkit.tempnames import LEGACY_AGE, prefix, sweep

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = int(dead.stdout)
    names = {
        f".vpatch-{gone}-stage.abcd1234.vllm-1.0": "stale",  # its process is gone
        f"{prefix('stage')}efgh5678.vllm-1.0": "live",  # this process: in use
        f".vllm-1.0.old-{gone}": "stale",  # the old swap's copy
        ".vllm-1.0.k2j4h5g6.tmp": "stale",  # the old swap's staged copy, an hour old
        ".vllm-1.1.a1b2c3d4.tmp": "live",  # ... a minute old: maybe in use
        "NOTES.md": "live",
        ".vpatch-txn.lock": "live",
        "vllm-1.0.old-123": "live",  # not a hidden name: not ours
    }
    for name in names:
        (tmp_path / name).mkdir()
    old = time.time() - LEGACY_AGE - 60
    os.utime(tmp_path / ".vllm-1.0.k2j4h5g6.tmp", (old, old))
    removed = sweep(tmp_path)
    assert sorted(removed) == sorted(n for n, kind in names.items() if kind == "stale")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for n, kind in names.items() if kind == "live")


def test_full_disk_while_staging_is_one_line_and_changes_nothing(pinned, tmp_path, capsys, monkeypatch):
    from toolkit import faults

    ws = pinned
    series_of_two(ws)
    commit_in(ws.checkout("1.0"), {"vllm/core/kv_events.py": "EVENTS = 2\n"}, subject="[V1] more events")
    before = tree(ws.root)
    monkeypatch.setenv("VPATCH_FAULT", "txn.write:2:enospc")
    faults.reset()
    capsys.readouterr()
    assert ws.run("export", "1.0") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write the export of vllm-1.0 (No space left on device)" in err[0], err
    assert "nothing was changed" in err[0]
    assert tree(ws.root) == before and not leftovers(ws.root)
    monkeypatch.delenv("VPATCH_FAULT")
    assert ws.run("export", "1.0") == 0
