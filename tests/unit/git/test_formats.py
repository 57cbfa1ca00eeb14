"""toolkit.git.formats against text real git writes: quoted paths and `git apply -v` output."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from toolkit.git import (
    ApplyingWithRejects,
    CheckingPatch,
    FileRefused,
    Git,
    HunkOffset,
    HunkRejected,
    PatchFailedAt,
    printed_path,
    quote_path,
    read_apply_output,
    unquote_path,
)

NAMES = ["plain.py", "café.py", 'say "hi".py', "tab\there.py", "back\\slash.py", "sp ace.py"]


def _repo(tmp_path: Path, files: dict[str, bytes]) -> Git:
    repo = Git.init(tmp_path / "repo")
    for name, data in files.items():
        (repo.path / name).write_bytes(data)
    repo.run("add", "-A")
    repo.run("commit", "-q", "-m", "base", env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"})
    return repo


@pytest.mark.parametrize("name", NAMES)
def test_paths_are_quoted_as_git_quotes_them_and_read_back(tmp_path: Path, name: str) -> None:
    repo = _repo(tmp_path, {name: b"a\n"})
    (repo.path / name).write_bytes(b"b\n")
    header = repo.run("diff", "--no-color").stdout.split(b"\n", 1)[0]
    assert header == b"diff --git " + quote_path("a/" + name) + b" " + quote_path("b/" + name)
    quoted = quote_path(name)
    if quoted.startswith(b'"'):
        assert unquote_path(quoted + b" rest") == (name, b" rest")
        assert printed_path(quoted.decode()) == name
    else:
        assert quoted == name.encode()


def test_an_unterminated_quoted_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unterminated"):
        unquote_path(b'"caf\\303')
    assert printed_path('"caf') == '"caf'  # left as printed


def test_apply_output_names_files_hunks_offsets_and_refusals(tmp_path: Path) -> None:
    body = b"".join(b"line %d\n" % i for i in range(1, 21))
    repo = _repo(tmp_path, {"café.py": body, "moved.py": body, "gone.py": b"x\n"})
    for name, data in (("café.py", body.replace(b"line 2\n", b"line two\n")), ("gone.py", b"y\n")):
        (repo.path / name).write_bytes(data)
    (repo.path / "moved.py").write_bytes(body.replace(b"line 15\n", b"line fifteen\n"))
    diff = repo.run("diff", "--no-color").stdout
    repo.run("reset", "-q", "--hard")
    # café.py no longer has what the hunk removes, moved.py gained lines above its hunk, gone.py is gone
    (repo.path / "café.py").write_bytes(body.replace(b"line 2\n", b"second\n"))
    (repo.path / "moved.py").write_bytes(b"new\nnew\n" + body)
    (repo.path / "gone.py").unlink()

    check = repo.run("apply", "--check", "-v", "-", input=diff, check=False)
    events = list(read_apply_output((check.stdout + check.stderr).decode()))
    assert CheckingPatch("café.py") in events  # printed quoted, read as the tree names it
    assert PatchFailedAt("café.py", 1) in events  # printed as it is
    assert FileRefused("café.py", "patch does not apply") in events
    assert FileRefused("gone.py", "No such file or directory") in events
    assert events.index(CheckingPatch("moved.py")) < events.index(HunkOffset(1, 14, 2))

    (repo.path / "gone.py").write_bytes(b"x\n")  # --reject stops before applying anything at a missing file
    rejected = repo.run("apply", "--reject", "-v", "-", input=diff, check=False)
    events = list(read_apply_output((rejected.stdout + rejected.stderr).decode()))
    assert events.index(ApplyingWithRejects("café.py")) < events.index(HunkRejected(1))


def test_other_lines_are_skipped() -> None:
    text = "error: while searching for:\nline 2\n\nApplied patch x.py cleanly.\nerror: x.py: something else\n"
    assert list(read_apply_output(text)) == []


def test_a_name_that_is_not_utf8_reads_back_as_the_bytes_git_has(tmp_path: Path) -> None:
    """One unquoting for the diff lexer and the patch parser: an escaped byte that is not UTF-8 (\\351, Latin-1
    é) decodes with surrogateescape, so the name is the tree's own (no U+FFFD) and encodes back to git's bytes."""
    from toolkit.git import unquote_name
    from toolkit.importer.diff_lexer import decode_name
    from toolkit.patch_mail import parse_patch

    raw = b"caf\xe9.py"
    repo = Git.init(tmp_path / "repo")
    (repo.path / os.fsdecode(raw)).write_bytes(b"a\n")
    repo.run("add", "-A")
    repo.run("commit", "-q", "-m", "base", env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"})
    (repo.path / os.fsdecode(raw)).write_bytes(b"b\n")
    repo.run("commit", "-qam", "change it", env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"})
    (mail,) = repo.format_patch("HEAD^..HEAD")
    assert b'diff --git "a/caf\\351.py" "b/caf\\351.py"' in mail
    (tree_name,) = [decode_name(p) for p in repo.tracked_paths()]
    assert tree_name == "caf\udce9.py"
    patch = parse_patch(tmp_path / "0001.patch", mail)
    assert patch.touched_paths == (tree_name,)
    assert unquote_name('"a/caf\\351.py"') == "a/" + tree_name
    assert unquote_path(b'"caf\\351.py" rest') == (tree_name, b" rest")
    assert quote_path(tree_name) == b'"caf\\351.py"'  # and back, byte for byte
    assert tree_name.encode("utf-8", "surrogateescape") == raw
