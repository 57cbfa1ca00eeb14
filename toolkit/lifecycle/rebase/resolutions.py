"""Conflict resolutions kept in the tree, beside the series they produced (`patches/<project>-NEW/resolutions/`).

git rerere's rr-cache lives in `.git`, which a clone does not carry; these files do, so a rebase step
resolved once replays in CI or on another machine. The layout (one record schema, toolkit/records/resolutions.py):

    resolutions/index.json                              the step (OLD → NEW) and one record per conflicted file
    resolutions/<patch stem>/<path>.conflict            the file as `git am --3way` left it, conflict markers and all
    resolutions/<patch stem>/<path>.resolved            the file as resolved

While a rebase runs, a stop's conflicted files are kept in its private directory (`.git/vpatch-rebase/
resolutions/pending/`); once the patch is resolved (by hand, by rerere, or by a recorded resolution) each file's
record joins the rebase's own index there, and a completed rebase writes that directory into the new series
in the same transaction as the patches (toolkit/lifecycle/rebase/complete.py).

At a stop, a recorded resolution of the same patch and file is applied when its preimage is the conflict git
produced now (compared as rerere compares them: marker labels and a diff3 base dropped, the two sides in
sorted order), and announced. One whose preimage differs is not applied: the conflict stays, the stop says so.
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

from toolkit.errors import VpatchError
from toolkit.git import Git
from toolkit.lifecycle.rebase.conflicts import conflict_hunks, conflict_hunks_of
from toolkit.lifecycle.rebase.mail import today
from toolkit.records.codec import RecordError
from toolkit.records.resolutions import (
    INDEX_FILE,
    RESOLUTIONS_DIR,
    RESOLUTIONS_FORMAT,
    Resolution,
    ResolutionIndex,
    decode_index,
    encode_index,
)

PENDING = "pending"
PENDING_INDEX = "pending.json"
CONFLICT_SUFFIX = ".conflict"
RESOLVED_SUFFIX = ".resolved"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def conflict_key(data: bytes) -> bytes:
    """The conflict as rerere identifies it: the file with each marker block's labels and diff3 base dropped
    and its two sides in sorted order (a preimage rerere stored and one git just wrote compare equal)."""
    out: list[bytes] = []
    sides: list[list[bytes]] = []
    part = -1  # -1 outside a block; 0 ours, 1 base (dropped), 2 theirs
    for line in data.splitlines(keepends=True):
        if part == -1 and line.startswith(b"<<<<<<<"):
            sides, part = [[], []], 0
        elif part in (0, 1) and line.startswith(b"|||||||"):
            part = 1
        elif part in (0, 1) and line.startswith(b"======="):
            part = 2
        elif part == 2 and line.startswith(b">>>>>>>"):
            one, two = sorted(b"".join(side) for side in sides)
            out += [b"<<<<<<<\n", one, b"=======\n", two, b">>>>>>>\n"]
            part = -1
        elif part == 0:
            sides[0].append(line)
        elif part == 2:
            sides[1].append(line)
        elif part == -1:
            out.append(line)
    return b"".join(out)


def tree_path(path: str, *, where: Path) -> str:
    """`path` as a relative '/'-path inside a tree; a path escaping it (absolute, `..`, empty) is refused."""
    pure = PurePosixPath(path)
    if not path or "\\" in path or "\0" in path or pure.is_absolute() or ".." in pure.parts or path != str(pure):
        raise VpatchError(f"refusing the path {path!r}: it is not a plain path inside the tree", path=where)
    return str(pure)


def inside(root: Path, relative: str, *, where: Path) -> Path:
    """`root / relative`, refused when it (or a symlink on the way) leads outside `root`."""
    target = root / tree_path(relative, where=where)
    if not target.resolve().is_relative_to(root.resolve()):
        raise VpatchError(f"refusing {relative!r}: it leads outside {root.name}/", path=where)
    return target


def record_files(patch: str, path: str) -> tuple[str, str]:
    """The preimage's and the resolution's names under resolutions/ for `path` conflicting in `patch`."""
    stem = patch.removesuffix(".patch")
    return f"{stem}/{path}{CONFLICT_SUFFIX}", f"{stem}/{path}{RESOLVED_SUFFIX}"


def read_dir(directory: Path) -> ResolutionIndex | None:
    """The resolutions kept in `directory` (its index.json, every file it names checked), or None when absent."""
    index_file = directory / INDEX_FILE
    if not index_file.is_file():
        return None
    try:
        index = decode_index(index_file.read_bytes())
    except RecordError as exc:
        raise VpatchError(f"{exc.where or '$'}: {exc.message}", path=index_file, line=exc.line) from None
    for entry in index.resolutions:
        tree_path(entry.path, where=index_file)
        for name, digest in ((entry.preimage, entry.preimage_sha256), (entry.resolution, entry.resolution_sha256)):
            target = inside(directory, name, where=index_file)
            try:
                data = target.read_bytes()
            except OSError:
                raise VpatchError(f"{entry.patch}: {name} is missing", path=index_file) from None
            if sha256(data) != digest:
                raise VpatchError(f"{entry.patch}: {name} does not match its sha256 in the index", path=index_file)
    return index


def read_bytes(directory: Path, name: str) -> bytes:
    return inside(directory, name, where=directory / INDEX_FILE).read_bytes()


def series_files(directory: Path) -> dict[str, bytes]:
    """The files of a resolutions directory keyed as a series directory holds them (`resolutions/...`)."""
    index = read_dir(directory)
    if index is None or not index.resolutions:
        return {}
    files = {f"{RESOLUTIONS_DIR}/{INDEX_FILE}": encode_index(index).encode("utf-8")}
    for entry in index.resolutions:
        for name in (entry.preimage, entry.resolution):
            files[f"{RESOLUTIONS_DIR}/{name}"] = read_bytes(directory, name)
    return files


class Recorder:
    """The resolutions of one rebase, kept in its private directory (`<private>/resolutions/`)."""

    def __init__(self, private: Path, *, project: str, old_version: str, new_version: str) -> None:
        self.directory = private / RESOLUTIONS_DIR
        self.project, self.old_version, self.new_version = project, old_version, new_version

    def _index(self, name: str) -> ResolutionIndex:
        path = self.directory / name
        if path.is_file():
            return decode_index(path.read_bytes())
        return ResolutionIndex(RESOLUTIONS_FORMAT, self.project, self.old_version, self.new_version)

    def _write(self, name: str, data: bytes) -> None:
        path = inside(self.directory, name, where=self.directory)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def hold(self, patch: str, preimages: dict[str, bytes], how: dict[str, tuple[str, str]]) -> None:
        """Keep a stop's conflicted files until the patch is resolved; `how`: path -> (how, when recorded)."""
        pending = ResolutionIndex(RESOLUTIONS_FORMAT, self.project, self.old_version, self.new_version)
        for path, data in sorted(preimages.items()):
            name = f"{PENDING}/{path}{CONFLICT_SUFFIX}"
            self._write(name, data)
            said, when = how.get(path, ("by hand", ""))
            pending.put(Resolution(patch, path, name, "", sha256(data), "", conflict_hunks_of(data), said, when))
        self._write(PENDING_INDEX, encode_index(pending).encode("utf-8"))

    def drop_pending(self) -> None:
        (self.directory / PENDING_INDEX).unlink(missing_ok=True)

    def resolved(self, repo: Git, rev: str) -> list[str]:
        """The held stop is resolved: record each file as `rev` has it (`""` the index, "HEAD" the commit)."""
        if not (self.directory / PENDING_INDEX).is_file():
            return []
        pending = self._index(PENDING_INDEX)
        index = self._index(INDEX_FILE)
        recorded = []
        for held in pending.resolutions:
            proc = repo.show_file(rev, held.path)
            if not proc.ok:
                continue  # resolved by deleting the file: nothing a replay could write back
            preimage = read_bytes(self.directory, held.preimage)
            conflict, resolution = record_files(held.patch, held.path)
            self._write(conflict, preimage)
            self._write(resolution, proc.stdout)
            index.put(
                Resolution(
                    held.patch,
                    held.path,
                    conflict,
                    resolution,
                    sha256(preimage),
                    sha256(proc.stdout),
                    held.hunks,
                    held.how,
                    held.recorded or today(),
                )
            )
            recorded.append(held.path)
        self._write(INDEX_FILE, encode_index(index).encode("utf-8"))
        self.drop_pending()
        return recorded

    def series_files(self) -> dict[str, bytes]:
        return series_files(self.directory)


def conflicted_text(repo: Git, worktree: Path, path: str) -> bytes:
    """The file with its conflict as git merged it, even where rerere has already written a resolution
    into the work tree (then the merge is made again from the index's stages, and the file put back)."""
    target = inside(worktree, path, where=worktree)
    data = target.read_bytes() if target.is_file() else b""
    if conflict_hunks(target):
        return data
    repo.remerge(path)
    merged = target.read_bytes()
    target.write_bytes(data)
    return merged


def describe_file(directory: Path, name: str) -> str:
    """A record's file as a person finds it: `patches/vllm-0.9.1/resolutions/<name>`."""
    return f"{directory.parent.parent.name}/{directory.parent.name}/{directory.name}/{name}"


class Applied:
    """What the recorded resolutions did at a stop: files resolved, announcements, mismatches."""

    def __init__(self) -> None:
        self.resolved: list[str] = []
        self.notes: list[str] = []
        self.mismatched: dict[str, str] = {}  # path -> the stop's line saying so
        self.how: dict[str, tuple[str, str]] = {}  # path -> (how it was first resolved, when)


def apply_recorded(
    directory: Path, index: ResolutionIndex | None, worktree: Path, patch: str, preimages: dict[str, bytes]
) -> Applied:
    """Write the recorded resolution of each conflicted file of `patch` whose preimage is this conflict; a
    file whose recorded preimage differs keeps its conflict (even a resolution rerere wrote) and is named."""
    applied = Applied()
    if index is None:
        return applied
    for path, data in sorted(preimages.items()):
        entry = index.find(patch, path)
        if entry is None:
            continue
        target = inside(worktree, path, where=directory / INDEX_FILE)
        if conflict_key(read_bytes(directory, entry.preimage)) == conflict_key(data):
            target.write_bytes(read_bytes(directory, entry.resolution))
            applied.resolved.append(path)
            applied.how[path] = (entry.how, entry.recorded)
            applied.notes.append(
                f"conflict in {path} resolved by the recorded resolution {describe_file(directory, entry.resolution)} "
                f"({entry.how}, recorded {entry.recorded})"
            )
        else:
            target.write_bytes(data)  # the conflict as git made it now, never a stale resolution
            applied.mismatched[path] = (
                f"{path}: the recorded resolution {describe_file(directory, entry.resolution)} no longer matches "
                f"(this conflict differs from its preimage {entry.preimage}); not applied, resolve it by hand"
            )
    return applied


def step_index(directory: Path, old_version: str, new_version: str) -> tuple[ResolutionIndex | None, str | None]:
    """The recorded resolutions of the step OLD → NEW in `directory`, and a line when it holds another step's."""
    index = read_dir(directory)
    if index is None or (index.old_version, index.new_version) == (old_version, new_version):
        return index, None
    said = f"{describe_file(directory, INDEX_FILE)} records the step {index.old_version} → {index.new_version}"
    return None, f"{said}, not {old_version} → {new_version}: not replayed"
