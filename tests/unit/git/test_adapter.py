"""toolkit/git/ on real repositories: what it reads through GitPython and why commands still run in a
closed environment of their own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.paths import REPO_ROOT
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


# ---------------------------------------------------------------- the domain's verbs

AUTHOR = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_AUTHOR_DATE": "1700000000 +0000"}


def _commit_file(repo: Git, name: str, text: str, message: str) -> str:
    (repo.path / name).write_text(text)
    repo.add([name])
    assert repo.commit(message, {**AUTHOR, "GIT_COMMITTER_DATE": "1700000000 +0000"}).ok
    head = repo.rev_parse("HEAD")
    assert head is not None
    return head


def test_a_private_index_commits_a_patch_without_touching_work_tree_or_index(tmp_path: Path) -> None:
    repo, base = _repo_with_commit(tmp_path / "r")
    diff = b"--- a/a.txt\n+++ b/a.txt\n@@ -1 +1,2 @@\n a\n+b\n"
    index = repo.private_index(tmp_path / "index")
    index.read_tree(base)
    assert index.apply(diff, check=True).ok
    assert not index.apply(diff, check=True, reverse=True).ok  # not applied yet: nothing to reverse
    assert index.apply(diff).ok
    assert [(c.status, c.path) for c in index.changes(base)] == [("M", "a.txt")]
    (blob,) = index.read_blobs([index.changes(base)[0].new_id])
    assert blob == b"a\nb\n"
    commit = index.commit_tree(index.write_tree(), base, "two\n", AUTHOR)
    assert repo.blob(commit, "a.txt") == b"a\nb\n"
    assert repo.message(commit) == "two"
    assert repo.rev_parse("HEAD") == base and (repo.path / "a.txt").read_text() == "a\n"
    assert repo.nothing_staged("HEAD") and repo.is_clean()
    assert not index.apply(diff, check=True).ok  # the index now holds the change


def test_format_patch_patch_ids_and_range_diff(tmp_path: Path) -> None:
    repo, base = _repo_with_commit(tmp_path / "r")
    _commit_file(repo, "a.txt", "a\nb\n", "add b")
    head = _commit_file(repo, "c.txt", "c\n", "add c")
    mails = repo.format_patch(f"{base}..{head}")
    assert [m.split(b"\n", 1)[0] for m in mails] == [b"From " + b"0" * 40 + b" Mon Sep 17 00:00:00 2001"] * 2
    assert all(not m.endswith(b"\n\n") for m in mails)  # as `format-patch -o` writes each one
    assert repo.subjects(f"{base}..{head}") == ["add b", "add c"]
    separate = [repo.patch_ids(mail) for mail in mails]
    together = repo.patch_ids(b"".join(mails))
    assert [ids[0][0] for ids in separate] == [patch_id for patch_id, _ in together]
    assert len({patch_id for patch_id, _ in together}) == 2
    same = repo.range_diff(f"{base}..{head}", f"{base}..{head}")
    assert same.count(" = ") == 2, same


def test_configuration_written_through_gitpython_is_what_git_reads(tmp_path: Path) -> None:
    repo, _ = _repo_with_commit(tmp_path / "r")
    repo.set_config("rerere.enabled", "true")
    assert repo.out("config", "rerere.enabled") == "true"
    repo.set_config("rerere.enabled", "false")
    assert repo.out("config", "--bool", "rerere.enabled") == "false"
    assert repo.config_value("rerere.enabled") == "false"
    assert repo.common_dir() == (tmp_path / "r" / ".git").resolve()


def test_am_stops_and_is_resumed_or_abandoned(tmp_path: Path) -> None:
    repo, base = _repo_with_commit(tmp_path / "r")
    head = _commit_file(repo, "a.txt", "a\nb\n", "add b")
    (mail,) = repo.format_patch(f"{base}..{head}")
    (tmp_path / "0001.patch").write_bytes(mail)
    repo.reset_hard(base)
    assert repo.am([tmp_path / "0001.patch"]).ok
    assert repo.blob("HEAD", "a.txt") == b"a\nb\n"
    repo.reset_hard(base)
    _commit_file(repo, "a.txt", "x\n", "conflicting")
    stopped = repo.am([tmp_path / "0001.patch"])
    assert not stopped.ok and "Applying: add b" in stopped.output
    assert (repo.git_dir() / "rebase-apply").is_dir()
    repo.am_abort()
    assert not (repo.git_dir() / "rebase-apply").exists() and repo.blob("HEAD", "a.txt") == b"x\n"
    with pytest.raises(GitError, match="git am --keep-cr failed"):
        repo.am([tmp_path / "0001.patch"], check=True)


def test_no_git_recipe_is_spelt_out_outside_the_adapter() -> None:
    """Callers use the verbs: no `.run("apply", ...)`-style call names a git subcommand outside toolkit/git/."""
    import ast

    root = REPO_ROOT / "toolkit"
    subcommands = {
        "am", "apply", "blame", "cat-file", "checkout", "clean", "clone", "commit", "commit-tree", "config",
        "diff", "diff-index", "fast-import", "fetch", "for-each-ref", "format-patch", "fsck", "init", "log",
        "ls-files", "ls-tree", "mailinfo", "mailsplit", "patch-id", "range-diff", "read-tree", "remote",
        "rerere", "reset", "rev-list", "rev-parse", "show", "sparse-checkout", "status", "symbolic-ref",
        "update-ref", "write-tree", "add", "--version",
    }  # fmt: skip
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.is_relative_to(root / "git"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                first = node.args[0]
                named = isinstance(first, ast.Constant) and first.value in subcommands
                starred = isinstance(first, ast.Starred) and "ARGS" in ast.unparse(first)
                if node.func.attr in ("run", "out", "ok", "attempt") and (named or starred):
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno}")
    assert found == []


def _bare_with_loose_ref(tmp_path: Path) -> tuple[Git, Git, str]:
    """A work repository with one commit, and a bare one (as the cached bases are) holding it as the loose ref
    refs/heads/upstream: (work, bare, the commit)."""
    work, head = _repo_with_commit(tmp_path / "work")
    bare = Git.init(tmp_path / "bare.git", bare=True)
    bare.run("fetch", "-q", str(work.path), "HEAD")
    bare.update_ref("refs/heads/upstream", head)
    return work, bare, head


def test_ref_commit_of_a_bare_repository_reads_its_loose_ref_without_gitpython(tmp_path: Path) -> None:
    """The cached bases are bare repositories with a loose ref: a warm build reads it without importing
    GitPython; packed and symbolic refs still resolve (through GitPython), a loose ref over a packed one wins."""
    work, bare, head = _bare_with_loose_ref(tmp_path)
    probe = (
        "import sys; from pathlib import Path; from toolkit.git import Git; "
        f"print(Git(Path({str(bare.path)!r})).ref_commit('refs/heads/upstream'), 'git' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert result.stdout.split() == [head, "False"]
    bare.run("pack-refs", "--all")
    assert not (bare.path / "refs" / "heads" / "upstream").exists()
    assert bare.ref_commit("refs/heads/upstream") == head
    work.run("commit", "-q", "--allow-empty", "-m", "two", env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"})
    second = work.out("rev-parse", "HEAD")
    bare.run("fetch", "-q", str(work.path), "HEAD")
    bare.update_ref("refs/heads/upstream", second)  # loose again, beside the packed entry naming `head`
    assert bare.ref_commit("refs/heads/upstream") == second == bare.rev_parse("refs/heads/upstream")
    bare.run("symbolic-ref", "refs/heads/alias", "refs/heads/upstream")
    assert bare.ref_commit("refs/heads/alias") == second


def test_ref_commit_function_reads_a_loose_ref_without_the_verb_modules_and_falls_back_to_git(tmp_path: Path) -> None:
    """`toolkit.git.ref_commit(path, ref)` answers a bare repository's loose ref from its files alone (no
    `Git` class, its verb modules or GitPython loaded: a warm build's one git question) and anything else as
    `Git(path).ref_commit` does."""
    work, bare, head = _bare_with_loose_ref(tmp_path)
    probe = (
        "import sys; from pathlib import Path; from toolkit.git import GitError, ref_commit, unquote_name; "
        f"print(ref_commit(Path({str(bare.path)!r}), 'refs/heads/upstream'), unquote_name('\"caf\\\\303\\\\251\"'), "
        "sorted(m for m in ('git', 'toolkit.git.repo', 'toolkit.git.formats', 'toolkit.git.index') "
        "if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert result.stdout.split() == [head, "café", "[]"]
    from toolkit.git import ref_commit

    bare.run("pack-refs", "--all")  # packed: read through Git (GitPython)
    assert ref_commit(bare.path, "refs/heads/upstream") == head
    assert ref_commit(work.path, "refs/heads/master") == work.ref_commit("refs/heads/master")
    for ref in ("refs/missing", "HEAD", "refs/../HEAD"):
        assert ref_commit(bare.path, ref) is None
    assert ref_commit(tmp_path / "absent", "refs/heads/upstream") is None


def test_every_exported_name_of_the_adapter_resolves_and_unknown_ones_fail() -> None:
    import toolkit.git as adapter

    for name in adapter.__all__:
        assert getattr(adapter, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = adapter.nope  # type: ignore[attr-defined]
