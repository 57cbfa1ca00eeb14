"""Verbs on the work tree and its index: apply a diff, reset, clean, stage, commit, and ask what is unmerged."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from toolkit.git.runner import Result, Runner

LITERAL_PATHS = {"GIT_LITERAL_PATHSPECS": "1"}  # paths given to git mean themselves, never a glob
UNMERGED_CODES = ("DD", "AU", "UD", "UA", "DU", "AA", "UU")  # `git status` XY codes of an unmerged path


class WorktreeVerbs(Runner):
    def apply(
        self,
        patch: Path | bytes,
        *,
        cached: bool = False,
        index: bool = False,
        reverse: bool = False,
        check: bool = False,
        verbose: bool = False,
        reject: bool = False,
        context: int | None = None,
        quiet_whitespace: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        """`git apply` of a patch file or of diff bytes (on standard input) to the work tree (`index`: and the
        index; `cached`: to the index only, see `toolkit.git.Index`); `check` only asks whether it would
        apply. Read what it said with `toolkit.git.read_apply_output`."""
        args = ["apply"]
        args += ["--cached"] if cached else []
        args += ["--reverse"] if reverse else []
        args += ["--check"] if check else []
        args += [f"-C{context}"] if context is not None else []
        args += ["--index"] if index else []
        args += ["--reject"] if reject else []
        args += ["-v"] if verbose else []
        args += ["--whitespace=nowarn"] if quiet_whitespace else []
        args.append("-" if isinstance(patch, bytes) else str(patch))
        return self.attempt(*args, input=patch if isinstance(patch, bytes) else None, env=env)

    def reset_hard(self, rev: str) -> None:
        """Work tree, index and branch at `rev` (untracked files stay: see `clean_all`)."""
        self.run("reset", "--quiet", "--hard", rev)

    def reset_soft(self, rev: str) -> None:
        """The branch at `rev`, index and work tree as they are."""
        self.run("reset", "-q", "--soft", rev)

    def clean_all(self) -> None:
        """Remove every untracked and ignored file."""
        self.run("clean", "-fdxq")

    def add(self, paths: Sequence[str], *, removals: bool = False, literal: bool = False) -> None:
        """Stage `paths` (`removals`: deleted ones too, `git add -A`; `literal`: no pathspec magic)."""
        self.run("add", *(["-A"] if removals else []), "--", *paths, env=LITERAL_PATHS if literal else None)

    def nothing_staged(self, against: str | None = None) -> bool:
        """Whether the index equals `against` (a commit; by default HEAD's tree as `git diff --cached` sees it)."""
        return self.run("diff", "--cached", "--quiet", *([against] if against else []), check=False).returncode == 0

    def commit(self, message: str, env: Mapping[str, str]) -> Result:
        """Commit the index with `message` (whitespace cleaned up, no hooks); `env` sets author and dates."""
        return self.attempt(
            "commit", "--quiet", "--no-verify", "--cleanup=whitespace", "-F", "-", input=message.encode(), env=env
        )

    def status(self, *, untracked: str = "normal") -> str:
        """`git status --porcelain` text (`untracked`: no, normal or all)."""
        if untracked == "normal":
            return self.out("status", "--porcelain")
        return self.out("status", "--porcelain", f"--untracked-files={untracked}")

    def is_clean(self) -> bool:
        return self.run("status", "--porcelain", "--untracked-files=no").stdout.strip() == b""

    def unmerged(self) -> list[tuple[str, str]]:
        """(status code, path) of every unmerged path (`git status` XY codes: UU, AA, DU, UD ...)."""
        raw = self.run("status", "--porcelain", "-z", "--untracked-files=no").stdout.decode("utf-8", "replace")
        return [(item[:2], item[3:]) for item in raw.split("\0") if item[:2] in UNMERGED_CODES]

    def unmerged_names(self) -> list[str]:
        """The unmerged paths as `git diff --name-only` prints them (C-quoted when not plain ASCII)."""
        return self.out("diff", "--name-only", "--diff-filter=U").splitlines()

    def rerere_remaining(self) -> set[str]:
        """The conflicted paths rerere did not resolve."""
        return set(self.out("rerere", "remaining").splitlines())

    def rerere_record(self) -> None:
        """Let rerere record the resolutions made so far (a failure leaves nothing recorded, as git does)."""
        self.run("rerere", check=False)

    def remerge(self, path: str) -> None:
        """Write `path`'s conflicted merge again from the index's stages (`git checkout -m`)."""
        self.run("checkout", "-m", "--", path)

    def checkout_branch(self, branch: str, commit: str) -> None:
        """Create or reset `branch` at `commit` and check it out."""
        self.run("checkout", "--quiet", "-B", branch, commit)

    def sparse_checkout(self, patterns: Sequence[str]) -> None:
        """Only files matching `patterns` (gitignore syntax, not cone mode) are written to the work tree."""
        self.run("sparse-checkout", "set", "--no-cone", "--stdin", input="".join(f"{p}\n" for p in patterns).encode())

    def tracked_paths(self) -> list[bytes]:
        """Every path in the index, as git stores it (undecoded)."""
        return [p for p in self.run("ls-files", "-z").stdout.split(b"\x00") if p]
