"""The only module that runs git or reads a repository.

Reading without running git goes through GitPython: repository discovery (`Git.discover`, `git_dir`),
refs (`ref_commit` reads loose and packed refs) and the repository's own configuration (`config_value`).
GitPython is imported on first use (about 80 ms), so a build from warm caches, which never reads a
repository, does not pay for it.

Commands go through `Git.run`, which passes arguments as a list (never a shell), ignores the user's
global and system git configuration (so output such as format-patch mails is byte-identical on every
machine), and turns failures into `GitError` carrying git's own message. It starts git with
`subprocess` rather than GitPython's command runner (`git.cmd.Git.execute`) because that runner builds
the child's environment from a copy of `os.environ` and can only add to it: it cannot drop an inherited
`GIT_DIR`, `GIT_INDEX_FILE`, `GIT_WORK_TREE` or `GIT_OBJECT_DIRECTORY` (set when vpatch runs from a git
hook or `git rebase --exec`), any of which would point our commands at the user's repository instead of
ours; and it feeds standard input only from a file object, where `am`, `apply`, `patch-id` and
`mailinfo` take bytes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess

    import git as gitpython

# The identity used for commits the toolkit makes itself (base commits, applied patches' committer).
TOOL_NAME = "vpatch"
TOOL_EMAIL = "vpatch@localhost"

# Settings that would change the bytes of generated patches or the content of commits.
STABLE_CONFIG: tuple[tuple[str, str], ...] = (
    ("core.autocrlf", "false"),
    ("core.safecrlf", "false"),
    ("core.abbrev", "12"),
    ("core.quotepath", "true"),
    ("diff.noprefix", "false"),
    ("diff.mnemonicprefix", "false"),
    ("diff.algorithm", "myers"),
    ("diff.renames", "false"),
    ("diff.relative", "false"),
    ("diff.suppressBlankEmpty", "false"),
    ("format.signature", ""),
    ("format.numbered", "false"),
    ("format.coverLetter", "false"),
    ("gc.auto", "0"),
    ("init.defaultBranch", "main"),
    ("advice.detachedHead", "false"),
    ("commit.gpgSign", "false"),
    ("tag.gpgSign", "false"),
    ("am.keepcr", "true"),
    ("am.threeWay", "false"),
    ("i18n.commitEncoding", "UTF-8"),
    ("i18n.logOutputEncoding", "UTF-8"),
)


def fast_import_path(path: str) -> str:
    """A path as `git fast-import` reads it in an `M` command (C-style quoted only when it must be)."""
    if path.startswith('"') or "\n" in path or "\\" in path:
        escaped = path.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    return path


class GitError(Exception):
    def __init__(self, args: Sequence[str], returncode: int, stdout: bytes, stderr: bytes) -> None:
        self.args_ = list(args)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        message = stderr.decode("utf-8", "replace").strip() or stdout.decode("utf-8", "replace").strip()
        first = message.splitlines()[-1] if message else f"exit code {returncode}"
        super().__init__(f"git {' '.join(args[:2])} failed: {first}")

    @property
    def output(self) -> str:
        return (self.stdout + self.stderr).decode("utf-8", "replace")


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        {
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_EDITOR": "true",
            "GIT_MERGE_AUTOEDIT": "no",
            "GIT_COMMITTER_NAME": TOOL_NAME,
            "GIT_COMMITTER_EMAIL": TOOL_EMAIL,
            "LC_ALL": "C",
            "LANG": "C",
            "TZ": "UTC",
        }
    )
    if extra:
        env.update(extra)
    return env


_GIT_DIRS: dict[Path, Path] = {}


@dataclass(frozen=True)
class Git:
    """A git repository (work tree or bare) that commands run in."""

    path: Path

    def run(
        self,
        *args: str,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        argv = ["git"]
        for key, value in STABLE_CONFIG:
            argv += ["-c", f"{key}={value}"]
        argv += list(args)
        import subprocess  # here: a build from warm caches runs no git at all and skips the import

        proc = subprocess.run(
            argv,
            cwd=self.path,
            input=input,
            env=git_env(env),
            capture_output=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise GitError(list(args), proc.returncode, proc.stdout, proc.stderr)
        return proc

    def out(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        return self.run(*args, env=env).stdout.decode("utf-8", "replace").strip()

    def ok(self, *args: str) -> bool:
        return self.run(*args, check=False).returncode == 0

    def rev_parse(self, rev: str) -> str | None:
        proc = self.run("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
        return proc.stdout.decode().strip() if proc.returncode == 0 else None

    def _repository(self) -> gitpython.Repo:
        import git as gitpython

        return gitpython.Repo(self.path)

    @staticmethod
    def discover(path: Path) -> Git | None:
        """The repository `path` is (a work tree or a bare repository), or None; git is not run."""
        import git as gitpython

        try:
            repo = gitpython.Repo(path)
        except (gitpython.InvalidGitRepositoryError, gitpython.NoSuchPathError):
            return None
        return Git(Path(repo.working_tree_dir or repo.git_dir))

    def ref_commit(self, ref: str) -> str | None:
        """The object id `ref` (refs/..., loose or packed, symbolic refs followed) names, read without
        running git; None when there is no such ref or this is no repository. Unlike `rev_parse` it does
        not check that the object exists; callers pair it with their own check."""
        if not ref.startswith("refs/") or ".." in ref:
            return None
        import git as gitpython
        from git.refs.symbolic import SymbolicReference

        try:
            sha = SymbolicReference.dereference_recursive(self._repository(), ref)
        except (ValueError, OSError, gitpython.InvalidGitRepositoryError, gitpython.NoSuchPathError):
            return None
        return sha if len(sha) == 40 and all(c in "0123456789abcdef" for c in sha) else None

    def config_value(self, key: str) -> str | None:
        """A key (`section.name` or `section.subsection.name`) of this repository's own configuration
        (never the user's or the system's, as everywhere here); None when unset."""
        section, _, name = key.rpartition(".")
        head, dot, sub = section.partition(".")
        section_name = f'{head} "{sub}"' if dot else head
        reader = self._repository().config_reader("repository")
        value = reader.get_value(section_name, name, default=None) if reader.has_section(section_name) else None
        return None if value is None else str(value)

    def update_ref(self, ref: str, commit: str) -> None:
        self.run("update-ref", ref, commit)

    def git_dir(self) -> Path:
        # Asked often (state files, private dirs) and a git run each time: remembered per path while the
        # directory it named still exists.
        where = self.path.absolute()
        known = _GIT_DIRS.get(where)
        if known is None or not known.is_dir():
            import git as gitpython

            try:
                found = gitpython.Repo(where).git_dir
            except (gitpython.InvalidGitRepositoryError, gitpython.NoSuchPathError):
                raise GitError(
                    ["rev-parse", "--absolute-git-dir"], 128, b"", f"not a git repository: {where}".encode()
                ) from None
            known = _GIT_DIRS[where] = Path(found).absolute()
        return known

    def is_clean(self) -> bool:
        return self.run("status", "--porcelain", "--untracked-files=no").stdout.strip() == b""

    def commits(self, range_: str) -> list[str]:
        text = self.out("rev-list", "--reverse", "--topo-order", range_)
        return text.split() if text else []

    @staticmethod
    def init(path: Path, *, bare: bool = False) -> Git:
        path.mkdir(parents=True, exist_ok=True)
        repo = Git(path)
        repo.run("init", "-q", *(["--bare"] if bare else []))
        return repo
