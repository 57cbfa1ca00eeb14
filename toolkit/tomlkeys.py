"""Unknown keys in the TOML files vpatch reads (pins.toml, `[tool.vpatch]`): refused, not ignored.

A misspelt key would otherwise be silently dropped and its default used; the error names the line and
the key it was probably meant to be. tomllib keeps no positions, so the line is found in the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from toolkit.errors import VpatchError


class LazyLine:
    """A line number searched for in the text only when an error names it, then kept.

    A valid file needs none of them: every key's line searched for up front cost a pins.toml of four pins
    ~50 searches (a pattern compiled and the text split for each) at every start-up.
    """

    def __init__(self, find: Callable[[], int | None]) -> None:
        self._find: Callable[[], int | None] | None = find
        self._line: int | None = None

    def __call__(self) -> int | None:
        if self._find is not None:
            self._line, self._find = self._find(), None
        return self._line


Line = int | None | LazyLine
"""A line number, or where to find it when it is needed."""


def line_of(line: Line) -> int | None:
    return line() if isinstance(line, LazyLine) else line


def unknown_key_message(key: str, known: Iterable[str]) -> str:
    """`unknown key 'sorce' (did you mean 'source'?)`, or the keys there are when nothing is close."""
    known = list(known)
    import difflib  # only for a key that is not known

    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else "known keys: " + ", ".join(known)
    return f"unknown key {key!r} ({hint})"


def key_line(text: str, key: str, start: Line = 1) -> int | None:
    """The first line from `start` on that sets `key` (`key =`, `{..., key =`) or opens a table `[key...`."""
    start = line_of(start)
    name = rf'(?:"{re.escape(key)}"|\'{re.escape(key)}\'|{re.escape(key)})'
    pattern = re.compile(rf"(?:^|[{{,])\s*{name}\s*=|^\s*\[+\s*{name}\s*[.\]]")
    found = first_line_matching(text, pattern, start)
    return start if found is None else found


def first_line_matching(text: str, pattern: re.Pattern[str], start: Line = 1) -> int | None:
    """The number of the first line from `start` on that `pattern` finds something in; None if none does."""
    first = line_of(start) or 1
    for number, line in enumerate(text.split("\n")[first - 1 :], start=first):
        if pattern.search(line):
            return number
    return None


def refuse_unknown(
    table: dict, known: Iterable[str], path: Path, text: str, *, start: Line = 1, prefix: str = ""
) -> None:
    """Raise for the first key of `table` not in `known`, naming the line that sets it (searched from `start`)."""
    known = tuple(known)
    for key in table:
        if key not in known:
            raise VpatchError(prefix + unknown_key_message(key, known), path=path, line=key_line(text, key, start))
