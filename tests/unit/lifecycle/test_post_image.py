"""toolkit.lifecycle.post_image: where NEW's tree already has each hunk's post-image, by content (real git)."""

from __future__ import annotations

from tests.harness import commit_tree, module_text
from toolkit.git import Git
from toolkit.lifecycle.post_image import hunks_in_new

OLD = module_text("pool")


def patch_of(tmp_path, name: str, before: dict[str, str], after: dict[str, str]) -> bytes:
    """A `git diff` of `before` -> `after` made in a repository of its own."""
    repo = Git.init(tmp_path / name)
    commit_tree(repo, before, message="before")
    for path in set(before) - set(after):
        (repo.path / path).unlink()
    commit_tree(repo, after, message="after")
    return repo.run("diff", "--full-index", "HEAD~1", "HEAD").stdout


def new_release(tmp_path, files: dict[str, str]) -> tuple[Git, str]:
    repo = Git.init(tmp_path / "new")
    return repo, commit_tree(repo, files, message="NEW")


def found(tmp_path, before, after, new_files) -> list[tuple[str, int, int | None, str | None]]:
    data = patch_of(tmp_path, "patch", before, after)
    repo, commit = new_release(tmp_path, new_files)
    return [(h.file, h.hunk, h.line, h.how) for h in hunks_in_new(repo, commit, data)]


def test_exact_and_moved_context_and_absent(tmp_path):
    after = OLD.replace("VALUE_5 = 5 ", "VALUE_5 = 500 ").replace("VALUE_30 = 30 ", "VALUE_30 = 3000 ")
    # NEW: hunk 1 exactly, 10 lines further down; hunk 2's line, with its neighbours edited; nothing else
    new = "# one\n" * 10 + after.replace("VALUE_29 = 29 ", "VALUE_29 = -29 ").replace("VALUE_31 = 31 ", "VALUE_31 = 0 ")
    assert found(tmp_path, {"a.py": OLD}, {"a.py": after}, {"a.py": new}) == [
        ("a.py", 1, 14, "exact"),
        ("a.py", 2, 42, "moved context"),
    ]


def test_not_there_when_the_old_line_stays_beside_it_or_new_lacks_it(tmp_path):
    after = OLD.replace("VALUE_5 = 5 ", "VALUE_5 = 500 ")
    both = OLD.replace("VALUE_5 = 5  # pool line 5\n", "VALUE_5 = 5  # pool line 5\nVALUE_5 = 500  # pool line 5\n")
    assert found(tmp_path, {"a.py": OLD}, {"a.py": after}, {"a.py": both.replace("VALUE_4 = 4 ", "VALUE_4 = 40 ")}) == [
        ("a.py", 1, None, None)
    ]
    assert found(tmp_path, {"a.py": OLD}, {"a.py": after}, {"b.py": after}) == [("a.py", 1, None, None)]


def test_moved_code_and_blank_lines_are_no_evidence(tmp_path):
    lines = OLD.splitlines(keepends=True)
    moved = "".join(lines[:5] + lines[8:30] + lines[5:8] + lines[30:])  # the patch moves three lines down
    assert [f[3] for f in found(tmp_path, {"a.py": OLD}, {"a.py": moved}, {"a.py": OLD})] == [None, None]
    blank = OLD.replace("VALUE_5 = 5  # pool line 5\n", "VALUE_5 = 5  # pool line 5\n\n")
    assert found(tmp_path, {"a.py": OLD}, {"a.py": blank}, {"a.py": blank.replace("VALUE_3 = 3 ", "VALUE_3 = 9 ")}) == [
        ("a.py", 1, None, None)
    ]


def test_added_and_deleted_files_and_removals(tmp_path):
    removed = OLD.replace("VALUE_12 = 12  # pool line 12\n", "")
    got = found(
        tmp_path,
        {"a.py": OLD, "gone.py": "x = 1\n"},
        {"a.py": removed, "new.py": '"""New."""\n'},
        {"a.py": removed.replace("VALUE_10 = 10 ", "VALUE_10 = 1 "), "new.py": '"""New."""\n\nMORE = 1\n'},
    )
    assert got == [
        ("a.py", 1, 13, "moved context"),  # VALUE_11 and VALUE_13 meet in NEW
        ("gone.py", 1, None, "file deleted"),
        ("new.py", 1, 1, "exact"),
    ]
