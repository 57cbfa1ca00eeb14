"""A diff taken against stock over a series: recognised, checked to hold the series' changes, and reduced to its delta.

A post-release fork's diff (0.8.4.post1 against stock 0.8.4) repeats every change the series already
carries from the release it followed (0.8.4's fork diff). It does not apply to stock + series, but it
does apply to stock: then, per file it changes, the fork's version is stock + the diff, and what is
imported is the difference between stock + series and that version (the delta), made by git.

That is only right when the fork's version still holds the series' changes to the file. Lines the
series wrote may be changed further (a post-release fixes the fork's own code), but a change of the
series that the fork's version has undone (stock's lines back where the series replaced them, the
series' added lines gone with nothing in their place, lines the series removed brought back), a file
the series changes deleted, or one the series deletes kept, is not "the series plus a delta":
importing it would silently undo part of the series. Such a diff is refused with one line naming the
file, the line in the diff, the series' patch and what to import instead.
"""

from __future__ import annotations

import difflib
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.apply import ApplyResult
from toolkit.checkout import UPSTREAM_REF, Checkout
from toolkit.errors import VpatchError
from toolkit.importer.paths import FileChange, resolve_files
from toolkit.importer.units import PLAIN_DIFF_ARGS, Unit, parse_unit_diff

_WORD = re.compile(rb"\w")


@dataclass
class Delta:
    """The delta of a diff taken against stock: its file changes against stock + series, and what it overlaps."""

    files: list[FileChange]
    overlap: list[str]  # files the diff changes that the series changes too
    untouched: list[str] = field(default_factory=list)  # files the series changes that the diff leaves alone

    def note(self, unit: Unit, label: str, patches: int) -> str:
        shown = ", ".join(self.overlap[:3]) + (f" and {len(self.overlap) - 3} more" if len(self.overlap) > 3 else "")
        text = (
            f"{unit.label}: taken against stock {label} and overlapping the series in {len(self.overlap)} file(s) "
            f"({shown}): imported as its delta against the series (what it changes relative to stock + the "
            f"{patches} patch(es))"
        )
        if self.untouched:
            text += f"; {len(self.untouched)} file(s) the series changes are not in it and stay as the series has them"
        return text


def applies(checkout: Checkout, diff: bytes) -> bool:
    """Whether the diff applies to the checkout's tree as it is (offsets allowed, no fuzz)."""
    return checkout.git.apply(diff, check=True, quiet_whitespace=True).ok


def stock_delta(checkout: Checkout, unit: Unit, diff: bytes, applied: ApplyResult, tree: set[str]) -> Delta | None:
    """The delta against the series of a diff taken against stock, or None when the diff is not one
    (it does not apply to the pinned base as it is, or overlaps no file the series changes).

    Raises a one-line VpatchError when it is one but does not reduce to a delta (see the module)."""
    series_paths = {p for patch in applied.series.patches for p in patch.touched_paths}
    paths = list(dict.fromkeys(p for change in unit.files for p in change.paths))
    overlap = [p for p in paths if p in series_paths]
    if not overlap:
        return None
    git = checkout.git
    with tempfile.TemporaryDirectory(prefix="vpatch-delta-", dir=git.git_dir()) as tmp:
        index = git.private_index(Path(tmp) / "index")
        index.read_tree(UPSTREAM_REF)
        if not index.apply(diff, check=True, quiet_whitespace=True).ok:
            return None
        index.apply(diff, quiet_whitespace=True).checked("apply", "--cached")
        fork = index.write_tree()
    for path in overlap:
        problem = _lost_change(checkout, applied, path, fork)
        if problem is not None:
            change = next(c for c in unit.files if path in c.paths)
            raise VpatchError(
                f"{path}: {problem}; {unit.label} is taken against stock {checkout.project} {checkout.version} "
                "but is not the series plus a delta, so it is not imported (import a diff taken against stock + "
                "series instead: "
                f"`vpatch apply {checkout.version}` and diff that checkout against the fork, or `vpatch import "
                f"--git REPO OLD..NEW` of the fork's two releases)",
                path=unit.where,
                line=change.line,
            )
    raw = git.diff("HEAD", fork, PLAIN_DIFF_ARGS, paths)
    if not raw.strip():
        raise VpatchError(
            f"{unit.label} is taken against stock {checkout.project} {checkout.version} and holds nothing the "
            "series does not carry already; nothing to import",
            path=unit.where,
        )
    changes = resolve_files(parse_unit_diff(raw, unit.where, 1), tree, unit.where, level=1)
    lines = {p: c.line for c in unit.files for p in c.paths}
    for change in changes:  # errors about the delta point at the file's section in the source
        change.line = next((lines[p] for p in change.paths if p in lines), change.line)
        for hunk in change.hunks:
            hunk.line = change.line
    untouched = sorted(series_paths - set(paths))
    return Delta(changes, overlap, untouched)


def _blob_lines(checkout: Checkout, rev: str, path: str) -> list[bytes] | None:
    data = checkout.git.blob(rev, path)
    return None if data is None else data.split(b"\n")


def _lost_change(checkout: Checkout, applied: ApplyResult, path: str, fork: str) -> str | None:
    """What of the series' change to `path` the fork's version lacks (one phrase), or None when it holds all of it."""
    stock = _blob_lines(checkout, UPSTREAM_REF, path)
    series = _blob_lines(checkout, "HEAD", path)
    forked = _blob_lines(checkout, fork, path)
    patches = _patches_touching(applied, path)
    if series is None and forked is None:
        return None
    if series is None:
        return f"keeps the file, which the series deletes ({patches})"
    if forked is None:
        return f"deletes the file, which the series changes ({patches})"
    base = stock or []
    delta = difflib.SequenceMatcher(None, series, forked, autojunk=False).get_opcodes()
    kept = {i for tag, c1, c2, _, _ in delta if tag == "equal" for i in range(c1, c2)}
    for tag, a1, a2, b1, b2 in difflib.SequenceMatcher(None, base, series, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        # The fork's lines where the series wrote series[b1:b2] (or, for a removal, at b1).
        touching = [op for op in delta if op[0] != "equal" and op[1] <= b2 and op[2] >= b1]
        instead = [line for op in touching for line in forked[op[3] : op[4]]]
        gone = b1 < b2 and not any(i in kept for i in range(b1, b2))  # none of the series' lines there is left
        removed = {line for line in base[a1:a2] if line not in series[b1:b2] and _WORD.search(line)}
        back = [line for line in instead if line in removed]
        if gone and ((a1 < a2 and _contains(instead, base[a1:a2])) or (a1 == a2 and not instead)):
            lines = f"line {b1 + 1}" if b2 == b1 + 1 else f"lines {b1 + 1}-{b2}"
            now = ("is" if b2 == b1 + 1 else "are") + (" stock's again" if a1 < a2 else " not in it")
            who = _who(checkout, applied, path, b1, b2)
            return f"reverts part of the series: {lines} of the series' version ({who}) {now}"
        if back:
            shown = back[0].decode("utf-8", "replace").strip()
            return (
                f"reverts part of the series: it brings back {shown!r}, which the series removes "
                f"at line {b1 + 1} of its version ({_who(checkout, applied, path, b1, b2)})"
            )
    return None


def _who(checkout: Checkout, applied: ApplyResult, path: str, b1: int, b2: int) -> str:
    return (_patch_of_line(checkout, applied, path, b1 + 1) if b1 < b2 else None) or _patches_touching(applied, path)


def _contains(lines: list[bytes], block: list[bytes]) -> bool:
    size = len(block)
    return any(lines[i : i + size] == block for i in range(len(lines) - size + 1))


def _patches_touching(applied: ApplyResult, path: str) -> str:
    names = [p.name for p in applied.series.patches if path in p.touched_paths]
    return ", ".join(names) if names else "the series"


def _patch_of_line(checkout: Checkout, applied: ApplyResult, path: str, line: int) -> str | None:
    """The series patch that wrote line `line` of `path` at HEAD (git blame), or None."""
    blame = checkout.git.blame("HEAD", path, line, literal=True)
    if not blame.ok or not blame.stdout:
        return None
    commit = blame.stdout.split(b" ", 1)[0].decode("ascii", "replace")
    return next((o.name for o in applied.outcomes if o.commit == commit), None)
