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

_ESCAPES = {7: b"\\a", 8: b"\\b", 9: b"\\t", 10: b"\\n", 11: b"\\v", 12: b"\\f", 13: b"\\r", 34: b'\\"', 92: b"\\\\"}
_UNESCAPES = {ord(k): v for k, v in zip('abtnvfr"\\', b'\a\b\t\n\v\f\r"\\', strict=True)}


def quote_path(path: str) -> bytes:
    """A path as git writes it in diff headers: C-quoted when it holds quotes, controls or non-ASCII."""
    raw = path.encode("utf-8", "surrogateescape")
    if not any(b < 0x20 or b >= 0x7F or b in (34, 92) for b in raw):
        return raw
    out = bytearray(b'"')
    for b in raw:
        if b in _ESCAPES:
            out += _ESCAPES[b]
        elif b < 0x20 or b >= 0x7F:
            out += b"\\%03o" % b
        else:
            out.append(b)
    return bytes(out + b'"')


def unquote_path(token: bytes) -> tuple[str, bytes]:
    """A C-quoted name at the start of `token`: (name, the rest after the closing quote).

    Raises ValueError when the closing quote is missing.
    """
    out = bytearray()
    index = 1
    while index < len(token):
        byte = token[index]
        if byte == 34:
            return out.decode("utf-8", "surrogateescape"), token[index + 1 :]
        if byte == 92 and index + 1 < len(token):
            nxt = token[index + 1]
            if 48 <= nxt <= 55 and index + 3 < len(token):
                out.append(int(token[index + 1 : index + 4], 8) & 0xFF)
                index += 4
                continue
            out.append(_UNESCAPES.get(nxt, nxt))
            index += 2
            continue
        out.append(byte)
        index += 1
    raise ValueError("unterminated quoted name")


def unquote_name(token: str) -> str:
    """A whole path token as git writes it in a diff header: C-unquoted when it is quoted, else as it is.

    Escaped bytes that are not UTF-8 decode with surrogateescape (as tree paths do here), so the name
    encodes back to git's bytes; a token whose quotes do not close is returned as it is."""
    if token.startswith('"') and token.endswith('"') and len(token) > 1:
        try:
            return unquote_path(token.encode("utf-8", "surrogateescape"))[0]
        except ValueError:
            return token
    return token


def fast_import_path(path: str) -> str:
    """A path as `git fast-import` reads it in an `M` command (C-style quoted only when it must be)."""
    if path.startswith('"') or "\n" in path or "\\" in path:
        escaped = path.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    return path


def printed_path(name: str) -> str:
    """A path as git prints it in a progress line (quoted when it is not plain ASCII), as the tree names it."""
    if name.startswith('"'):
        try:
            return unquote_path(name.encode("utf-8", "surrogateescape"))[0]
        except ValueError:
            return name
    return name


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
