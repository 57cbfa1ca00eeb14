"""The repository: discovery, refs, configuration and the git directory read with GitPython; the verbs of the
other modules of this package joined into one `Git`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.git.history import HistoryVerbs
from toolkit.git.index import IndexVerbs
from toolkit.git.mail import MailVerbs
from toolkit.git.refs import bare_loose_ref
from toolkit.git.runner import GitError

if TYPE_CHECKING:
    import git as gitpython

_GIT_DIRS: dict[Path, Path] = {}


@dataclass(frozen=True)
class Git(IndexVerbs, MailVerbs, HistoryVerbs):
    """A git repository (work tree or bare) and the domain's verbs on it."""

    def rev_parse(self, rev: str) -> str | None:
        """The commit `rev` names, or None (git's own rev-parse: see the package's doc for why not GitPython's)."""
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
        loose = bare_loose_ref(self.path, ref)
        if loose is not None:  # the cached bases' case: no GitPython import (~50-100 ms) on a warm build
            return loose
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
        section, name = _config_key(key)
        reader = self._repository().config_reader("repository")
        # `get`, not `get_value`: the text as written (get_value turns "false" into False, "12" into 12)
        value = reader.get(section, name, fallback=None) if reader.has_section(section) else None
        return None if value is None else str(value)

    def set_config(self, key: str, value: str) -> None:
        """Set a key of this repository's own configuration (written by GitPython, no git run)."""
        section, name = _config_key(key)
        with self._repository().config_writer("repository") as writer:
            writer.set_value(section, name, value)

    def common_dir(self) -> Path:
        """The directory the repository's worktrees share (the git directory itself without worktrees)."""
        return Path(self._repository().common_dir).resolve()

    def update_ref(self, ref: str, commit: str) -> None:
        self.run("update-ref", ref, commit)

    def delete_ref(self, ref: str) -> None:
        """Drop `ref` if it exists."""
        self.run("update-ref", "-d", ref, check=False)

    def set_head(self, ref: str) -> None:
        """Point HEAD at the branch `ref` (refs/heads/...)."""
        self.run("symbolic-ref", "HEAD", ref)

    def git_dir(self) -> Path:
        # Asked often (state files, private dirs): remembered per path while the directory it named exists.
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

    def version(self) -> str:
        """`git --version`'s line."""
        return self.out("--version")

    @staticmethod
    def init(path: Path, *, bare: bool = False) -> Git:
        path.mkdir(parents=True, exist_ok=True)
        repo = Git(path)
        repo.run("init", "-q", *(["--bare"] if bare else []))
        return repo

    @staticmethod
    def clone_local(source: Path, dest: Path) -> Git:
        """A clone of the local repository `source` at `dest` sharing its objects by hard links, no work tree
        checked out and no remote left."""
        Git(dest.parent).run("clone", "--quiet", "--local", "--no-checkout", str(source), str(dest))
        repo = Git(dest)
        repo.run("remote", "remove", "origin")
        return repo


def _config_key(key: str) -> tuple[str, str]:
    """`section.name` / `section.sub.name` as GitPython's (section, option): `section "sub"`."""
    section, _, name = key.rpartition(".")
    head, dot, sub = section.partition(".")
    return (f'{head} "{sub}"' if dot else head), name
