"""Verbs on a private index: read a tree into it, apply a patch to it, write its tree, commit that tree.

A private index (`GIT_INDEX_FILE`) builds commits and checks patches without touching the work tree or the
repository's own index; with `objects` (for a bare repository), the objects it writes go to a scratch
directory too, the repository's own objects read as alternates (the repository stays unchanged).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from toolkit.git.runner import Result
from toolkit.git.worktree import WorktreeVerbs


@dataclass(frozen=True)
class IndexChange:
    """One path of `git diff-index --raw` of the index against a commit."""

    status: str  # A, M, T or D
    path: str
    new_mode: str
    old_id: str
    new_id: str


@dataclass(frozen=True)
class Index:
    """A private index file of `repo` (see the module)."""

    repo: WorktreeVerbs
    file: Path
    objects: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        env = {"GIT_INDEX_FILE": str(self.file)}
        if self.objects is not None:
            env["GIT_OBJECT_DIRECTORY"] = str(self.objects)
            env["GIT_ALTERNATE_OBJECT_DIRECTORIES"] = str(self.repo.path / "objects")
        return env

    def read_tree(self, rev: str) -> None:
        self.repo.run("read-tree", rev, env=self.env)

    def apply(
        self, patch: Path | bytes, *, check: bool = False, reverse: bool = False, quiet_whitespace: bool = False
    ) -> Result:
        """`git apply --cached` of a patch file or of diff bytes to this index."""
        return self.repo.apply(
            patch, cached=True, check=check, reverse=reverse, quiet_whitespace=quiet_whitespace, env=self.env
        )

    def write_tree(self) -> str:
        return self.repo.out("write-tree", env=self.env)

    def commit_tree(self, tree: str, parent: str, message: str, env: Mapping[str, str]) -> str:
        """A commit of `tree` on `parent`; `env` gives its author and dates (the committer is the toolkit)."""
        proc = self.repo.run("commit-tree", tree, "-p", parent, input=message.encode(), env={**self.env, **env})
        return proc.stdout.decode().strip()

    def changes(self, commit: str) -> list[IndexChange]:
        """What the index changes against `commit`'s tree, paths verbatim (-z: UTF-8 as stored, not C-quoted)."""
        raw = self.repo.run(
            "diff-index", "--cached", "--raw", "-z", "--no-abbrev", "--no-renames", commit, env=self.env
        ).stdout
        fields = raw.split(b"\0")
        changes = []
        for meta_bytes, path_bytes in zip(fields[0::2], fields[1::2], strict=False):
            if not meta_bytes:
                continue
            _, new_mode, old_id, new_id, status = meta_bytes.decode().lstrip(":").split()
            changes.append(
                IndexChange(status[0], path_bytes.decode("utf-8", "surrogateescape"), new_mode, old_id, new_id)
            )
        return changes

    def read_blobs(self, ids: Sequence[str]) -> list[bytes]:
        """The contents of the blobs `ids` (written through this index or the repository's), in order, read
        with one `git cat-file --batch`."""
        if not ids:
            return []
        output = self.repo.run(
            "cat-file", "--batch", input="".join(f"{blob}\n" for blob in ids).encode(), env=self.env
        ).stdout
        contents, position = [], 0
        for blob in ids:
            header_end = output.index(b"\n", position)
            header = output[position:header_end].split()
            if header[0].decode() != blob:
                raise ValueError(f"git cat-file returned {header[0].decode()} for {blob}")
            size = int(header[2])
            contents.append(output[header_end + 1 : header_end + 1 + size])
            position = header_end + 1 + size + 1
        return contents


class IndexVerbs(WorktreeVerbs):
    def private_index(self, file: Path, *, objects: Path | None = None) -> Index:
        """A private index kept in `file` (which the caller's scratch directory holds); see the module."""
        return Index(self, file, objects)
