"""Real git repositories for the tests: upstreams, tagged releases, a maintainer's patch commits."""

from __future__ import annotations

from pathlib import Path

from toolkit.git import Git

# what `vpatch import` needs for a plain diff or an archive pair, which carry no author or date
DIFF_AUTHORSHIP = ("--author", "Fork Dev <dev@fork.example>", "--date", "2025-04-01")
AUTHOR_ENV = {
    "GIT_AUTHOR_NAME": "Upstream Dev",
    "GIT_AUTHOR_EMAIL": "dev@upstream.example",
    "GIT_AUTHOR_DATE": "2024-03-01T12:00:00+00:00",
    "GIT_COMMITTER_DATE": "2024-03-01T12:00:00+00:00",
}


def git_repo(path: Path, tree: dict[str, str | bytes], *, tag: str | None = None, message: str = "initial") -> Git:
    """A work-tree repository with `tree` committed (and tagged)."""
    repo = Git.init(path)
    commit_tree(repo, tree, message=message)
    if tag:
        repo.run("tag", "-a", tag, "-m", tag, env=AUTHOR_ENV)
    return repo


def commit_tree(repo: Git, tree: dict[str, str | bytes], *, message: str) -> str:
    for name, content in tree.items():
        file = repo.path / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(content.encode() if isinstance(content, str) else content)
    repo.run("add", "-A")
    repo.run("commit", "-q", "-m", message, env=AUTHOR_ENV)
    return repo.out("rev-parse", "HEAD")


def commit_in(
    checkout: Path,
    changes: dict[str, str],
    *,
    subject: str,
    body: str = "",
    headers: str = "Upstream-Status: Pending\nFeature: kv-routing",
) -> str:
    """Make a patch commit in a checkout the way a maintainer would."""
    repo = Git(checkout)
    for name, content in changes.items():
        file = checkout / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(content)
    repo.run("add", "-A")
    message = subject + "\n\n" + (body + "\n\n" if body else "") + headers + "\n"
    repo.run("commit", "-q", "-F", "-", input=message.encode(), env=AUTHOR_ENV)
    return repo.out("rev-parse", "HEAD")
