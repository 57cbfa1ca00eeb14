"""toolkit/git.py on real repositories: what it reads through GitPython and why commands still run in a
closed environment of their own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from toolkit.git import Git, GitError


def _repo_with_commit(path: Path) -> tuple[Git, str]:
    repo = Git.init(path)
    (path / "a.txt").write_text("a\n")
    repo.run("add", "a.txt")
    repo.run("commit", "-q", "-m", "one", env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"})
    return repo, repo.out("rev-parse", "HEAD")


def test_ref_commit_reads_loose_packed_and_symbolic_refs(tmp_path: Path) -> None:
    repo, head = _repo_with_commit(tmp_path / "r")
    repo.update_ref("refs/vpatch/base", head)
    assert repo.ref_commit("refs/vpatch/base") == head
    repo.run("pack-refs", "--all")
    assert not (repo.git_dir() / "refs" / "vpatch" / "base").exists()
    assert repo.ref_commit("refs/vpatch/base") == head  # now only in packed-refs
    repo.run("symbolic-ref", "refs/vpatch/alias", "refs/vpatch/base")
    assert repo.ref_commit("refs/vpatch/alias") == head


@pytest.mark.parametrize("ref", ["refs/missing", "HEAD", "refs/../HEAD", "refs/vpatch/../../config"])
def test_ref_commit_is_none_for_what_is_no_ref_under_refs(tmp_path: Path, ref: str) -> None:
    repo, _ = _repo_with_commit(tmp_path / "r")
    assert repo.ref_commit(ref) is None


def test_ref_commit_is_none_outside_a_repository(tmp_path: Path) -> None:
    assert Git(tmp_path).ref_commit("refs/heads/main") is None
    assert Git(tmp_path / "absent").ref_commit("refs/heads/main") is None


def test_discover_and_git_dir_for_work_trees_and_bare_repositories(tmp_path: Path) -> None:
    work, _ = _repo_with_commit(tmp_path / "work")
    bare = Git.init(tmp_path / "bare.git", bare=True)
    found = Git.discover(tmp_path / "work")
    assert found is not None and found.path.resolve() == (tmp_path / "work").resolve()
    assert work.git_dir() == (tmp_path / "work" / ".git").absolute()
    assert Git.discover(tmp_path / "bare.git") is not None
    assert bare.git_dir().resolve() == (tmp_path / "bare.git").resolve()
    (tmp_path / "plain").mkdir()
    assert Git.discover(tmp_path / "plain") is None
    assert Git.discover(tmp_path / "nowhere") is None
    with pytest.raises(GitError, match="not a git repository"):
        Git(tmp_path / "plain").git_dir()


def test_config_value_reads_only_the_repositorys_own_configuration(tmp_path: Path) -> None:
    repo, _ = _repo_with_commit(tmp_path / "r")
    repo.run("remote", "add", "origin", "https://example.invalid/vllm.git")
    repo.run("config", "vpatch.some-key", "value")
    assert repo.config_value("remote.origin.url") == "https://example.invalid/vllm.git"
    assert repo.config_value("vpatch.some-key") == "value"
    assert repo.config_value("remote.upstream.url") is None
    assert repo.config_value("user.name") is None  # never the user's global configuration


def test_commands_ignore_an_inherited_git_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Why Git.run keeps its own environment: a GIT_DIR left by a hook must not redirect our commands."""
    ours, ours_head = _repo_with_commit(tmp_path / "ours")
    theirs, _ = _repo_with_commit(tmp_path / "theirs")
    (tmp_path / "theirs" / "b.txt").write_text("b\n")
    theirs.run("add", "b.txt")
    theirs.run("commit", "-q", "-m", "two", env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"})
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "theirs" / ".git"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(tmp_path / "theirs" / ".git" / "index"))
    assert os.environ["GIT_DIR"].endswith("theirs/.git")
    assert ours.out("rev-parse", "HEAD") == ours_head
    assert ours.commits("HEAD") == [ours_head]
