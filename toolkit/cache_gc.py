"""What the cache holds and clearing what has not been used for a while (`vpatch cache info`, `vpatch cache gc`).

An entry is one direct child of an area (a download's sha256 directory, a venv, a kept stock run, a wheel, ...).
Its last use is the newest modification time of the entry itself and of its lock files: `cache.locked()` touches
a lock each time it is taken, so every entry built or read under its lock says when it was last wanted.

Removing is safe against other vpatch processes: an entry is taken only while its lock can be had at once (an
entry in use is skipped and named), then renamed aside in one step and deleted. A reader sees the entry whole
or not at all, and builds it again when it is missing. Lock files themselves are kept: deleting a lock file
another process has open would let two processes hold "the same" lock. Downloads of pinned artifacts are kept
unless asked (they are the costly ones to fetch again, and `vpatch fetch` would only bring them back).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from toolkit import tempnames

LOCK = ".lock"
# Entries below these are what an area holds; every other top-level directory is an area of its own.
NESTED_AREAS = ("ci", "conform", "bases")
# Areas sharded by the first two hex digits of a key: the entries are the files inside the shards.
SHARDED_AREAS = ("lint-results",)


@dataclass(frozen=True)
class Entry:
    """One removable thing in the cache."""

    area: str
    path: Path
    last_use: float
    size: int
    pinned: bool = False

    def age_days(self, now: float) -> float:
        return max(0.0, now - self.last_use) / 86400


@dataclass
class AreaSummary:
    area: str
    entries: int = 0
    size: int = 0
    removable: int = 0
    removable_size: int = 0


@dataclass
class Sweep:
    """What a gc removed (or, dry, would remove) and what it left because another process held it."""

    removed: list[Entry] = field(default_factory=list)
    busy: list[Entry] = field(default_factory=list)

    @property
    def freed(self) -> int:
        return sum(e.size for e in self.removed)


def _is_lock(path: Path) -> bool:
    return path.name.endswith(LOCK)


def _locks_of(path: Path) -> list[Path]:
    """The lock files guarding `path`: its sibling `NAME.lock`, and for a directory the locks directly in it."""
    locks = [path.with_name(path.name + LOCK)]
    if path.is_dir() and not path.is_symlink():
        locks += [p for p in path.iterdir() if _is_lock(p)]
    return [p for p in locks if p.is_file()]


def _size(path: Path, seen: set[tuple[int, int]]) -> int:
    """Bytes on disk under `path`, each inode once (venvs share files by hard links)."""
    total = 0
    paths = [path] if not path.is_dir() or path.is_symlink() else [path, *path.rglob("*")]
    for item in paths:
        with contextlib.suppress(OSError):
            st = item.lstat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def _last_use(path: Path) -> float:
    times = []
    for item in [path, *_locks_of(path)]:
        with contextlib.suppress(OSError):
            times.append(item.lstat().st_mtime)
    return max(times, default=0.0)


def _areas(cache_dir: Path) -> Iterator[tuple[str, Path]]:
    """(area, a directory whose children are its entries)."""
    for child in sorted(cache_dir.iterdir()) if cache_dir.is_dir() else []:
        if not child.is_dir() or child.name == "tmp" or _is_lock(child):
            continue
        if child.name in NESTED_AREAS or child.name in SHARDED_AREAS:
            for inner in sorted(p for p in child.iterdir() if p.is_dir()):
                yield child.name if child.name in SHARDED_AREAS else f"{child.name}/{inner.name}", inner
        else:
            yield child.name, child


def entries(cache_dir: Path, pinned_sha256: frozenset[str] = frozenset()) -> list[Entry]:
    """Every entry of every area (lock files and staging directories of running builds are not entries)."""
    found = []
    seen: set[tuple[int, int]] = set()
    for area, directory in _areas(cache_dir):
        for path in sorted(directory.iterdir()):
            if _is_lock(path) or tempnames.owner_pid(path.name) is not None:
                continue
            pinned = area == "downloads" and path.name in pinned_sha256
            found.append(Entry(area, path, _last_use(path), _size(path, seen), pinned))
    return found


def summarize(found: list[Entry], older_than_days: float | None, now: float) -> list[AreaSummary]:
    summaries: dict[str, AreaSummary] = {}
    for entry in found:
        summary = summaries.setdefault(entry.area, AreaSummary(entry.area))
        summary.entries += 1
        summary.size += entry.size
        if older_than_days is not None and removable(entry, older_than_days, now, include_pinned=False):
            summary.removable += 1
            summary.removable_size += entry.size
    return sorted(summaries.values(), key=lambda s: -s.size)


def removable(entry: Entry, older_than_days: float, now: float, *, include_pinned: bool) -> bool:
    return entry.age_days(now) >= older_than_days and (include_pinned or not entry.pinned)


@contextlib.contextmanager
def _held_at_once(locks: list[Path]) -> Iterator[bool]:
    """Every lock in `locks` taken without waiting (True), or none held (False: another process has one)."""
    fds: list[int] = []
    try:
        for lock in locks:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
        yield True
    finally:
        for fd in fds:
            os.close(fd)  # closing drops the flock


def collect(
    cache_dir: Path,
    found: list[Entry],
    older_than_days: float,
    *,
    include_pinned: bool = False,
    dry_run: bool = False,
    now: float | None = None,
) -> Sweep:
    """Remove the entries unused for `older_than_days` (all of them with 0), skipping those in use."""
    now = time.time() if now is None else now
    sweep = Sweep()
    trash = cache_dir / "tmp"
    for entry in found:
        if not removable(entry, older_than_days, now, include_pinned=include_pinned):
            continue
        if dry_run:
            sweep.removed.append(entry)
            continue
        # Lock files inside a directory go with it: hold them from outside, then move the directory whole.
        with _held_at_once(_locks_of(entry.path)) as held:
            if not held:
                sweep.busy.append(entry)
                continue
            trash.mkdir(parents=True, exist_ok=True)
            aside = trash / f"{tempnames.prefix('gc-' + entry.path.name)}{entry.area.replace('/', '-')}"
            try:
                entry.path.rename(aside)
            except FileNotFoundError:  # another gc took it first
                continue
        _remove(aside)
        sweep.removed.append(entry)
    tempnames.sweep(trash)  # what a killed gc had moved aside
    return sweep


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
