"""`vpatch cache info` / `gc`: entries unused for N days go, those another process holds and pinned downloads stay
(a real cache tree in a tmp dir, real flocks held by a real second process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from toolkit.cache import locked
from toolkit.cache_gc import collect, entries
from toolkit.cli import main

DAY = 86400.0
PINNED = "a" * 64
UNPINNED = "b" * 64


def _aged(path: Path, days: float) -> None:
    when = time.time() - days * DAY
    for item in [path, *(path.rglob("*") if path.is_dir() else [])]:
        os.utime(item, (when, when), follow_symlinks=False)


def _cache(root: Path) -> Path:
    """Old and new entries of several kinds; each with its lock where the toolkit keeps one."""
    cache = root / "cache"
    for name, days in (("old-env", 40), ("new-env", 1)):
        (cache / "envs" / name / "bin").mkdir(parents=True)
        (cache / "envs" / name / "bin" / "python").write_bytes(b"x" * 5000)
        (cache / "envs" / f"{name}.lock").touch()
        _aged(cache / "envs" / name, days)
        _aged(cache / "envs" / f"{name}.lock", days)
    for sha in (PINNED, UNPINNED):
        entry = cache / "downloads" / sha
        entry.mkdir(parents=True)
        (entry / "vllm.whl").write_bytes(b"w" * 3000)
        (entry / "vllm.whl.lock").touch()
        _aged(entry, 50)
    (cache / "conform" / "stock-runs" / "k1").mkdir(parents=True)
    (cache / "conform" / "stock-runs" / "k1" / "stock.jsonl").write_text("{}\n")
    _aged(cache / "conform" / "stock-runs" / "k1", 60)
    (cache / "lint-results" / "ab").mkdir(parents=True)
    (cache / "lint-results" / "ab" / "abcd.json").write_text("{}\n")
    _aged(cache / "lint-results" / "ab" / "abcd.json", 60)
    return cache


def _names(found) -> set[str]:
    return {f"{e.area}/{e.path.name}" for e in found}


def test_gc_removes_what_was_unused_and_keeps_the_rest(tmp_path):
    cache = _cache(tmp_path)
    found = entries(cache, frozenset({PINNED}))
    assert _names(found) == {
        "envs/old-env",
        "envs/new-env",
        f"downloads/{PINNED}",
        f"downloads/{UNPINNED}",
        "conform/stock-runs/k1",
        "lint-results/abcd.json",
    }
    sweep = collect(cache, found, 30)
    assert _names(sweep.removed) == {
        "envs/old-env",
        f"downloads/{UNPINNED}",
        "conform/stock-runs/k1",
        "lint-results/abcd.json",
    }
    assert not (cache / "envs" / "old-env").exists() and (cache / "envs" / "new-env" / "bin" / "python").is_file()
    assert (cache / "downloads" / PINNED / "vllm.whl").is_file()  # pinned: kept however old
    assert (cache / "envs" / "old-env.lock").is_file()  # locks stay (another process may have one open)
    assert sweep.freed >= 5000 + 3000
    assert list((cache / "tmp").iterdir()) == []  # nothing left aside
    again = collect(cache, entries(cache, frozenset({PINNED})), 30, include_pinned=True)
    assert _names(again.removed) == {f"downloads/{PINNED}"}


def test_using_an_entry_under_its_lock_makes_it_recent(tmp_path):
    cache = _cache(tmp_path)
    with locked(cache / "envs" / "old-env"):
        pass
    assert "envs/old-env" not in _names(collect(cache, entries(cache), 30).removed)


HOLDER = """
import sys, time
from pathlib import Path
from toolkit.cache import locked
with locked(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_an_entry_another_process_holds_is_kept_and_named(tmp_path):
    cache = _cache(tmp_path)
    held = cache / "downloads" / UNPINNED / "vllm.whl"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(held)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        _aged(cache / "downloads" / UNPINNED, 50)  # taking the lock touched it
        sweep = collect(cache, entries(cache, frozenset({PINNED})), 30)
        assert _names(sweep.busy) == {f"downloads/{UNPINNED}"}
        assert held.is_file() and f"downloads/{UNPINNED}" not in _names(sweep.removed)
    finally:
        holder.kill()
        holder.wait()


def test_the_commands_dry_run_json_and_bad_input(tmp_path, capsys):
    cache = _cache(tmp_path)
    root = ["--root", str(tmp_path), "--cache-dir", str(cache)]
    assert main([*root, "cache", "gc", "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] and len(report["removed"]) == 5  # no pins.toml here: no download counts as pinned
    assert (cache / "envs" / "old-env").is_dir()  # a dry run removes nothing
    assert main([*root, "cache", "info", "--json", "--older-than", "30"]) == 0
    areas = {a["area"]: a for a in json.loads(capsys.readouterr().out)["areas"]}
    assert areas["envs"]["entries"] == 2 and areas["envs"]["removable"] == 1
    try:
        main([*root, "cache", "gc", "--older-than", "-3"])
    except SystemExit as stop:
        assert stop.code == 2
    assert "days cannot be negative" in capsys.readouterr().err
    assert main([*root, "cache", "gc", "--older-than", "0"]) == 0
    assert "removed 6 entries" in capsys.readouterr().out
    assert not (cache / "envs" / "new-env").exists()
