"""The bad-input corpus, continued (tests/unit/test_bad_input.py has the rest): the unsafe inputs of
issue 16. Each case asserts the exit code, the one `vpatch: error: path:line: message` line, and that
nothing was written: every file and link under the project (checkouts included) and the output
directory is byte-identical before and after.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness import AUTHOR_ENV, DIFF_AUTHORSHIP, default_tree
from toolkit.git import Git

LINK_PATCH = "0001-tests-link-the-readme.patch"


def everything(*roots: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for root in roots:
        for path in sorted(root.rglob("*")) if root.exists() else []:
            key = str(path)
            if path.name.endswith(".lock") and path.stat().st_size == 0:
                continue  # lock files are created empty and left: not content
            if path.is_symlink():
                files[key] = b"-> " + os.readlink(path).encode()
            elif path.is_file():
                files[key] = path.read_bytes()
    return files


def refused(ws, capsys, argv: tuple[str, ...], prefix: str, message: str, *extra: Path) -> str:
    before = everything(ws.root, *extra)
    capsys.readouterr()
    code = ws.run(*argv)
    out, err = capsys.readouterr()
    assert code == 1, (argv, out, err)
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith("vpatch: error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    line = errors[0].removeprefix("vpatch: error: ")
    assert line.startswith(prefix), line
    assert message in line, line
    assert everything(ws.root, *extra) == before, f"{argv} wrote something"
    return line


@pytest.fixture
def linked(pinned):
    """1.0 with one exported patch creating the in-tree link tests/readme -> ../README.md."""
    ws = pinned
    ws.write_series("1.0", {})
    assert ws.run("apply", "1.0") == 0
    checkout = ws.checkout("1.0")
    os.symlink("../README.md", checkout / "tests" / "readme")
    repo = Git(checkout)
    repo.run("add", "-A")
    message = "[Tests] link the readme\n\nUpstream-Status: Pending\nFeature: kv-routing\n"
    repo.run("commit", "-q", "-F", "-", input=message.encode(), env=AUTHOR_ENV)
    assert ws.run("export", "1.0") == 0
    assert (ws.series_dir("1.0") / LINK_PATCH).is_file()
    return ws


HAND_EDITED_TARGETS = {
    "absolute": ("/etc/passwd", "an absolute target"),
    "up-and-out": ("../../../../home", "a target outside the tree"),
    "into-git": ("../.git/hooks/pre-commit", "a target inside .git"),
    "through-a-name": ("../vllm/../../x", "'..' after a directory name"),
}


@pytest.mark.parametrize("case", list(HAND_EDITED_TARGETS))
@pytest.mark.parametrize("command", ["apply", "build"])
def test_a_hand_edited_link_target_leaving_the_tree(linked, capsys, tmp_path, case, command):
    ws = linked
    target, problem = HAND_EDITED_TARGETS[case]
    path = ws.series_dir("1.0") / LINK_PATCH
    text = path.read_text()
    assert text.count("+../README.md\n") == 1
    path.write_text(text.replace("+../README.md\n", f"+{target}\n"))
    line = text.split("\n").index("+../README.md") + 1
    out = tmp_path / "out"
    argv = {
        "apply": ("apply", "1.0", "--force"),
        "build": ("build", "1.0", "-o", str(out), "--no-verify"),
    }[command]
    refused(
        ws,
        capsys,
        argv,
        f"project/patches/vllm-1.0/{LINK_PATCH}:{line}: ",
        f"patch makes tests/readme a symlink to {target!r}: {problem}",
        out,
    )


IMPORT_PATHS = {
    # the name after -p1: `b//x` is `/x` (git apply counts components so), never `x`
    "double-slash-absolute": ("a//etc/passwd", "b//etc/passwd", "absolute path '/etc/passwd'"),
    "double-slash-in-tree": (
        "a//vllm/core/scheduler.py",
        "b//vllm/core/scheduler.py",
        "absolute path '/vllm/core/scheduler.py'",
    ),
    "dotdot-after-prefix": ("a/../../x", "b/../../x", "leaves the tree through '..'"),
    "dot-then-dotdot": ("a/./../x", "b/./../x", "leaves the tree through '..'"),
    "double-slash-inside": ("a/vllm//core/scheduler.py", "b/vllm//core/scheduler.py", "has an empty component"),
}


@pytest.mark.parametrize("case", list(IMPORT_PATHS))
@pytest.mark.parametrize("form", ["plain", "git", "mail"])
def test_import_refuses_a_path_form_that_leaves_or_bends_the_tree(pinned, capsys, tmp_path, case, form):
    ws = pinned
    old, new, message = IMPORT_PATHS[case]
    body = f"--- {old}\n+++ {new}\n@@ -1 +1 @@\n-VALUE = 1\n+VALUE = 2\n"
    lead = "README.md context\n"  # the diff starts on line 2: the error must name the diff's own line
    if form == "git":
        body = f"diff --git {old} {new}\n" + body
    text = lead + body
    if form == "mail":
        text = (
            "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
            "From: A <a@example.com>\nDate: Wed, 1 May 2024 10:00:00 +0200\nSubject: [PATCH] bend\n\n"
            "Upstream-Status: Pending\nFeature: kv-routing\n---\n" + body + "-- \n2.43.0\n"
        )
    diff = tmp_path / "bent.diff"
    diff.write_text(text)
    at = text.split("\n").index(body.split("\n")[0]) + 1
    refused(
        ws,
        capsys,
        ("import", str(diff), "--version", "1.0", *DIFF_AUTHORSHIP, "--feature", "kv-routing"),
        f"bent.diff:{at}: patch touches a path outside the tree: ",
        message,
    )


def test_import_of_a_git_commit_adding_a_link_out_of_the_tree(pinned, capsys, tmp_path):
    ws = pinned
    repo = Git.init(tmp_path / "forkrepo")
    for name, content in default_tree("1.0").items():
        (repo.path / name).parent.mkdir(parents=True, exist_ok=True)
        (repo.path / name).write_bytes(content.encode() if isinstance(content, str) else content)
    repo.run("add", "-A")
    repo.run("commit", "-q", "-m", "upstream", env=AUTHOR_ENV)
    os.symlink("../../../etc/shadow", repo.path / "vllm" / "shadow")
    repo.run("add", "-A")
    repo.run("commit", "-q", "-m", "[Core] link\n\nUpstream-Status: Pending\nFeature: kv-routing", env=AUTHOR_ENV)
    line = refused(
        ws,
        capsys,
        ("import", "--git", str(repo.path), "HEAD~1..HEAD", "--version", "1.0"),
        "",
        "symlink change to",
    )
    assert "vllm/shadow" in line
