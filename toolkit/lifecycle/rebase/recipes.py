"""The git recipes of a rebase: rerere's shared cache, the old series as commits, the range-diff."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from toolkit.checkout import Checkout
from toolkit.git import Git
from toolkit.lifecycle.rebase.reuse import rerere_store
from toolkit.lifecycle.rebase.state import OLD_HEAD_REF
from toolkit.model import Patch, Pin, Series
from toolkit.project import Project
from toolkit.sources import Base


def rerere_cache(cache_dir: Path, project: str, root: Path) -> Path:
    """Where the project at `root` keeps its recorded resolutions (see `reuse.rerere_store`)."""
    return rerere_store(cache_dir, project, root)


def enable_rerere(checkout: Checkout, shared: Path, *, reuse: bool = True) -> None:
    """Point the checkout's rr-cache at the project's; `reuse=False` turns rerere off for this rebase
    (`vpatch rebase --no-reuse`: every conflict stops, nothing is reused or recorded)."""
    if not reuse:
        checkout.git.set_config("rerere.enabled", "false")
        return
    shared.mkdir(parents=True, exist_ok=True)
    link = checkout.git.git_dir() / "rr-cache"
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    link.symlink_to(shared.resolve(), target_is_directory=True)
    checkout.git.set_config("rerere.enabled", "true")


def old_series_head(project: Project, old_pin: Pin, series: Series, old_base: Base, checkout: Checkout) -> str | None:
    """The old series as commits on OLD's base, made in the checkout's repository without a work tree; None
    if it does not apply there with zero fuzz. OLD's base objects must be in the checkout (add_base_objects)."""
    head = series_commits(checkout.git, old_base.commit, series.patches)
    if head is not None:
        checkout.git.update_ref(OLD_HEAD_REF, head)
    return head


def series_commits(repo: Git, base_commit: str, patches: Sequence[Patch]) -> str | None:
    """Commit each patch of the series on `base_commit` through a temporary index (`git apply --cached`,
    messages and authors as `git am --keep-non-patch` takes them); the last commit, or None when a patch
    does not apply."""
    head = base_commit
    with tempfile.TemporaryDirectory(prefix="vpatch-series-", dir=repo.git_dir()) as tmp:
        index = repo.private_index(Path(tmp) / "index")
        index.read_tree(base_commit)
        for patch in patches:
            if not index.apply(patch.path).ok:
                return None
            msg, body = Path(tmp) / "msg", Path(tmp) / "body"
            fields = repo.mailinfo(patch.data, msg, body, "-b")
            message = fields.get("Subject", "") + "\n\n" + msg.read_text(encoding="utf-8", errors="replace")
            author = {
                "GIT_AUTHOR_NAME": fields.get("Author", ""),
                "GIT_AUTHOR_EMAIL": fields.get("Email", ""),
                "GIT_AUTHOR_DATE": fields.get("Date", ""),
                "GIT_COMMITTER_DATE": fields.get("Date", ""),
            }
            head = index.commit_tree(index.write_tree(), head, message, author)
    return head


def range_diff(
    repo: Git,
    old_base: str,
    old_head: str | None,
    new_base: str,
    new_head: str,
    *,
    renamed: Mapping[str, str] | None = None,
) -> str:
    """`git range-diff` of the old series (on OLD's base) against the new one (on NEW's).

    git pairs commits by how alike their diffs are, so a patch reworked while resolving a conflict can show
    as one removed and one added. Each patch keeps its stable name (`Patch-File:`; `renamed`: new name ->
    old, for a patch the rebase renamed): such a removed/added couple of one patch is shown as the one
    changed patch it is, whether or not its subject changed too (a commit without the header: its subject)."""
    if old_head is None:
        return "not available: the old series does not apply to its own base with zero fuzz\n"
    old_commits = repo.commits(f"{old_base}..{old_head}")
    new_commits = repo.commits(f"{new_base}..{new_head}")
    if old_commits and new_commits:
        text = repo.range_diff(f"{old_base}..{old_head}", f"{new_base}..{new_head}")
        return _pair_same_patches(repo, text, old_commits, new_commits, dict(renamed or {}))
    # git range-diff refuses an empty range; list the commits the way it would.
    lines = []
    for number, commit in enumerate(old_commits, start=1):
        short, subject = repo.short_and_subject(commit)
        lines.append(f"{number}:  {short} < -:  {'-' * len(short)} {subject}")
    for number, commit in enumerate(new_commits, start=1):
        short, subject = repo.short_and_subject(commit)
        lines.append(f"-:  {'-' * len(short)} > {number}:  {short} {subject}")
    return "".join(line + "\n" for line in lines)


_RANGE_DIFF_HEAD = re.compile(
    r"^(?P<old>\d+|-):\s+(?P<a>\S+) (?P<mark>[<>=!]) (?P<new>\d+|-):\s+(?P<b>\S+) (?P<subject>.*)$"
)


_PATCH_FILE = re.compile(r"^Patch-File: *(\S+) *$", re.M)


def _identity(repo: Git, commit: str, renamed: dict[str, str]) -> str:
    """A commit's stable name (its `Patch-File:`, as the old series named it), else its subject."""
    message = repo.message(commit)
    found = _PATCH_FILE.findall(message)
    if found:
        return "file:" + renamed.get(found[-1], found[-1])
    return "subject:" + message.split("\n", 1)[0].strip()


def _pair_same_patches(
    repo: Git, text: str, old_commits: list[str], new_commits: list[str], renamed: dict[str, str]
) -> str:
    sections: list[list[str]] = []
    for line in text.splitlines(keepends=True):
        if _RANGE_DIFF_HEAD.match(line.rstrip("\n")) or not sections:
            sections.append([line])
        else:
            sections[-1].append(line)
    heads = [_RANGE_DIFF_HEAD.match(section[0].rstrip("\n")) for section in sections]
    removed = {
        _identity(repo, old_commits[int(m["old"]) - 1], {}): i for i, m in enumerate(heads) if m and m["mark"] == "<"
    }
    added = {
        _identity(repo, new_commits[int(m["new"]) - 1], renamed): i
        for i, m in enumerate(heads)
        if m and m["mark"] == ">"
    }
    dropped: set[int] = set()
    for key in sorted(removed.keys() & added.keys(), key=lambda k: removed[k]):
        old_match, new_match = heads[removed[key]], heads[added[key]]
        assert old_match is not None and new_match is not None
        old_commit, new_commit = old_commits[int(old_match["old"]) - 1], new_commits[int(new_match["new"]) - 1]
        pair = repo.range_diff(f"{old_commit}^..{old_commit}", f"{new_commit}^..{new_commit}", creation_factor=100000)
        _, _, body = pair.partition("\n")
        mark = "=" if not body.strip() else "!"
        subject = new_match["subject"]
        head = f"{old_match['old']}:  {old_match['a']} {mark} {new_match['new']}:  {new_match['b']} {subject}\n"
        sections[removed[key]] = [head, body]
        dropped.add(added[key])
    return "".join("".join(section) for i, section in enumerate(sections) if i not in dropped)
