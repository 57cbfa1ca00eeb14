"""Reading a stopped `git am --3way`: the unmerged paths and the conflict-marker blocks left in them."""

from __future__ import annotations

from pathlib import Path

from toolkit.git import Git

CONFLICT_KINDS = {
    "UU": "content conflict",
    "AA": "added on both sides",
    "DU": "deleted in the new base, changed by the patch",
    "UD": "changed in the new base, deleted by the patch",
    "AU": "added by the new base",
    "UA": "added by the patch",
    "DD": "deleted on both sides",
}


def unmerged_paths(repo: Git) -> list[tuple[str, str]]:
    """(status code, path) of every unmerged path (`git status` XY codes: UU, AA, DU, UD ...)."""
    return repo.unmerged()


def conflict_hunks(path: Path) -> list[list[int]]:
    """[first, last] line of every `<<<<<<<` ... `>>>>>>>` block in the file."""
    try:
        return conflict_hunks_of(path.read_bytes())
    except OSError:
        return []


def conflict_hunks_of(data: bytes) -> list[list[int]]:
    """[first, last] line of every `<<<<<<<` ... `>>>>>>>` block in `data`."""
    hunks, start = [], None
    for number, line in enumerate(data.split(b"\n"), start=1):
        if start is None and line.startswith(b"<<<<<<<"):
            start = number
        elif start is not None and line.startswith(b">>>>>>>"):
            hunks.append([start, number])
            start = None
    return hunks


def line_ranges(hunks: list[list[int]]) -> str:
    return "lines " + ", ".join(f"{a}-{b}" for a, b in hunks)
