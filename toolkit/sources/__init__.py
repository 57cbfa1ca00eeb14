"""Sources: materialize a pinned upstream release as a base commit in the cache.

Two kinds behind one interface: `sdist` (the pinned source tarball, extracted
safely into a repository whose commit id is the same on every machine) and `git`
(a mirror of the remote, the pinned tag verified against the pinned commit).
`materialize` returns a `Base`; `toolkit.checkout` turns a Base into a work tree.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from toolkit import tempnames
from toolkit.cache import atomic_write_text, sha256_file
from toolkit.errors import VpatchError
from toolkit.model import Pin

STAMP = "vpatch-stamp.json"


@dataclass(frozen=True)
class Base:
    """A pinned release's source as a commit in a cached repository."""

    pin: Pin
    source: str
    repo: Path  # bare repository in the cache holding `commit`
    commit: str
    reused: bool  # True when the cache already held a verified entry
    what: str = ""  # what the tree is, when not the pin's own source (a base made from a flavor's wheel)

    @property
    def label(self) -> str:
        return self.what or self.pin.label


def materialize(pin: Pin, cache_dir: Path, *, source: str | None = None, quiet: bool = False) -> Base:
    kind = source or pin.source
    if kind == "sdist":
        from toolkit.sources.sdist import materialize_sdist

        return materialize_sdist(pin, cache_dir, quiet=quiet)
    if kind == "git":
        from toolkit.sources.gitsource import materialize_git

        return materialize_git(pin, cache_dir)
    raise VpatchError(f"unknown source kind {kind!r} (expected sdist or git)")


# ---------------------------------------------------------------- cache entry integrity


def _object_paths(repo: Path) -> list[Path]:
    objects = repo / "objects"
    return [
        path
        for path in sorted(objects.rglob("*"))
        if path.is_file() and "info" not in path.relative_to(objects).parts[:1]
    ]


def _object_files(repo: Path) -> dict[str, str]:
    return {str(path.relative_to(repo)): sha256_file(path) for path in _object_paths(repo)}


def _object_stats(repo: Path) -> dict[str, list[int]]:
    # Any write to a file changes its ctime, which no user-level call can set back; so an object
    # file whose size, mtime, ctime and inode are as stamped still has the stamped content.
    stats = {}
    for path in _object_paths(repo):
        st = path.stat()
        stats[str(path.relative_to(repo))] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    return stats


def write_stamp(repo: Path, **facts: object) -> None:
    """Record what a good entry looks like; written last, so an entry without it is incomplete."""
    stamp = {"objects": _object_files(repo), "stats": _object_stats(repo), **facts}
    atomic_write_text(repo / STAMP, json.dumps(stamp, indent=1, sort_keys=True) + "\n")


def read_stamp(repo: Path) -> dict | None:
    """The entry's stamp if it exists and every object file is exactly as stamped; else None.

    Files whose stat is unchanged since stamping are trusted without re-hashing (the cheap path
    that makes a cached base near-instant); any other difference means a full hash comparison.
    """
    stamp_path = repo / STAMP
    if not stamp_path.is_file():
        return None
    try:
        stamp = json.loads(stamp_path.read_text(encoding="utf-8"))
        before = _object_stats(repo)
        if stamp.get("stats") is not None and before == stamp["stats"]:
            return stamp
        if _object_files(repo) != stamp.get("objects"):
            return None
        # Same content, new stats (git freshens the mtime of a pack that already holds an object it
        # was asked to write): stamp them, so the next read is the cheap one again. Only when nothing
        # changed while hashing; callers hold the entry's lock.
        if _object_stats(repo) == before:
            stamp["stats"] = before
            tempnames.sweep(repo)  # a stamp write a killed run left half-done
            atomic_write_text(stamp_path, json.dumps(stamp, indent=1, sort_keys=True) + "\n")
    except (OSError, ValueError):
        return None
    return stamp


def discard(repo: Path) -> None:
    if repo.exists():
        shutil.rmtree(repo)
