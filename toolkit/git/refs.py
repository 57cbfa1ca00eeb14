"""Refs read from a bare repository's files, without GitPython or the `Git` class and its verbs loaded (a warm
`vpatch build` asks for one ref of a cached base and nothing else of git)."""

from __future__ import annotations

from pathlib import Path


def ref_commit(path: Path, ref: str) -> str | None:
    """`Git(path).ref_commit(ref)`: a loose ref of a bare repository read here, any other case by `Git`."""
    loose = bare_loose_ref(path, ref)
    if loose is not None:
        return loose
    from toolkit.git.repo import Git

    return Git(path).ref_commit(ref)


def bare_loose_ref(path: Path, ref: str) -> str | None:
    """The object id of `ref` when `path` is a bare repository (no worktree's git dir) holding it as a loose
    ref file naming an object id; None for anything else (packed, symbolic, reftable, not a bare repository),
    which GitPython then reads; None too for a name that is no `refs/...` or could leave the repository (`..`).
    A loose ref takes precedence over packed-refs in git's files backend."""
    if not ref.startswith("refs/") or ".." in ref:
        return None
    if not (path / "objects").is_dir() or not (path / "HEAD").is_file() or (path / "commondir").exists():
        return None
    try:
        text = (path / ref).read_bytes()
    except OSError:  # absent (packed or no such ref), a directory, unreadable
        return None
    sha = text.removesuffix(b"\n")
    if len(sha) == 40 and all(c in b"0123456789abcdef" for c in sha):
        return sha.decode("ascii")
    return None
