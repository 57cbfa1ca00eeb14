"""Text formats git writes that the toolkit reads back or writes for it, each implemented once: C-quoted
paths (diff headers, fast-import), what `git apply -v` prints, and what `git am` prints.

This module of the adapter only reads and writes text (it runs nothing), so every stage parses it one way.
`git apply` quotes paths in its progress lines (`Checking patch "caf\\303\\251.py"...`) but prints them as
they are in its error lines (`error: patch failed: café.py:1`); the readers here return tree paths for both.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

# The quoted paths live in their own module (no dataclasses or patterns to load for them); named here too.
from toolkit.git.quoting import fast_import_path as fast_import_path
from toolkit.git.quoting import printed_path as printed_path
from toolkit.git.quoting import quote_path as quote_path
from toolkit.git.quoting import unquote_name as unquote_name
from toolkit.git.quoting import unquote_path as unquote_path

# ---------------------------------------------------------------- `git apply -v` output


@dataclass(frozen=True)
class CheckingPatch:
    """`Checking patch P...`: the lines that follow are about file P."""

    path: str


@dataclass(frozen=True)
class ApplyingWithRejects:
    """`Applying patch P with N rejects...` (`--reject`): the lines that follow are about file P."""

    path: str


@dataclass(frozen=True)
class HunkOffset:
    """`Hunk #N succeeded at L (offset K lines).`"""

    hunk: int
    line: int
    offset: int


@dataclass(frozen=True)
class HunkRejected:
    """`Rejected hunk #N.` (`--reject`)."""

    hunk: int


@dataclass(frozen=True)
class PatchFailedAt:
    """`error: patch failed: P:L`: the hunk written to start at line L of P does not apply."""

    path: str
    line: int


@dataclass(frozen=True)
class FileRefused:
    """`error: P: WHY`, WHY one of FILE_REFUSALS."""

    path: str
    why: str


ApplyLine = CheckingPatch | ApplyingWithRejects | HunkOffset | HunkRejected | PatchFailedAt | FileRefused

FILE_REFUSALS = (
    "patch does not apply",
    "does not exist in index",
    "No such file or directory",
    "already exists in index",
    "already exists in working directory",
    "does not match index",
    "wrong type",
)

_CHECKING = re.compile(r"^Checking patch (.+)\.\.\.$")
_APPLYING = re.compile(r"^Applying patch (.+) with \d+ rejects?\.\.\.$")
_OFFSET = re.compile(r"^Hunk #(\d+) succeeded at (\d+) \(offset (-?\d+) lines?\)\.$")
_REJECTED = re.compile(r"^Rejected hunk #(\d+)\.$")
_FAILED_AT = re.compile(r"^error: patch failed: (?P<path>.+):(?P<line>\d+)$")
_REFUSED = re.compile(r"^error: (?P<path>.+?): (?P<why>" + "|".join(map(re.escape, FILE_REFUSALS)) + ")$")


def read_apply_output(text: str) -> Iterator[ApplyLine]:
    """The lines of `git apply` output (stdout and stderr, `-v`) that say what happened to which file and hunk.

    Other lines (`error: while searching for:` and the context it quotes, `Applied patch P cleanly.`) are skipped.
    """
    for line in text.splitlines():
        if match := _CHECKING.match(line):
            yield CheckingPatch(printed_path(match[1]))
        elif match := _APPLYING.match(line):
            yield ApplyingWithRejects(printed_path(match[1]))
        elif match := _OFFSET.match(line):
            yield HunkOffset(int(match[1]), int(match[2]), int(match[3]))
        elif match := _REJECTED.match(line):
            yield HunkRejected(int(match[1]))
        elif match := _FAILED_AT.match(line):
            yield PatchFailedAt(match["path"], int(match["line"]))
        elif match := _REFUSED.match(line):
            yield FileRefused(match["path"], match["why"])


# ---------------------------------------------------------------- `git am` output

THREE_WAY_NOTE = "Falling back to patching base and 3-way merge"
ALREADY_APPLIED = "No changes -- Patch already applied"


def am_sections(output: str) -> list[str]:
    """`git am` output split per patch (each section starts at its "Applying: " line; lines before the
    first are dropped)."""
    sections: list[str] = []
    for line in output.splitlines():
        if line.startswith("Applying: "):
            sections.append("")
        if sections:
            sections[-1] += line + "\n"
    return sections


def fell_back_to_three_way(section: str) -> bool:
    """Whether `git am --3way` had to merge the patch this output is about."""
    return any(line.startswith(THREE_WAY_NOTE) for line in section.splitlines())
