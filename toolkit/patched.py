"""The files a series changes, applied in a throw-away index instead of a work tree.

An overlay build only needs the patched contents of the few files the series
touches. Applying each patch with `git apply --cached` to a temporary index over
the cached base repository (new objects go to a temporary object directory, so the
cache entry is never written) avoids cloning and checking out the whole tree. The
result is cached by base commit and series fingerprint, so rebuilding an unchanged
series does not run git at all.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from toolkit import tempnames
from toolkit.cache import atomic_write_bytes, locked
from toolkit.errors import VpatchError
from toolkit.model import Series
from toolkit.sources import Base

FORMAT = 3  # 3: contents as bytes after a JSON line, sha256 of the stored bytes (2: JSON, contents in base64)
MAGIC = "vpatch-patched-files"


@dataclass(frozen=True)
class PatchedFiles:
    base_commit: str
    changes: tuple[tuple[str, str], ...]  # (status A / M / D, path), as git diff-index reports them
    contents: dict[str, bytes]  # patched content of added and modified paths
    base_blobs: dict[str, str]  # base blob id of modified and deleted paths
    symlinks: tuple[str, ...] = ()  # added or modified paths that are symlinks (mode 120000) afterwards

    def to_bytes(self) -> bytes:
        """The cache entry: a line naming the format and the sha256 of the rest, the rest a JSON line of the
        changes and the contents' sizes, then the contents themselves, as they are.

        The check hashes the stored bytes as read (re-serialising the payload as JSON to hash it again, and
        the contents' base64, cost a warm build ~9 ms of its ~0.1 s besides the copy)."""
        paths = sorted(self.contents)
        meta = {
            "base_commit": self.base_commit,
            "changes": [list(c) for c in self.changes],
            "contents": [[path, len(self.contents[path])] for path in paths],
            "base_blobs": dict(sorted(self.base_blobs.items())),
            "symlinks": list(self.symlinks),
        }
        body = json.dumps(meta, sort_keys=True).encode() + b"\n" + b"".join(self.contents[p] for p in paths)
        return f"{MAGIC} {FORMAT} {hashlib.sha256(body).hexdigest()}\n".encode() + body

    @classmethod
    def from_bytes(cls, data: bytes) -> PatchedFiles | None:
        """None when the entry is damaged or of another format."""
        head, _, body = data.partition(b"\n")
        if head.split(b" ")[:2] != [MAGIC.encode(), str(FORMAT).encode()]:
            return None
        if head.split(b" ")[2:] != [hashlib.sha256(body).hexdigest().encode()]:
            return None
        try:
            line, _, blob = body.partition(b"\n")
            meta = json.loads(line)
            contents, at = {}, 0
            for path, size in meta["contents"]:
                contents[path] = blob[at : at + size]
                at += size
            if at != len(blob):
                return None
            return cls(
                meta["base_commit"],
                tuple((s, p) for s, p in meta["changes"]),
                contents,
                dict(meta["base_blobs"]),
                tuple(meta["symlinks"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def apply_in_index(base: Base, series: Series, scratch_root: Path) -> PatchedFiles:
    from toolkit.git import Git  # only when the cache misses: its verb modules cost a warm build ~10 ms

    scratch_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=tempnames.prefix("index"), dir=scratch_root) as tmp:
        objects = Path(tmp) / "objects"
        objects.mkdir()
        index = Git(base.repo).private_index(Path(tmp) / "index", objects=objects)
        index.read_tree(base.commit)
        for patch in series.patches:
            proc = index.apply(patch.path)
            if not proc.ok:
                from toolkit.apply import describe_apply_failure  # only on failure

                details = describe_apply_failure(patch, proc.errors)
                raise VpatchError(f"does not apply to {base.label}: {'; '.join(details)}", path=patch.path)
        changes, new_ids, base_blobs, symlinks = [], {}, {}, []
        for change in index.changes(base.commit):
            changes.append((change.status, change.path))
            if change.status in ("A", "M", "T"):
                new_ids[change.path] = change.new_id
                if change.new_mode == "120000":
                    symlinks.append(change.path)
            if change.status in ("M", "T", "D"):
                base_blobs[change.path] = change.old_id
        try:
            contents = dict(zip(new_ids, index.read_blobs(list(new_ids.values())), strict=True))
        except ValueError as exc:
            raise VpatchError(str(exc)) from None
    return PatchedFiles(base.commit, tuple(changes), contents, base_blobs, tuple(symlinks))


def patched_files(base: Base, series: Series, cache_dir: Path) -> PatchedFiles:
    """`apply_in_index`, cached by base commit and series fingerprint (the patches' full contents)."""
    key = hashlib.sha256(f"{base.commit}\0{series.fingerprint()}\0{FORMAT}".encode()).hexdigest()[:32]
    entry = cache_dir / "patched" / f"{key}.files"
    with locked(entry):
        if entry.is_file():
            cached = PatchedFiles.from_bytes(entry.read_bytes())
            if cached is not None and cached.base_commit == base.commit:
                return cached
        result = apply_in_index(base, series, cache_dir / "tmp")
        atomic_write_bytes(entry, result.to_bytes())
    return result
