"""Verbs that read or fetch history and objects: commits and their messages, diffs between commits, blobs,
blame, tags, and the verbs that bring objects in (fetch, fast-import)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from toolkit.git.runner import Result, Runner

LITERAL = {"GIT_LITERAL_PATHSPECS": "1"}


class HistoryVerbs(Runner):
    def commits(self, range_: str) -> list[str]:
        text = self.out("rev-list", "--reverse", "--topo-order", range_)
        return text.split() if text else []

    def merges(self, range_: str) -> list[str]:
        return self.out("rev-list", "--merges", range_).split()

    def subjects(self, range_: str) -> list[str]:
        """The subject of each commit of `range_`, oldest first."""
        return self.out("log", "--reverse", "--format=%s", range_).split("\n")

    def short_and_subject(self, commit: str) -> tuple[str, str]:
        """The commit's abbreviated id and subject."""
        short, subject = self.out("log", "-1", "--format=%h%x00%s", commit).split("\0", 1)
        return short, subject

    def message(self, commit: str) -> str:
        return self.out("log", "-1", "--format=%B", commit)

    def commit_records(self, range_: str) -> dict[str, tuple[str, str, str, str]]:
        """{commit: (author name, email, raw author date, message)} of the commits of `range_`."""
        raw = self.run(
            "log",
            "--no-show-signature",
            "--reverse",
            "--topo-order",
            "--format=%H%x00%an%x00%ae%x00%ad%x00%B%x00%x01",
            "--date=raw",
            range_,
        ).stdout.decode("utf-8", "replace")
        records = {}
        for record in raw.split("\x00\x01")[:-1]:
            sha, author, email, date, message = record.lstrip("\n").split("\x00", 4)
            records[sha] = (author, email, date, message)
        return records

    def commit_diffs(self, range_: str, diff_args: Sequence[str]) -> dict[str, bytes]:
        """{commit: its diff against its parent} of the commits of `range_` (`diff_args` shape the diffs)."""
        raw = self.run(
            "log", "--no-show-signature", "--reverse", "--topo-order", "--format=%x00%H", "-p", *diff_args, range_
        ).stdout
        diffs: dict[str, bytes] = {}
        for block in re.split(rb"(?:^|\n)\x00", raw):
            if block:
                sha_raw, _, diff = block.partition(b"\n")
                diffs[sha_raw.decode()] = diff
        return diffs

    def changed_blobs(self, range_: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
        """Each commit of `range_` with {path: (old blob, new blob)} from `git log --raw`."""
        raw = self.out("log", "--reverse", "--raw", "--no-abbrev", "--no-renames", "--format=%x00%H", range_)
        commits: list[tuple[str, dict[str, tuple[str, str]]]] = []
        for block in raw.split("\x00")[1:]:
            lines = block.strip("\n").split("\n")
            files = {}
            for line in lines[1:]:
                if line.startswith(":"):
                    meta, _, path = line.partition("\t")
                    parts = meta.split()
                    files[path] = (parts[2], parts[3])
            commits.append((lines[0], files))
        return commits

    def commits_touching(self, range_: str, paths: Sequence[str]) -> list[str]:
        """The non-merge commits of `range_` (full history) touching one of `paths` (literal), newest first."""
        pathspecs = [f":(literal){p}" for p in paths]
        return self.out("log", "--no-merges", "--full-history", "--format=%H", range_, "--", *pathspecs).split()

    def patches_of(self, commits: Sequence[str]) -> bytes:
        """`git log -p` of exactly `commits`, each headed `commit <id>` (what `patch_ids` reads)."""
        revs = ("\n".join(commits) + "\n").encode()
        return self.run(
            "log",
            "--stdin",
            "--no-walk=unsorted",
            "-p",
            "--no-renames",
            "--full-index",
            "--format=commit %H",
            input=revs,
        ).stdout

    def subjects_of(self, commits: Sequence[str]) -> dict[str, str]:
        revs = ("\n".join(commits) + "\n").encode()
        subjects = {}
        for line in self.run("log", "--stdin", "--no-walk=unsorted", "--format=%H %s", input=revs).stdout.splitlines():
            commit, _, subject = line.decode("utf-8", "replace").partition(" ")
            subjects[commit] = subject
        return subjects

    def diff(self, old: str, new: str, diff_args: Sequence[str], paths: Sequence[str] | None = None) -> bytes:
        """`git diff` of two commits (or trees), `paths` literal when given."""
        tail = ["--", *paths] if paths is not None else []
        return self.run("diff", *diff_args, old, new, *tail, env=LITERAL if paths is not None else None).stdout

    def name_status(self, old: str, new: str) -> str:
        """`git diff --name-status` (no rename detection) of two commits."""
        return self.out("diff", "--name-status", "--no-renames", old, new)

    def added_or_modified(self, old: str, new: str) -> list[str]:
        """The paths `new` adds or modifies against `old`, verbatim."""
        out = self.run("diff", "--name-only", "-z", "--no-renames", "--diff-filter=AM", old, new).stdout
        return [name for name in out.decode("utf-8", "replace").split("\0") if name]

    def blob(self, rev: str, path: str) -> bytes | None:
        """The file `path` at `rev`, or None when it has none."""
        proc = self.run("cat-file", "blob", f"{rev}:{path}", check=False)
        return proc.stdout if proc.returncode == 0 else None

    def show_file(self, rev: str, path: str) -> Result:
        """`git show REV:PATH`: the file as git shows it (`rev` "" for the index's version); read `.stdout`
        once `.ok` (or `.checked("show")`)."""
        return self.attempt("show", f"{rev}:{path}")

    def blob_ids(self, rev: str, paths: Sequence[str]) -> dict[str, str]:
        """{path: blob id} at `rev` for those of `paths` that are files there."""
        out = self.run("ls-tree", "-r", "-z", rev, "--", *paths).stdout.decode("utf-8", "replace")
        ids = {}
        for entry in out.split("\0"):
            meta, _, path = entry.partition("\t")
            fields = meta.split()
            if len(fields) == 3 and fields[1] == "blob":
                ids[path] = fields[2]
        return ids

    def blame(self, rev: str, path: str, line: int | None = None, *, literal: bool = False) -> Result:
        """`git blame --porcelain` of `path` at `rev` (of one line when given)."""
        lines = ["-L", f"{line},{line}"] if line is not None else []
        return self.attempt("blame", "--porcelain", *lines, rev, "--", path, env=LITERAL if literal else None)

    def refs(self, prefix: str) -> dict[str, str] | None:
        """{ref: object id} of every ref under `prefix` (None when git cannot read the repository)."""
        proc = self.run("for-each-ref", "--format=%(refname) %(objectname)", prefix, check=False)
        if proc.returncode != 0:
            return None
        return dict(line.split(" ", 1) for line in proc.stdout.decode("utf-8", "replace").splitlines())

    def fetch(self, remote: str, refspec: str, *, force: bool = False) -> None:
        self.run("fetch", "--quiet", "--no-tags", *(["--force"] if force else []), remote, refspec)

    def check_connectivity(self) -> None:
        """Raise unless every object the refs reach is present."""
        self.run("fsck", "--no-dangling", "--no-progress", "--connectivity-only")

    def fast_import(self, stream: bytes, env: Mapping[str, str] | None = None) -> None:
        """Write the objects and refs of a `git fast-import` stream (ending in `done`)."""
        self.run("fast-import", "--quiet", "--done", input=stream, env=env)
