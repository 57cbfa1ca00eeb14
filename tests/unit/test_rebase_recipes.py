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
