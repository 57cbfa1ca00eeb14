"""A git range of a local repository as a source: one unit per commit."""

from __future__ import annotations

import re
from pathlib import Path

from toolkit.errors import VpatchError
from toolkit.git import Git, GitError
from toolkit.importer.paths import resolve_files
from toolkit.importer.units import PLAIN_DIFF_ARGS, Source, Unit, parse_unit_diff


class GitRangeSource(Source):
    """Commits `A..B` of a local repository, one unit per commit."""

    kind = "git"

    def __init__(self, repo: Path, range_: str) -> None:
        self.repo = repo
        self.range = range_
        self.label = f"{repo} {range_}"

    def units(self, tree: set[str], notes: list[str]) -> list[Unit]:
        if not self.repo.is_dir():
            raise VpatchError("no such repository", path=self.repo)
        if self.range.startswith("-") or ".." not in self.range:
            raise VpatchError(f"--git needs a range A..B, not {self.range!r}", path=self.repo)
        found = Git.discover(self.repo)
        if found is None:
            raise VpatchError("not a git repository", path=self.repo)
        repo = Git(self.repo)
        for side in re.split(r"\.\.\.?", self.range, maxsplit=1):
            if side and (side.startswith("-") or repo.rev_parse(side) is None):
                raise VpatchError(f"unknown revision {side!r} in the range {self.range}", path=self.repo)
        try:
            commits = repo.commits(self.range)
            merges = repo.merges(self.range)
        except GitError as exc:
            raise VpatchError(f"bad range {self.range!r}: {exc}", path=self.repo) from None
        if not commits:
            raise VpatchError(f"the range {self.range} holds no commits", path=self.repo)
        if merges:
            raise VpatchError(
                f"the range {self.range} holds merge commit {merges[0][:12]}; import a linear range", path=self.repo
            )
        name = self._repo_name(repo)
        meta = repo.commit_records(self.range)
        diffs = repo.commit_diffs(self.range, PLAIN_DIFF_ARGS)
        units = []
        for sha in commits:
            author, email, date, message = meta[sha]
            subject, _, body = message.strip("\n").partition("\n\n")
            subject = " ".join(subject.split())
            where = f"{self.repo} {sha[:12]}"
            files = parse_unit_diff(diffs.get(sha, b""), where, 1)
            changes = resolve_files(files, tree, where, level=1)
            if not changes:
                notes.append(f"commit {sha[:12]} ({subject}): changes nothing, skipped")
                continue
            units.append(
                Unit(
                    f"commit {sha[:12]} ({subject})",
                    where,
                    f"import, git {name} {sha}",
                    changes,
                    subject=subject or None,
                    body=body,
                    author=(author, email),
                    date=date,
                )
            )
        if not units:
            raise VpatchError(f"the commits of {self.range} change nothing", path=self.repo)
        return units

    def _repo_name(self, repo: Git) -> str:
        """The repository as named in Origin: its origin remote's URL, else its directory name (no local paths)."""
        url = (repo.config_value("remote.origin.url") or "").strip()
        if url and "://" in url and "@" not in url.split("://", 1)[1].split("/", 1)[0]:
            return url
        return self.repo.resolve().name
