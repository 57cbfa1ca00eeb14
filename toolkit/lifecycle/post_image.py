""" "Upstream has it" without history: per hunk of a patch, whether its post-image is already in NEW's tree.

An sdist base has no history to match patch-ids against, and a change upstream made in its own words
(the same lines, with context that moved or changed around them) does not reverse-apply. What is left
is content: a hunk's post-image (its context and the lines it adds, in order) found in NEW's version of
the file, at any line. When the whole post-image is not there, the hunk's changed lines alone still count
("moved context") when each run of added lines is there as a block, not right beside the lines the hunk
removes, and is not a block the patch itself removes somewhere (code the patch moves). A hunk that only
removes lines is there when its context before and after meet in NEW with nothing between. Added lines
that are all blank or punctuation are no evidence, and without its context a block must be more than a
short line (two lines with words, or one of at least 12 characters besides spaces): `import os` found
somewhere else in NEW says nothing.
"""

from __future__ import annotations

import re

from toolkit.git import Git
from toolkit.importer.diff_lexer import DiffSyntaxError, Hunk, parse_diff
from toolkit.records.evidence import HunkInNew

_MEANINGFUL = re.compile(rb"\w")


def hunks_in_new(
    repo: Git, commit: str, data: bytes, cache: dict[str, list[bytes] | None] | None = None
) -> list[HunkInNew]:
    """Every hunk of the patch `data` (a mail or diff), with where `commit`'s tree already has its post-image."""
    try:
        files, _ = parse_diff(data)
    except DiffSyntaxError:
        return []
    cache = {} if cache is None else cache
    removed_blocks = [_runs(h, b"-") for raw in files for h in raw.hunks]
    removed = [block for blocks in removed_blocks for block in blocks]
    found: list[HunkInNew] = []
    for raw in files:
        old = _strip(raw.old_name) if not (raw.old_dev_null or raw.created) else None
        new = _strip(raw.new_name) if not (raw.new_dev_null or raw.deleted) else None
        path = new or old or "?"
        text = cache[path] if path in cache else cache.setdefault(path, _lines(repo, commit, path))
        for number, hunk in enumerate(raw.hunks, start=1):
            entry = HunkInNew(path, number)
            if new is None:  # the patch deletes the file
                if text is None:
                    entry.how = "file deleted"
            elif text is not None:
                entry.line, entry.how = _locate(hunk, text, removed)
            found.append(entry)
    return found


def _strip(name: str | None) -> str | None:
    if name is None:
        return None
    return name.split("/", 1)[1] if name.startswith(("a/", "b/")) else name


def _lines(repo: Git, commit: str, path: str) -> list[bytes] | None:
    data = repo.blob(commit, path)
    return None if data is None else data.split(b"\n")


def _body(hunk: Hunk) -> list[tuple[bytes, bytes]]:
    """(kind, text) per line: b" " context, b"-" removed, b"+" added (`\\ No newline` lines left out)."""
    out = []
    for line in hunk.body:
        kind = line[:1] if line[:1] in (b" ", b"-", b"+") else b" "
        if line[:1] == b"\\":
            continue
        out.append((kind, line[1:]))
    return out


def _runs(hunk: Hunk, kind: bytes) -> list[list[bytes]]:
    """The runs of consecutive `kind` lines of a hunk."""
    runs: list[list[bytes]] = []
    previous = None
    for lead, text in _body(hunk):
        if lead == kind:
            if previous != kind:
                runs.append([])
            runs[-1].append(text)
        previous = lead
    return runs


def _find(text: list[bytes], block: list[bytes], start: int = 0) -> list[int]:
    size = len(block)
    if not size:
        return []
    head = block[0]
    return [i for i in range(start, len(text) - size + 1) if text[i] == head and text[i : i + size] == block]


def _locate(hunk: Hunk, text: list[bytes], removed: list[list[bytes]]) -> tuple[int | None, str | None]:
    body = _body(hunk)
    if not any(kind != b" " for kind, _ in body):
        return None, None
    post = [t for kind, t in body if kind != b"-"]
    pre = [t for kind, t in body if kind != b"+"]
    if post != pre:
        at = _find(text, post)
        if at and any(_MEANINGFUL.search(t) for kind, t in body if kind != b" "):
            return at[0] + 1, "exact"
    # moved context: each change group's added lines as a block, in order, not beside its removed lines
    first, position = None, 0
    for group in _groups(body):
        before, minus, plus, after = group
        if plus:
            if not _substantial(plus) or plus in removed:
                return None, None
            hits = [i for i in _find(text, plus, position) if not _beside(text, i, len(plus), minus)]
            if not hits:
                return None, None
            where = hits[0]
        else:  # removal only: the context on both sides meets with nothing between
            if not before or not after or not any(_MEANINGFUL.search(t) for t in minus):
                return None, None
            hits = _find(text, [before[-1], after[0]], position)
            if not hits:
                return None, None
            where = hits[0]
        first = where if first is None else first
        position = where + 1
    return (first + 1, "moved context") if first is not None else (None, None)


def _substantial(block: list[bytes]) -> bool:
    """Enough to be found by itself: two lines with words, or one with at least 12 characters besides spaces."""
    worded = [t for t in block if _MEANINGFUL.search(t)]
    return len(worded) >= 2 or any(len(t.replace(b" ", b"").replace(b"\t", b"")) >= 12 for t in worded)


def _groups(body: list[tuple[bytes, bytes]]) -> list[tuple[list[bytes], list[bytes], list[bytes], list[bytes]]]:
    """(context before, removed, added, context after) of each run of changed lines."""
    groups = []
    i = 0
    while i < len(body):
        if body[i][0] == b" ":
            i += 1
            continue
        start = i
        while i < len(body) and body[i][0] != b" ":
            i += 1
        before = [t for _, t in body[:start]][-1:] if start and body[start - 1][0] == b" " else []
        after = [body[i][1]] if i < len(body) and body[i][0] == b" " else []
        minus = [t for kind, t in body[start:i] if kind == b"-"]
        plus = [t for kind, t in body[start:i] if kind == b"+"]
        groups.append((before, minus, plus, after))
    return groups


def _beside(text: list[bytes], at: int, size: int, minus: list[bytes]) -> bool:
    """Whether the removed lines sit right before or after the block at `at` (the old code still there)."""
    if not minus:
        return False
    n = len(minus)
    return text[max(0, at - n) : at] == minus or text[at + size : at + size + n] == minus
