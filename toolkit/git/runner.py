"""Running git: the fixed environment and configuration every command gets, and the one place that starts it.

`Runner.run` passes arguments as a list (never a shell), ignores the user's global and system git
configuration (so output such as format-patch mails is byte-identical on every machine), and turns
failures into `GitError` carrying git's own message. Why it is `subprocess` and not GitPython's runner is
said, with the measurements, in the package's docstring (toolkit/git/__init__.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess

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


@dataclass(frozen=True)
class Result:
    """What a git command that may fail did: its exit code and output (for the verbs whose failure is an
    answer, such as `apply --check`, or is read, such as a stopped `git am`)."""

    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def output(self) -> str:
        """Standard output then standard error, decoded (what a person would have seen, in that order)."""
        return (self.stdout + self.stderr).decode("utf-8", "replace")

    @property
    def errors(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def checked(self, *command: str) -> Result:
        """This result, or GitError (naming `command`) when git failed."""
        if not self.ok:
            raise GitError(list(command), self.returncode, self.stdout, self.stderr)
        return self

    def last_error_line(self, default: str = "") -> str:
        lines = self.errors.strip().splitlines()
        return lines[-1] if lines else default


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


@dataclass(frozen=True)
class Runner:
    """A git repository (work tree or bare) that commands run in; the verbs' mixins build on it."""

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

    def attempt(self, *args: str, input: bytes | None = None, env: Mapping[str, str] | None = None) -> Result:
        """Run a command whose failure the caller reads (never raises for git's exit code)."""
        proc = self.run(*args, input=input, env=env, check=False)
        return Result(proc.returncode, proc.stdout, proc.stderr)
