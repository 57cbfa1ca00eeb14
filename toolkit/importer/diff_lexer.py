"""The diff lexer: the file sections and hunks of a unified diff (git or plain), bytes kept as written."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field

from toolkit.git import unquote_path

_HUNK_RE = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$", re.S)
_TIMESTAMP_RE = re.compile(
    rb"^(?P<name>.*?)[ \t]+(?P<y>\d{4})-(?P<mo>\d\d)-(?P<d>\d\d)[ T](?P<h>\d\d):(?P<mi>\d\d):(?P<s>\d\d)"
    rb"(?:\.\d+)?(?:[ \t]*(?P<sign>[+-])(?P<oh>\d\d):?(?P<om>\d\d))?[ \t]*$"
)


@dataclass
class Hunk:
    header: bytes  # the `@@ ... @@` line, without its newline
    body: list[bytes]  # the hunk's lines, verbatim (CR kept), without their newlines
    old_start: int
    old_count: int
    new_start: int
    new_count: int
    line: int  # line of the `@@` in the source


@dataclass
class RawFile:
    """One file section as the source wrote it: names still carry their prefixes."""

    line: int
    git: bool
    old_name: str | None = None  # None: /dev/null or not given
    new_name: str | None = None
    old_dev_null: bool = False
    new_dev_null: bool = False
    old_absent: bool = False  # epoch timestamp (`diff -N` for a missing file)
    new_absent: bool = False
    created: bool = False  # `new file mode`
    deleted: bool = False  # `deleted file mode`
    old_mode: str | None = None
    new_mode: str | None = None
    rename_from: str | None = None
    rename_to: str | None = None
    copy: bool = False
    similarity: str | None = None
    binary: bool = False
    hunks: list[Hunk] = field(default_factory=list)
    recounted: list[int] = field(default_factory=list)  # hunk numbers whose line counts were wrong


def decode_name(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _name_and_time(rest: bytes) -> tuple[str | None, bool, bool]:
    """(name, is /dev/null, timestamp is the epoch) from what follows `--- ` or `+++ `."""
    rest = rest.rstrip(b"\r\n")
    absent = False
    if rest.startswith(b'"'):
        name, tail = unquote_path(rest)
        stamp = _TIMESTAMP_RE.match(b"x " + tail.strip()) if tail.strip() else None
    else:
        if b"\t" in rest:
            name_raw, _, tail = rest.partition(b"\t")
            stamp = _TIMESTAMP_RE.match(b"x " + tail.strip())
        else:
            stamp = _TIMESTAMP_RE.match(rest)
            name_raw = stamp["name"] if stamp else rest.rstrip()
        name = decode_name(name_raw)
    if stamp:
        seconds = calendar.timegm((*(int(stamp[k]) for k in ("y", "mo", "d", "h", "mi", "s")), 0, 0, 0))
        if stamp["sign"]:
            offset = int(stamp["oh"]) * 3600 + int(stamp["om"]) * 60
            seconds -= offset if stamp["sign"] == b"+" else -offset
        absent = seconds == 0
    if name == "/dev/null":
        return None, True, absent
    return name, False, absent


def _git_header_names(rest: bytes) -> tuple[str | None, str | None]:
    """The two names of a `diff --git A B` line (quoted, or unquoted with spaces)."""
    rest = rest.rstrip(b"\r")
    try:
        if rest.startswith(b'"'):
            first, tail = unquote_path(rest)
            tail = tail.lstrip(b" ")
            second = unquote_path(tail)[0] if tail.startswith(b'"') else decode_name(tail)
            return first, second
        if b' "' in rest:
            head, _, tail = rest.partition(b' "')
            return decode_name(head), unquote_path(b'"' + tail)[0]
    except ValueError:
        return None, None
    spaces = [i for i, b in enumerate(rest) if b == 32]
    if len(spaces) == 1:
        return decode_name(rest[: spaces[0]]), decode_name(rest[spaces[0] + 1 :])
    for i in spaces:  # `a/x y b/x y`: the split where both sides name the same path
        a, b = rest[:i], rest[i + 1 :]
        if a.split(b"/", 1)[-1] == b.split(b"/", 1)[-1]:
            return decode_name(a), decode_name(b)
    return None, None


class DiffSyntaxError(Exception):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def parse_diff(data: bytes, *, first_line: int = 1) -> tuple[list[RawFile], list[tuple[int, str]]]:
    """Every file section of a unified diff (git or plain), and lines that carry no content.

    Returns (files, problems); problems are (line, message) for `Only in` lines and context diffs.
    Hunk bodies are kept byte for byte; their extent comes from the line counts in the header
    (recounted, and noted, when those are wrong).
    """
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    files: list[RawFile] = []
    problems: list[tuple[int, str]] = []
    count = len(lines)
    index = 0

    def number(i: int) -> int:
        return first_line + i

    def is_plain_header(i: int) -> bool:
        return lines[i].startswith(b"--- ") and i + 1 < count and lines[i + 1].startswith(b"+++ ")

    def parse_hunks(raw: RawFile, i: int) -> int:
        while i < count and lines[i].startswith(b"@@ "):
            match = _HUNK_RE.match(lines[i].rstrip(b"\r"))
            if not match:
                raise DiffSyntaxError(f"malformed hunk header {decode_name(lines[i])!r}", number(i))
            old_start, new_start = int(match[1]), int(match[3])
            old_count = int(match[2]) if match[2] is not None else 1
            new_count = int(match[4]) if match[4] is not None else 1
            j, old_left, new_left = i + 1, old_count, new_count
            while (old_left > 0 or new_left > 0) and j < count:
                line = lines[j]
                lead = line[:1]
                if lead == b" " or line in (b"", b"\r"):
                    old_left, new_left = old_left - 1, new_left - 1
                elif lead == b"-":
                    old_left -= 1
                elif lead == b"+":
                    new_left -= 1
                elif lead != b"\\":
                    break
                j += 1
            header = lines[i]
            if old_left != 0 or new_left != 0:
                j, old_count, new_count = _recount(lines, i + 1)
                if j == i + 1:
                    raise DiffSyntaxError(f"hunk #{len(raw.hunks) + 1} has no lines", number(i))
                header = b"@@ -%d,%d +%d,%d @@%s" % (old_start, old_count, new_start, new_count, match[5])
                raw.recounted.append(len(raw.hunks) + 1)
            elif j < count and lines[j].startswith(b"\\"):
                j += 1  # `\ No newline at end of file` after the last counted line
            raw.hunks.append(Hunk(header, lines[i + 1 : j], old_start, old_count, new_start, new_count, number(i)))
            i = j
        return i

    while index < count:
        line = lines[index]
        text = line.rstrip(b"\r")
        if text.startswith(b"diff --git "):
            raw = RawFile(line=number(index), git=True)
            raw.old_name, raw.new_name = _git_header_names(text[len(b"diff --git ") :])
            index += 1
            while index < count:
                text = lines[index].rstrip(b"\r")
                if text.startswith(b"old mode "):
                    raw.old_mode = decode_name(text[9:]).strip()
                elif text.startswith(b"new mode "):
                    raw.new_mode = decode_name(text[9:]).strip()
                elif text.startswith(b"deleted file mode "):
                    raw.deleted, raw.old_mode = True, decode_name(text[18:]).strip()
                elif text.startswith(b"new file mode "):
                    raw.created, raw.new_mode = True, decode_name(text[14:]).strip()
                elif text.startswith((b"rename from ", b"copy from ")):
                    raw.copy = text.startswith(b"copy")
                    raw.rename_from = _name_only(text.split(b" ", 2)[2])
                elif text.startswith((b"rename to ", b"copy to ")):
                    raw.rename_to = _name_only(text.split(b" ", 2)[2])
                elif text.startswith(b"similarity index "):
                    raw.similarity = decode_name(text[17:]).strip()
                elif text.startswith((b"dissimilarity index ", b"index ")):
                    pass
                elif text.startswith(b"--- "):
                    name, dev_null, _ = _name_and_time(text[4:])
                    raw.old_name, raw.old_dev_null = (name, False) if name else (raw.old_name, dev_null)
                elif text.startswith(b"+++ "):
                    name, dev_null, _ = _name_and_time(text[4:])
                    raw.new_name, raw.new_dev_null = (name, False) if name else (raw.new_name, dev_null)
                elif text.startswith(b"GIT binary patch") or (text.startswith(b"Binary files ") and b" differ" in text):
                    raw.binary = True
                else:
                    break
                index += 1
            index = parse_hunks(raw, index)
            files.append(raw)
        elif is_plain_header(index):
            raw = RawFile(line=number(index), git=False)
            raw.old_name, raw.old_dev_null, raw.old_absent = _name_and_time(lines[index][4:])
            raw.new_name, raw.new_dev_null, raw.new_absent = _name_and_time(lines[index + 1][4:])
            index = parse_hunks(raw, index + 2)
            if not raw.hunks:
                raise DiffSyntaxError("file header without any hunk", raw.line)
            files.append(raw)
        elif text.startswith(b"Binary files ") and text.endswith(b" differ"):
            raw = RawFile(line=number(index), git=False, binary=True)
            names = text[len(b"Binary files ") : -len(b" differ")]
            raw.old_name, _, raw.new_name = (decode_name(n) for n in names.partition(b" and "))
            files.append(raw)
            index += 1
        elif text.startswith(b"Only in "):
            problems.append(
                (number(index), f"{decode_name(text)!r} carries no content (make the diff with `diff -ruN`)")
            )
            index += 1
        elif text.startswith(b"*** ") and index + 1 < count and lines[index + 1].startswith(b"--- "):
            problems.append((number(index), "context diffs are not supported; make a unified diff (`diff -u`)"))
            index += 1
        else:
            index += 1  # preamble, diffstat, `diff -ruN a b`, `Index:` lines: no content
    return files, problems


def _name_only(token: bytes) -> str:
    token = token.rstrip(b"\r")
    return unquote_path(token)[0] if token.startswith(b'"') else decode_name(token)


def _recount(lines: list[bytes], start: int) -> tuple[int, int, int]:
    """(end, old count, new count) of a hunk whose header counts are wrong, as `git apply --recount`."""
    old = new = 0
    j = start
    while j < len(lines):
        line = lines[j]
        lead = line[:1]
        if lead not in (b" ", b"-", b"+", b"\\"):
            break
        if line.startswith(b"--- ") and j + 1 < len(lines) and lines[j + 1].startswith(b"+++ "):
            break  # the next file's header
        if line == b"-- " and j + 1 < len(lines) and re.match(rb"^\d+\.\d+", lines[j + 1]):
            break  # a format-patch signature
        if lead == b" ":
            old, new = old + 1, new + 1
        elif lead == b"-":
            old += 1
        elif lead == b"+":
            new += 1
        j += 1
    return j, old, new
