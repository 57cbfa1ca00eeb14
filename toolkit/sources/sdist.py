"""The sdist source: the pinned tarball, verified and extracted safely, as a deterministic commit.

Members stream from the tarball straight into `git fast-import` (no files are
written), so materializing is fast and nothing hostile ever touches the disk.
Refused: absolute names, `..`, names inside `.git`, links pointing outside the
tree, hard links to anything but an earlier regular member, devices and fifos.
The commit has a fixed author, committer, date and message, so the same sdist
yields the same base commit id on every machine.
"""

from __future__ import annotations

import posixpath
from pathlib import Path, PurePosixPath

from toolkit.cache import locked, staging_dir
from toolkit.errors import VpatchError
from toolkit.git import ref_commit
from toolkit.index import fetch_artifact
from toolkit.model import Pin, check_tree_path
from toolkit.sources import Base, discard, read_stamp, write_stamp

BASE_REF = "refs/heads/upstream"
# 1980-01-01T00:00:00Z, the zip epoch: fixed so that the commit id depends only on the sdist.
BASE_DATE = "315532800 +0000"


def base_repo_path(cache_dir: Path, pin: Pin) -> Path:
    assert pin.sdist is not None
    return cache_dir / "bases" / "sdist" / f"{pin.sdist.sha256}.git"


def materialize_sdist(pin: Pin, cache_dir: Path, *, quiet: bool = False) -> Base:
    if pin.sdist is None:
        raise VpatchError(f"pin {pin.version} has no sdist to materialize")
    repo = base_repo_path(cache_dir, pin)
    with locked(repo):
        stamp = read_stamp(repo)
        # The stamp vouches for the object files holding the commit; the ref is read without a git run.
        if stamp is None or ref_commit(repo, BASE_REF) != stamp.get("commit"):
            discard(repo)  # missing, incomplete or damaged: rebuild, never use
            tarball = fetch_artifact(cache_dir, pin.sdist, quiet=quiet)
            with staging_dir(repo) as staged:
                commit = build_base_repo(tarball, staged, message=_message(pin))
                write_stamp(staged, commit=commit, sdist=pin.sdist.sha256)
                staged.rename(repo)
            reused = False
        else:
            commit = stamp["commit"]
            reused = True
    if pin.base_commit and commit != pin.base_commit:
        raise VpatchError(
            f"pin {pin.version}: the sdist {pin.sdist.file} gives base commit {commit}, "
            f"but the pin records {pin.base_commit}"
        )
    return Base(pin=pin, source="sdist", repo=repo, commit=commit, reused=reused)


def _message(pin: Pin) -> str:
    assert pin.sdist is not None
    return f"{pin.project} {pin.version} from {pin.sdist.file}\n\nsdist-sha256: {pin.sdist.sha256}\n"


def build_base_repo(tarball: Path, repo_dir: Path, *, message: str) -> str:
    """Create a bare repository in `repo_dir` whose `upstream` branch is the tarball's tree."""
    records = list(read_members(tarball))
    if not records:
        raise VpatchError("the tarball contains no files", path=tarball)
    return commit_records(records, repo_dir, message=message, source=tarball)


def commit_records(records: list[tuple[str, str, bytes]], repo_dir: Path, *, message: str, source: Path) -> str:
    """A bare repository in `repo_dir` whose `upstream` branch holds (path, git mode, content) `records`,
    committed with the fixed author and date (the same records give the same commit id)."""
    # Only here, where a base is made: a warm build reads the cached base's ref alone (toolkit.git.refs).
    from toolkit.git import TOOL_EMAIL, TOOL_NAME, Git, GitError, fast_import_path

    repo = Git.init(repo_dir, bare=True)
    stream = bytearray()
    marks: dict[str, tuple[str, int]] = {}
    for mark, (path, mode, content) in enumerate(records, start=1):
        stream += b"blob\nmark :%d\ndata %d\n" % (mark, len(content)) + content + b"\n"
        marks[path] = (mode, mark)
    msg = message.encode("utf-8")
    stream += (
        f"commit {BASE_REF}\nauthor {TOOL_NAME} <{TOOL_EMAIL}> {BASE_DATE}\n"
        f"committer {TOOL_NAME} <{TOOL_EMAIL}> {BASE_DATE}\n"
    ).encode()
    stream += b"data %d\n" % len(msg) + msg + b"\n"
    for path in sorted(marks):
        mode, mark = marks[path]
        # Names that are not UTF-8 were decoded with surrogateescape; git keeps their original bytes.
        stream += f"M {mode} :{mark} {fast_import_path(path)}\n".encode("utf-8", "surrogateescape")
    stream += b"\ndone\n"
    try:
        repo.fast_import(bytes(stream))
        repo.set_head(BASE_REF)
    except GitError as exc:
        raise VpatchError(f"cannot create the base commit: {exc}", path=source) from None
    commit = repo.rev_parse(BASE_REF)
    assert commit is not None
    return commit


def read_members(tarball: Path):
    """Yield (path, git mode, content) for each member, refusing anything unsafe."""
    import tarfile  # only when a base is built: every other command starts faster without it

    try:
        archive = tarfile.open(tarball, mode="r:*")  # noqa: SIM115 (closed by the with below)
    except (tarfile.TarError, OSError) as exc:
        raise VpatchError(f"not a readable tarball: {exc}", path=tarball) from None
    contents: dict[str, bytes] = {}
    modes: dict[str, str] = {}
    prefix: str | None = None
    with archive:
        try:
            for member in archive:
                name = member.name
                problem = check_tree_path(name.rstrip("/")) if name not in ("", ".") else None
                if problem:
                    raise VpatchError(f"refusing tarball member: {problem}", path=tarball)
                parts = PurePosixPath(name).parts
                if not parts:  # `.` (as in `tar -C dir -cf x.tar .`): the archive root, not a member
                    if member.isdir():
                        continue
                    raise VpatchError(f"refusing tarball member {name!r}: it is not a file name", path=tarball)
                top, rest = parts[0], "/".join(parts[1:])
                if prefix is None:
                    prefix = top
                elif top != prefix:
                    raise VpatchError(f"members under two top-level directories ({prefix!r}, {top!r})", path=tarball)
                if member.isdir():
                    continue
                if not rest:
                    raise VpatchError(f"member {name!r} is not inside the top-level directory", path=tarball)
                problem = check_tree_path(rest)
                if problem:
                    raise VpatchError(f"refusing tarball member: {problem}", path=tarball)
                if member.issym():
                    target = member.linkname
                    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rest), target))
                    if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
                        raise VpatchError(
                            f"refusing symlink {rest!r} -> {target!r}: it points outside the tree", path=tarball
                        )
                    contents[rest], modes[rest] = target.encode(), "120000"
                elif member.islnk():
                    target_parts = PurePosixPath(member.linkname).parts
                    target = "/".join(target_parts[1:]) if target_parts[:1] == (prefix,) else member.linkname
                    if target not in contents or modes.get(target) == "120000":
                        raise VpatchError(
                            f"refusing hard link {rest!r} -> {member.linkname!r}: not an earlier file in the tree",
                            path=tarball,
                        )
                    contents[rest], modes[rest] = contents[target], modes[target]
                elif member.isreg():
                    handle = archive.extractfile(member)
                    assert handle is not None
                    contents[rest] = handle.read()
                    modes[rest] = "100755" if member.mode & 0o111 else "100644"
                else:
                    raise VpatchError(f"refusing special file {rest!r} (device, fifo or unknown type)", path=tarball)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise VpatchError(f"corrupt tarball: {exc}", path=tarball) from None
    # Each link was checked on its own; followed through one another they must stay inside too.
    links = {
        path: content.decode("utf-8", "surrogateescape")
        for path, content in contents.items()
        if modes[path] == "120000"
    }
    for path in sorted(links):
        problem = _symlink_escape(path, links)
        if problem:
            raise VpatchError(f"refusing symlink {path!r} -> {links[path]!r}: {problem}", path=tarball)
    # A path that is both a file and a directory prefix of another file cannot be committed.
    dirs = {str(p) for path in contents for p in PurePosixPath(path).parents}
    clash = sorted(dirs & contents.keys())
    if clash:
        raise VpatchError(f"member {clash[0]!r} is both a file and a directory", path=tarball)
    for path in sorted(contents):
        yield path, modes[path], contents[path]


MAX_LINK_HOPS = 40  # as the kernel's ELOOP limit


def _symlink_escape(path: str, links: dict[str, str]) -> str | None:
    """Why the in-tree symlink `path` resolves outside the tree (following the tree's other links), or None.

    Components are resolved one at a time, as the kernel does: a `..` after a symlink leaves the
    link's target, not the directory holding the link (so `up -> ..` then `esc -> up/../x` escapes).
    """
    hops = 0

    def walk(start: list[str], target: str) -> list[str] | None:
        nonlocal hops
        if target.startswith("/"):
            return None
        resolved = list(start)
        for part in target.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not resolved:
                    return None
                resolved.pop()
                continue
            resolved.append(part)
            link = links.get("/".join(resolved))
            if link is not None:
                hops += 1
                if hops > MAX_LINK_HOPS:
                    raise _LinkLoop
                followed = walk(resolved[:-1], link)
                if followed is None:
                    return None
                resolved = followed
        return resolved

    try:
        return None if walk(path.split("/")[:-1], links[path]) is not None else "it points outside the tree"
    except _LinkLoop:
        return "too many levels of symbolic links"


class _LinkLoop(Exception):
    pass
