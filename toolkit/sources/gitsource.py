"""The git source: a cached mirror of the remote, the pinned tag checked against the pinned commit."""

from __future__ import annotations

import hashlib
from pathlib import Path

from toolkit.cache import locked, staging_dir
from toolkit.errors import VpatchError
from toolkit.git import Git, GitError
from toolkit.model import Pin
from toolkit.sources import Base, discard, read_stamp, write_stamp


def mirror_path(cache_dir: Path, remote: str) -> Path:
    key = hashlib.sha256(remote.encode()).hexdigest()[:20]
    return cache_dir / "bases" / "git" / f"{key}.git"


def materialize_git(pin: Pin, cache_dir: Path) -> Base:
    if not (pin.remote and pin.tag):
        raise VpatchError(f"pin {pin.version} has no git remote and tag")
    repo = mirror_path(cache_dir, pin.remote)
    ref = f"refs/tags/{pin.tag}"
    with locked(repo):
        # One mirror per remote serves every pinned tag; a mirror whose objects or tags changed
        # outside our own fetches (or was never stamped) is damaged and rebuilt.
        stamp = read_stamp(repo)
        tags = _tags(repo) if stamp is not None else None
        intact = stamp is not None and tags is not None and stamp.get("tags") == tags
        if not intact:
            discard(repo)
            with staging_dir(repo) as staged:
                Git.init(staged, bare=True)
                staged.rename(repo)
        mirror = Git(repo)
        commit = mirror.rev_parse(ref) if intact else None
        reused = commit is not None
        if commit is None:
            try:
                mirror.fetch(pin.remote, f"+{ref}:{ref}", force=True)
            except GitError as exc:
                raise VpatchError(f"pin {pin.version}: cannot fetch tag {pin.tag} from {pin.remote}: {exc}") from None
            commit = mirror.rev_parse(ref)
            if commit is None:
                raise VpatchError(f"pin {pin.version}: tag {pin.tag} from {pin.remote} does not name a commit")
            mirror.check_connectivity()
            write_stamp(repo, remote=pin.remote, tags=_tags(repo))
    if pin.commit and commit != pin.commit:
        raise VpatchError(
            f"pin {pin.version}: tag {pin.tag} at {pin.remote} is commit {commit}, but the pin records {pin.commit} "
            "(the tag moved upstream, or the pin is wrong)"
        )
    return Base(pin=pin, source="git", repo=repo, commit=commit, reused=reused)


def _tags(repo: Path) -> dict[str, str] | None:
    """Every tag ref of the mirror and the object it names (None if git cannot read the mirror)."""
    return Git(repo).refs("refs/tags/")
