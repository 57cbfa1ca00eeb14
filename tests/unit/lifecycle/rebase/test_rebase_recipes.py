"""toolkit/lifecycle/rebase/recipes.py on real repositories."""

from __future__ import annotations

from pathlib import Path

from toolkit.git import Git
from toolkit.lifecycle.rebase.recipes import range_diff


def test_range_diff_shows_a_reworked_patch_as_changed_not_removed_and_added(tmp_path: Path) -> None:
    """git pairs commits by diff similarity; a patch rewritten while resolving a conflict keeps its
    subject, and the rebase's range-diff shows it as the one changed patch it is."""
    repo = Git.init(tmp_path / "r")
    author = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"}

    def commit(files: dict[str, str], subject: str) -> str:
        for name, text in files.items():
            (tmp_path / "r" / name).write_text(text)
            repo.run("add", name)
        repo.run("commit", "-q", "--allow-empty", "-m", subject, env=author)
        return repo.out("rev-parse", "HEAD")

    old_base = commit({}, "old base")
    commit({"f.py": "x = 1\n"}, "[Core] the reworked one")
    commit({"g.py": "y = 2\n"}, "[Core] the unchanged one")
    old_head = commit({"h.py": "z = 3\n"}, "[Core] the dropped one")
    repo.run("checkout", "-q", "--detach", old_base)
    new_base = commit({"base.py": "new = True\n"}, "new base")
    commit({"f.py": "x = compute(1, scale=10)\nassert x\n"}, "[Core] the reworked one")
    new_head = commit({"g.py": "y = 2\n"}, "[Core] the unchanged one")
    plain = repo.run("range-diff", "--no-color", f"{old_base}..{old_head}", f"{new_base}..{new_head}").stdout.decode()
    assert "< -:" in plain and "> 1:" in plain  # what git alone shows for the reworked patch
    text = range_diff(repo, old_base, old_head, new_base, new_head)
    heads = [line for line in text.splitlines() if not line.startswith(" ")]
    assert [h.split()[2] for h in heads] == ["!", "=", "<"]
    assert heads[0].startswith("1:  ") and " ! 1:  " in heads[0] and heads[0].endswith("[Core] the reworked one")
    assert heads[2].startswith("3:  ") and heads[2].endswith("[Core] the dropped one")
    assert "+x = compute(1, scale=10)" in text


def test_range_diff_pairs_by_patch_file_when_the_subject_changed_too(tmp_path: Path) -> None:
    """The stable name pairs a reworked patch whose subject changed (and, through `renamed`, one whose
    name changed); a patch without the header falls back to its subject, and other patches stay apart."""
    repo = Git.init(tmp_path / "r")
    author = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"}

    def commit(files: dict[str, str], subject: str, name: str | None = None) -> str:
        for path, text in files.items():
            (tmp_path / "r" / path).write_text(text)
            repo.run("add", path)
        message = subject + (f"\n\nFeature: kv-routing\nPatch-File: {name}\n" if name else "")
        repo.run("commit", "-q", "--allow-empty", "-m", message, env=author)
        return repo.out("rev-parse", "HEAD")

    old_base = commit({}, "old base")
    commit({"f.py": "x = 1\n"}, "[kv] f.py", "0001-kv-f.patch")
    commit({"g.py": "y = 2\n"}, "[kv] g.py", "0002-kv-g.patch")
    old_head = commit({"h.py": "z = 3\n"}, "[kv] h.py", "0003-kv-h.patch")
    repo.run("checkout", "-q", "--detach", old_base)
    new_base = commit({"base.py": "new = True\n"}, "new base")
    commit({"f2.py": "x = compute(1, scale=10)\nassert x\n"}, "[kv] f2.py", "0001-kv-f.patch")
    commit({"g2.py": "y = [2, 3, 4]\nprint(y)\n"}, "[kv] g2.py", "0002-kv-g2.patch")
    new_head = commit({"k.py": "w = 'other'\nassert w\n"}, "[kv] k.py", "0004-kv-k.patch")
    plain = repo.run("range-diff", "--no-color", f"{old_base}..{old_head}", f"{new_base}..{new_head}").stdout.decode()
    assert plain.count(" < ") == 3 and plain.count(" > ") == 3  # git alone pairs none of them

    heads = [
        line
        for line in range_diff(
            repo, old_base, old_head, new_base, new_head, renamed={"0002-kv-g2.patch": "0002-kv-g.patch"}
        ).splitlines()
        if not line.startswith(" ")
    ]
    assert [h.split()[2] for h in heads] == ["!", "!", "<", ">"], heads
    assert heads[0].startswith("1:  ") and heads[0].endswith(" 1:  " + heads[0].split()[4] + " [kv] f2.py")
    assert heads[1].endswith("[kv] g2.py") and heads[2].endswith("[kv] h.py") and heads[3].endswith("[kv] k.py")
    # Without the rename known, the renamed patch is one removed and one added.
    unpaired = range_diff(repo, old_base, old_head, new_base, new_head)
    assert [h.split()[2] for h in unpaired.splitlines() if not h.startswith(" ")].count("!") == 1
