"""The import stage: adopt an existing fork or patch as new patches of a managed series.

Sources become *units*, one per mail, commit or plain diff: a patch or mbox file (plain
`diff -ruN` output, `git diff`, or `git format-patch` mails split and read by `git mailsplit` and
`git mailinfo`, as `git am` reads them), a git range in a local repository (one unit per commit),
or a pair of wheels or sdists compared member by member (one unit). Each unit is parsed into
per-file changes, their paths resolved against the tree (the `-p` strip level is detected) and
checked (no absolute paths, no `..`, nothing in `.git`, no binary, symlink or submodule changes),
and written back as canonical git diff sections, hunk bodies byte for byte (CR included).

The pinned base is materialized with the existing series applied; each unit must apply there
with zero fuzz (and, unless allowed, zero offset), else every failing file and hunk is reported
and nothing is written. Applied units are committed in groups (`--split`), with headers added to
the commit message, rendered by the export stage, applied once more to a fresh base to prove they
apply cleanly and re-export byte-identically, and only then written to the series directory.
"""

from __future__ import annotations

import calendar
import re
import tempfile
import time
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from packaging.utils import InvalidSdistFilename, canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from toolkit import tempnames
from toolkit.apply import CLEAN, apply_series
from toolkit.checkout import UPSTREAM_REF, Checkout
from toolkit.errors import VpatchError
from toolkit.export import ExportPlan, plan_export, write_export
from toolkit.git import TOOL_EMAIL, TOOL_NAME, Git, GitError, fast_import_path
from toolkit.index import fetch_artifact, list_release_files
from toolkit.lint import lint_headers
from toolkit.model import (
    Artifact,
    PathPair,
    Pin,
    Series,
    UpstreamStatus,
    check_tree_path,
    empty_series,
    load_series,
    parse_patch,
)
from toolkit.project import Project
from toolkit.render import slugify

# Diff text exactly as git writes it, whatever a user's config or attributes say: full blob ids, no rename
# detection (a rename is a delete and an add), no colour, no textconv or external diff, a/ and b/ prefixes.
PLAIN_DIFF_ARGS = (
    "--full-index",
    "--no-renames",
    "--no-color",
    "--no-textconv",
    "--no-ext-diff",
    "--src-prefix=a/",
    "--dst-prefix=b/",
)
SPLIT_MODES = ("none", "per-file", "per-dir")
# Commits made from a source that has no date of its own (plain diffs, wheel pairs): fixed, so the
# same input gives the same patch bytes (1980-01-01, the zip epoch, as the sdist base commits use).
FIXED_DATE = "315532800 +0000"
# Wheel members at least this large whose size and CRC-32 agree are taken as equal without reading
# them (the compiled extensions of a real vLLM wheel are hundreds of MB each).
LARGE_MEMBER = 8 << 20

_HUNK_RE = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$", re.S)
_HEADER_LINE_RE = re.compile(r"^(?P<key>[A-Za-z][A-Za-z0-9-]*):(?:\s(?P<value>.*))?$")
_TIMESTAMP_RE = re.compile(
    rb"^(?P<name>.*?)[ \t]+(?P<y>\d{4})-(?P<mo>\d\d)-(?P<d>\d\d)[ T](?P<h>\d\d):(?P<mi>\d\d):(?P<s>\d\d)"
    rb"(?:\.\d+)?(?:[ \t]*(?P<sign>[+-])(?P<oh>\d\d):?(?P<om>\d\d))?[ \t]*$"
)
_MBOX_FROM_RE = re.compile(rb"^From \S+ ")
_MAIL_HEADER_RE = re.compile(rb"^(From|Subject|Date|Message-I[dD]|To|Cc|MIME-Version|Content-[A-Za-z-]+):")
_PATCH_PREFIX_RE = re.compile(r"^\s*(?:\[[^\]]*\bPATCH\b[^\]]*\]\s*)+", re.I)
_COVER_RE = re.compile(r"\bPATCH\b[^\]]*\b0+/\d+\]", re.I)
_REQ_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)$")
_AUTHOR_RE = re.compile(r"^(?P<name>[^<>]*?)\s*<(?P<email>[^<>\s]*)>$")
_APPLY_OFFSET = re.compile(r"^Hunk #(\d+) succeeded at (\d+) \(offset (-?\d+) lines?\)\.$")
_APPLY_CHECKING = re.compile(r"^Checking patch (.+)\.\.\.$")
_APPLY_APPLYING = re.compile(r"^Applying patch (.+) with \d+ rejects?\.\.\.$")
_APPLY_REJECTED = re.compile(r"^Rejected hunk #(\d+)\.$")
_APPLY_FILE_ERROR = re.compile(
    r"^error: (?P<path>.+?): (?P<why>does not exist in index|No such file or directory|"
    r"already exists in (?:index|working directory)|does not match index|wrong type|"
    r"patch does not apply)$"
)


# ---------------------------------------------------------------- file changes


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


@dataclass
class FileChange(PathPair):
    """One file's change with paths resolved in the tree, rendered as a canonical git diff section."""

    old_path: str | None  # None: the file is added
    new_path: str | None  # None: the file is deleted
    old_mode: str | None
    new_mode: str | None
    kind: str  # modify, add, delete, rename, copy
    similarity: str | None
    hunks: list[Hunk]
    line: int
    recounted: list[int] = field(default_factory=list)

    @property
    def added(self) -> int:
        return sum(1 for h in self.hunks for ln in h.body if ln[:1] == b"+")

    @property
    def removed(self) -> int:
        return sum(1 for h in self.hunks for ln in h.body if ln[:1] == b"-")

    def render(self) -> bytes:
        old = self.old_path or self.new_path or ""
        new = self.new_path or self.old_path or ""
        out = [b"diff --git " + git_quote("a/" + old) + b" " + git_quote("b/" + new)]
        if self.kind == "add":
            out.append(b"new file mode " + (self.new_mode or "100644").encode())
        elif self.kind == "delete":
            out.append(b"deleted file mode " + (self.old_mode or "100644").encode())
        elif self.old_mode and self.new_mode and self.old_mode != self.new_mode:
            out += [b"old mode " + self.old_mode.encode(), b"new mode " + self.new_mode.encode()]
        if self.kind in ("rename", "copy"):
            if self.similarity:
                out.append(b"similarity index " + self.similarity.encode())
            out += [
                f"{self.kind} from ".encode() + git_quote(old),
                f"{self.kind} to ".encode() + git_quote(new),
            ]
        if self.hunks:
            out.append(b"--- " + (_label("a/", self.old_path) if self.kind != "add" else b"/dev/null"))
            out.append(b"+++ " + (_label("b/", self.new_path) if self.kind != "delete" else b"/dev/null"))
            for hunk in self.hunks:
                out.append(hunk.header)
                out.extend(hunk.body)
        return b"\n".join(out) + b"\n"


def _label(prefix: str, path: str | None) -> bytes:
    quoted = git_quote(prefix + (path or ""))
    return quoted + (b"\t" if b" " in quoted and not quoted.startswith(b'"') else b"")


_ESCAPES = {7: b"\\a", 8: b"\\b", 9: b"\\t", 10: b"\\n", 11: b"\\v", 12: b"\\f", 13: b"\\r", 34: b'\\"', 92: b"\\\\"}
_UNESCAPES = {ord(k): v for k, v in zip('abtnvfr"\\', b'\a\b\t\n\v\f\r"\\', strict=True)}


def git_quote(path: str) -> bytes:
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


def _unquote(token: bytes) -> tuple[str, bytes]:
    """A C-quoted name at the start of `token`: (name, the rest after the closing quote)."""
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


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _name_and_time(rest: bytes) -> tuple[str | None, bool, bool]:
    """(name, is /dev/null, timestamp is the epoch) from what follows `--- ` or `+++ `."""
    rest = rest.rstrip(b"\r\n")
    absent = False
    if rest.startswith(b'"'):
        name, tail = _unquote(rest)
        stamp = _TIMESTAMP_RE.match(b"x " + tail.strip()) if tail.strip() else None
    else:
        if b"\t" in rest:
            name_raw, _, tail = rest.partition(b"\t")
            stamp = _TIMESTAMP_RE.match(b"x " + tail.strip())
        else:
            stamp = _TIMESTAMP_RE.match(rest)
            name_raw = stamp["name"] if stamp else rest.rstrip()
        name = _decode(name_raw)
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
            first, tail = _unquote(rest)
            tail = tail.lstrip(b" ")
            second = _unquote(tail)[0] if tail.startswith(b'"') else _decode(tail)
            return first, second
        if b' "' in rest:
            head, _, tail = rest.partition(b' "')
            return _decode(head), _unquote(b'"' + tail)[0]
    except ValueError:
        return None, None
    spaces = [i for i, b in enumerate(rest) if b == 32]
    if len(spaces) == 1:
        return _decode(rest[: spaces[0]]), _decode(rest[spaces[0] + 1 :])
    for i in spaces:  # `a/x y b/x y`: the split where both sides name the same path
        a, b = rest[:i], rest[i + 1 :]
        if a.split(b"/", 1)[-1] == b.split(b"/", 1)[-1]:
            return _decode(a), _decode(b)
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
                raise DiffSyntaxError(f"malformed hunk header {_decode(lines[i])!r}", number(i))
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
                    raw.old_mode = _decode(text[9:]).strip()
                elif text.startswith(b"new mode "):
                    raw.new_mode = _decode(text[9:]).strip()
                elif text.startswith(b"deleted file mode "):
                    raw.deleted, raw.old_mode = True, _decode(text[18:]).strip()
                elif text.startswith(b"new file mode "):
                    raw.created, raw.new_mode = True, _decode(text[14:]).strip()
                elif text.startswith((b"rename from ", b"copy from ")):
                    raw.copy = text.startswith(b"copy")
                    raw.rename_from = _name_only(text.split(b" ", 2)[2])
                elif text.startswith((b"rename to ", b"copy to ")):
                    raw.rename_to = _name_only(text.split(b" ", 2)[2])
                elif text.startswith(b"similarity index "):
                    raw.similarity = _decode(text[17:]).strip()
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
            raw.old_name, _, raw.new_name = (_decode(n) for n in names.partition(b" and "))
            files.append(raw)
            index += 1
        elif text.startswith(b"Only in "):
            problems.append((number(index), f"{_decode(text)!r} carries no content (make the diff with `diff -ruN`)"))
            index += 1
        elif text.startswith(b"*** ") and index + 1 < count and lines[index + 1].startswith(b"--- "):
            problems.append((number(index), "context diffs are not supported; make a unified diff (`diff -u`)"))
            index += 1
        else:
            index += 1  # preamble, diffstat, `diff -ruN a b`, `Index:` lines: no content
    return files, problems


def _name_only(token: bytes) -> str:
    token = token.rstrip(b"\r")
    return _unquote(token)[0] if token.startswith(b'"') else _decode(token)


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


# ---------------------------------------------------------------- path resolution


def _strip(name: str, level: int) -> str | None:
    # Components are counted as git apply -p counts them: `b//etc/x` -p1 is `/etc/x` (absolute), not `etc/x`.
    parts = name.split("/")
    return "/".join(parts[level:]) if len(parts) > level else None


def _unsafe(path: str) -> str | None:
    problem = check_tree_path(path)
    if problem:
        return problem
    if "" in path.split("/"):
        return f"path {path!r} has an empty component ('//')"
    if any(part.lower() == ".git" for part in path.split("/")):
        return f"path {path!r} is inside .git"
    return None


def resolve_files(raws: list[RawFile], tree: set[str], where: str, *, level: int | None = None) -> list[FileChange]:
    """Turn raw sections into FileChanges with tree paths; every refusal is a VpatchError at `where:line`."""

    def fail(message: str, line: int) -> VpatchError:
        return VpatchError(message, path=where, line=line)

    for raw in raws:
        for name in (raw.old_name, raw.new_name, raw.rename_from, raw.rename_to):
            if name is None:
                continue
            if name.startswith("/"):
                raise fail(f"patch touches a path outside the tree: absolute path {name!r}", raw.line)
            if ".." in name.split("/"):
                raise fail(
                    f"patch touches a path outside the tree: path {name!r} leaves the tree through '..'", raw.line
                )
        if raw.binary:
            shown = _strip(raw.new_name or raw.old_name or "?", 1) or raw.new_name or raw.old_name
            raise fail(f"binary change to {shown}: a binary difference cannot be carried as a patch", raw.line)
        for mode in (raw.old_mode, raw.new_mode):
            if mode in ("120000", "160000"):
                what = "symlink" if mode == "120000" else "submodule"
                raise fail(f"{what} change to {raw.new_name or raw.old_name}: not imported", raw.line)
            if mode is not None and mode not in ("100644", "100755"):
                raise fail(f"unsupported file mode {mode}", raw.line)
    if level is None:
        level = _detect_level(raws, tree)
    changes: list[FileChange] = []
    for raw in raws:
        old = _strip(raw.old_name, level) if raw.old_name else None
        new = _strip(raw.new_name, level) if raw.new_name else None
        if (raw.old_name and old is None) or (raw.new_name and new is None):
            raise fail(f"cannot strip {level} leading director(y/ies) from {raw.old_name or raw.new_name!r}", raw.line)
        single_empty_old = len(raw.hunks) == 1 and raw.hunks[0].old_start == 0 and raw.hunks[0].old_count == 0
        if raw.rename_from or raw.rename_to:
            if not (raw.rename_from and raw.rename_to):
                raise fail("rename or copy without both its from and to lines", raw.line)
            kind, old, new = ("copy" if raw.copy else "rename"), raw.rename_from, raw.rename_to
        elif (
            raw.created
            or raw.old_dev_null
            or raw.old_absent
            or (not raw.git and single_empty_old and (old or new) not in tree)
        ):
            kind, old, new = "add", None, new or old
        elif raw.deleted or raw.new_dev_null or raw.new_absent:
            kind, old, new = "delete", old or new, None
        else:
            if old is None or new is None:
                raise fail("file section names no file", raw.line)
            if old != new and not raw.git:
                old = new = old if old in tree and new not in tree else new  # `--- x.orig` / `+++ x`
            if old != new:
                raise fail(f"file section names two files ({old!r}, {new!r}) but is not a rename", raw.line)
            kind = "modify"
        for path in (old, new):
            if path is not None:
                problem = _unsafe(path)
                if problem:
                    raise fail(f"patch touches a path outside the tree: {problem}", raw.line)
        for hunk in raw.hunks:
            try:
                b"\n".join(hunk.body).decode("utf-8")
            except UnicodeDecodeError:
                raise fail(
                    f"{new or old}: hunk #{raw.hunks.index(hunk) + 1} is not UTF-8 text; patch files must be UTF-8",
                    hunk.line,
                ) from None
        if kind == "modify" and not raw.hunks and not (raw.old_mode and raw.new_mode):
            continue  # a header without content (an identical file): nothing to carry
        changes.append(
            FileChange(old, new, raw.old_mode, raw.new_mode, kind, raw.similarity, raw.hunks, raw.line, raw.recounted)
        )
    return changes


def _detect_level(raws: list[RawFile], tree: set[str]) -> int:
    """-p1 (the convention) unless -p0 names strictly more of the files that must already exist."""
    existing = [
        name
        for raw in raws
        if not (raw.created or raw.old_dev_null or raw.old_absent or raw.rename_from)
        for name in (raw.old_name, raw.new_name)
        if name
    ]
    if not existing:
        names = [n for raw in raws for n in (raw.old_name, raw.new_name) if n]
        return 1 if all(_strip(n, 1) for n in names) else 0
    score = {level: sum(1 for n in existing if _strip(n, level) in tree) for level in (1, 0)}
    return 0 if score[0] > score[1] else 1


# ---------------------------------------------------------------- units


@dataclass
class Unit:
    """One mail, commit or diff: what becomes one patch, or several with --split."""

    label: str  # for messages: "fork.diff", "mail 2 (subject)", "commit 1a2b3c4d5e6f"
    where: str  # error location (a file or repository path)
    origin: str
    files: list[FileChange]
    subject: str | None = None
    body: str = ""
    author: tuple[str, str] | None = None  # (name, email)
    date: str | None = None


@dataclass(frozen=True)
class ImportOptions:
    split: str = "none"
    feature: str | None = None
    upstream_status: str | None = None
    subject: str | None = None
    author: str | None = None
    allow_offset: bool = False
    dry_run: bool = False


@dataclass(frozen=True)
class NewPatch:
    name: str
    subject: str
    feature: str
    upstream_status: str
    origin: str
    author: str
    files: tuple[str, ...]
    added: int
    removed: int


@dataclass
class ImportResult:
    version: str
    directory: Path
    existing: int
    patches: list[NewPatch]
    notes: list[str]
    skipped: list[str]
    source: dict
    written: bool = False
    seconds: float = 0.0
    already: list[str] = field(default_factory=list)  # the series' patches that carry this source already

    def as_dict(self) -> dict:
        return {
            "version": self.version,
            "directory": str(self.directory),
            "existing": self.existing,
            "source": self.source,
            "patches": [p.__dict__ for p in self.patches],
            "notes": self.notes,
            "skipped": self.skipped,
            "written": self.written,
            "already_imported": self.already,
            "seconds": round(self.seconds, 3),
        }


class Source:
    """Where the changes come from; `units` parses them against the tree they will be applied to."""

    kind = "file"
    label = ""
    skipped: tuple[str, ...] = ()  # members of an archive pair that were not compared, and why

    def units(self, tree: set[str], notes: list[str]) -> list[Unit]:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict:
        return {"kind": self.kind, "label": self.label}


class FileSource(Source):
    """A patch or mbox file: plain diff, git diff, or format-patch mails."""

    kind = "file"

    def __init__(self, path: Path, scratch: Path) -> None:
        self.path = path
        self.scratch = scratch
        self.label = path.name

    def units(self, tree: set[str], notes: list[str]) -> list[Unit]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise VpatchError("no such patch file", path=self.path) from None
        except IsADirectoryError:
            raise VpatchError("is a directory, not a patch file", path=self.path) from None
        if not data.strip():
            raise VpatchError("not a diff: the file is empty", path=self.path)
        if _looks_like_mail(data):
            return self._mail_units(data, tree, notes)
        files = _parse(data, str(self.path), 1)
        changes = resolve_files(files, tree, str(self.path))
        if not changes:
            raise _not_a_diff(self.path)
        _note_recounts(changes, str(self.path), notes)
        return [Unit(self.label, str(self.path), f"import, file {self.label}", changes)]

    def _mail_units(self, data: bytes, tree: set[str], notes: list[str]) -> list[Unit]:
        with tempfile.TemporaryDirectory(prefix=tempnames.prefix("mails"), dir=self.scratch) as tmp:
            out = Path(tmp) / "split"
            out.mkdir()
            mbox = Path(tmp) / "mbox"
            mbox.write_bytes(data if _MBOX_FROM_RE.match(data) else b"From mailsplit Mon Sep 17 00:00:00 2001\n" + data)
            git = Git(Path(tmp))
            try:
                git.run("mailsplit", "-b", "--keep-cr", f"-o{out}", str(mbox))
            except GitError as exc:
                raise VpatchError(f"not a readable mbox: {exc}", path=self.path) from None
            mails = sorted(out.iterdir())
            units: list[Unit] = []
            for number, mail in enumerate(mails, start=1):
                unit = self._mail_unit(git, mail, number, len(mails), data, tree, notes)
                if unit is not None:
                    units.append(unit)
        if not units:
            raise _not_a_diff(self.path)
        return units

    def _mail_unit(
        self, git: Git, mail: Path, number: int, total: int, data: bytes, tree: set[str], notes: list[str]
    ) -> Unit | None:
        msg, patch = mail.with_suffix(".msg"), mail.with_suffix(".patch")
        proc = git.run("mailinfo", "-k", "-u", "--quoted-cr=nowarn", str(msg), str(patch), input=mail.read_bytes())
        info: dict[str, str] = {}
        for line in proc.stdout.decode("utf-8", "replace").splitlines():
            key, _, value = line.partition(": ")
            info[key.lower()] = value.strip()
        raw_subject = info.get("subject", "").strip()
        subject = _PATCH_PREFIX_RE.sub("", raw_subject).strip()
        label = f"mail {number} ({subject or 'no subject'})" if total > 1 else f"{self.label} ({subject or 'mail'})"
        diff = patch.read_bytes()
        first = data.find(diff[:4096]) if diff else -1
        # Lines count in the mbox when the diff is there verbatim (not transfer-encoded); else in the mail.
        where = str(self.path) if first >= 0 else f"{self.path} (mail {number})"
        offset = data.count(b"\n", 0, first) if first >= 0 else 0
        files = _parse(diff, where, offset + 1)
        if not files:
            if _COVER_RE.search(raw_subject):
                notes.append(f"{label}: a cover letter, skipped")
            else:
                notes.append(f"{label}: holds no diff, skipped")
            return None
        changes = resolve_files(files, tree, where)
        if not changes:
            notes.append(f"{label}: changes nothing, skipped")
            return None
        _note_recounts(changes, where, notes)
        author = (info.get("author", ""), info.get("email", "")) if info.get("email") else None
        origin = f"import, file {self.label}" + (f", mail {number}" if total > 1 else "")
        return Unit(
            label,
            where,
            origin,
            changes,
            subject=subject or None,
            body=msg.read_bytes().decode("utf-8", "replace"),
            author=author,
            date=info.get("date") or None,
        )


def _looks_like_mail(data: bytes) -> bool:
    lines = data.lstrip(b"\n").split(b"\n", 12)
    if _MBOX_FROM_RE.match(lines[0]):
        return any(_MAIL_HEADER_RE.match(line) for line in lines[1:])
    return bool(_MAIL_HEADER_RE.match(lines[0])) and any(line.startswith(b"Subject:") for line in lines)


def _parse(data: bytes, where: str, first_line: int) -> list[RawFile]:
    try:
        files, problems = parse_diff(data, first_line=first_line)
    except DiffSyntaxError as exc:
        raise VpatchError(f"malformed diff: {exc.message}", path=where, line=exc.line) from None
    if problems:
        line, message = problems[0]
        raise VpatchError(message, path=where, line=line)
    return files


def _not_a_diff(path: Path | str) -> VpatchError:
    return VpatchError(
        "not a diff: no file changes found (expected a unified diff, `git diff` output or format-patch mails)",
        path=path,
    )


def _note_recounts(changes: list[FileChange], where: str, notes: list[str]) -> None:
    for change in changes:
        for number in change.recounted:
            hunk = change.hunks[number - 1]
            notes.append(
                f"{where}:{hunk.line}: {change.path}: hunk #{number}: wrong line counts in its header, recounted"
            )


class GitRangeSource(Source):
    """Commits `A..B` of a local repository, one unit per commit."""

    kind = "git"

    def __init__(self, repo: Path, range_: str) -> None:
        self.repo = repo
        self.range = range_
        self.label = f"{repo} {range_}"

    def units(self, tree: set[str], notes: list[str]) -> list[Unit]:
        if not self.repo.is_dir():
            raise VpatchError("no such repository", path=self.repo)
        if self.range.startswith("-") or ".." not in self.range:
            raise VpatchError(f"--git needs a range A..B, not {self.range!r}", path=self.repo)
        repo = Git(self.repo)
        if not repo.ok("rev-parse", "--git-dir"):
            raise VpatchError("not a git repository", path=self.repo)
        for side in re.split(r"\.\.\.?", self.range, maxsplit=1):
            if side and (side.startswith("-") or repo.rev_parse(side) is None):
                raise VpatchError(f"unknown revision {side!r} in the range {self.range}", path=self.repo)
        try:
            commits = repo.commits(self.range)
            merges = repo.out("rev-list", "--merges", self.range).split()
        except GitError as exc:
            raise VpatchError(f"bad range {self.range!r}: {exc}", path=self.repo) from None
        if not commits:
            raise VpatchError(f"the range {self.range} holds no commits", path=self.repo)
        if merges:
            raise VpatchError(
                f"the range {self.range} holds merge commit {merges[0][:12]}; import a linear range", path=self.repo
            )
        name = self._repo_name(repo)
        meta_raw = repo.run(
            "log",
            "--no-show-signature",
            "--reverse",
            "--topo-order",
            "--format=%H%x00%an%x00%ae%x00%ad%x00%B%x00%x01",
            "--date=raw",
            self.range,
        ).stdout.decode("utf-8", "replace")
        meta = {}
        for record in meta_raw.split("\x00\x01")[:-1]:
            sha, author, email, date, message = record.lstrip("\n").split("\x00", 4)
            meta[sha] = (author, email, date, message)
        diffs_raw = repo.run(
            "log",
            "--no-show-signature",
            "--reverse",
            "--topo-order",
            "--format=%x00%H",
            "-p",
            *PLAIN_DIFF_ARGS,
            self.range,
        ).stdout
        diffs: dict[str, bytes] = {}
        for block in re.split(rb"(?:^|\n)\x00", diffs_raw):
            if block:
                sha_raw, _, diff = block.partition(b"\n")
                diffs[sha_raw.decode()] = diff
        units = []
        for sha in commits:
            author, email, date, message = meta[sha]
            subject, _, body = message.strip("\n").partition("\n\n")
            subject = " ".join(subject.split())
            where = f"{self.repo} {sha[:12]}"
            files = _parse(diffs.get(sha, b""), where, 1)
            changes = resolve_files(files, tree, where, level=1)
            if not changes:
                notes.append(f"commit {sha[:12]} ({subject}): changes nothing, skipped")
                continue
            units.append(
                Unit(
                    f"commit {sha[:12]} ({subject})",
                    where,
                    f"import, git {name} {sha}",
                    changes,
                    subject=subject or None,
                    body=body,
                    author=(author, email),
                    date=date,
                )
            )
        if not units:
            raise VpatchError(f"the commits of {self.range} change nothing", path=self.repo)
        return units

    def _repo_name(self, repo: Git) -> str:
        """The repository as named in Origin: its origin remote's URL, else its directory name (no local paths)."""
        proc = repo.run("config", "--get", "remote.origin.url", check=False)
        url = proc.stdout.decode("utf-8", "replace").strip()
        if url and "://" in url and "@" not in url.split("://", 1)[1].split("/", 1)[0]:
            return url
        return self.repo.resolve().name


# ---------------------------------------------------------------- wheel and sdist pairs


@dataclass(frozen=True)
class Archive:
    path: Path
    kind: str  # wheel or sdist


class PairSource(Source):
    """A stock and a forked wheel (or sdist), diffed member by member."""

    def __init__(self, base: Archive, fork: Archive, project: str, scratch: Path) -> None:
        if base.kind != fork.kind:
            raise VpatchError(f"--base is a {base.kind} but --fork is a {fork.kind}; compare like with like")
        self.base = base
        self.fork = fork
        self.package = project.replace("-", "_")
        self.scratch = scratch
        self.kind = base.kind
        self.label = f"{fork.path.name} vs {base.path.name}"

    def describe(self) -> dict:
        return {"kind": self.kind, "label": self.label, "base": str(self.base.path), "fork": str(self.fork.path)}

    def units(self, tree: set[str], notes: list[str]) -> list[Unit]:
        self._open: list[zipfile.ZipFile] = []
        try:
            return self._units(tree)
        finally:
            for archive in self._open:
                archive.close()

    def _units(self, tree: set[str]) -> list[Unit]:
        skipped: list[str] = []
        base = self._members(self.base.path, skipped)
        fork = self._members(self.fork.path, [])
        changed = sorted(p for p in base.keys() | fork.keys() if _differs(base.get(p), fork.get(p)))
        if not changed:
            raise VpatchError(f"{self.fork.path.name} and {self.base.path.name} do not differ (outside metadata)")
        for path in changed:
            for side in (base.get(path), fork.get(path)):
                if side is not None and side.is_binary():
                    raise VpatchError(
                        f"binary difference in {path} between {self.fork.path.name} and {self.base.path.name}: "
                        "it cannot be carried as a patch",
                        path=self.fork.path,
                    )
        diff = self._git_diff(base, fork, changed)
        where = str(self.fork.path)
        files = _parse(diff, where, 1)
        changes = resolve_files(files, tree, where, level=1)
        self.skipped = tuple(dict.fromkeys(skipped))
        origin = f"import, {self.kind} {self.fork.path.name} vs {self.base.path.name}"
        return [Unit(self.fork.path.name, where, origin, changes)]

    def _skip(self, name: str) -> str | None:
        top = name.split("/", 1)[0]
        if self.kind == "wheel":
            if top.endswith(".dist-info") or top.endswith(".data"):
                return f"{top}/ (wheel metadata and data)"
        elif name == "PKG-INFO":
            return "PKG-INFO (sdist metadata)"
        elif top.endswith(".egg-info"):
            return f"{top}/ (sdist metadata)"
        if name == f"{self.package}/_version.py":
            return f"{name} (generated at build time)"
        return None

    def _members(self, path: Path, skipped: list[str]) -> dict[str, Member]:
        if self.kind == "wheel":
            return self._wheel_members(path, skipped)
        return self._sdist_members(path, skipped)

    def _wheel_members(self, path: Path, skipped: list[str]) -> dict[str, Member]:
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise VpatchError(f"not a wheel (zip) file: {exc}", path=path) from None
        self._open.append(archive)
        members: dict[str, Member] = {}
        for info in archive.infolist():
            name = info.filename
            if name.endswith("/"):
                continue
            problem = _unsafe(name)
            if problem:
                raise VpatchError(f"unsafe wheel member: {problem}", path=path)
            why = self._skip(name)
            if why:
                skipped.append(why)
                continue
            mode = "100755" if (info.external_attr >> 16) & 0o111 else "100644"
            members[name] = Member(archive, info, None, mode)
        return members

    def _sdist_members(self, path: Path, skipped: list[str]) -> dict[str, Member]:
        from toolkit.sources.sdist import read_members

        members: dict[str, Member] = {}
        for name, mode, content in read_members(path):
            why = self._skip(name)
            if why:
                skipped.append(why)
                continue
            members[name] = Member(None, None, content, mode)
        return members

    def _git_diff(self, base: dict[str, Member], fork: dict[str, Member], changed: list[str]) -> bytes:
        with tempfile.TemporaryDirectory(prefix=tempnames.prefix("pair"), dir=self.scratch) as tmp:
            repo = Git.init(Path(tmp) / "pair.git", bare=True)
            stream = bytearray()
            mark = 0
            sides = []
            for members in (base, fork):
                entries = []
                for path in changed:
                    member = members.get(path)
                    if member is None:
                        continue
                    content = member.read()
                    mark += 1
                    stream += b"blob\nmark :%d\ndata %d\n" % (mark, len(content)) + content + b"\n"
                    entries.append((path, member.mode, mark))
                sides.append(entries)
            for ref, entries, parent in (("refs/heads/base", sides[0], None), ("refs/heads/fork", sides[1], "base")):
                stream += (
                    f"commit {ref}\nauthor {TOOL_NAME} <{TOOL_EMAIL}> {FIXED_DATE}\n"
                    f"committer {TOOL_NAME} <{TOOL_EMAIL}> {FIXED_DATE}\ndata 0\n"
                ).encode()
                if parent:
                    stream += b"deleteall\n"
                for path, mode, number in entries:
                    stream += f"M {mode} :{number} {fast_import_path(path)}\n".encode("utf-8", "surrogateescape")
                stream += b"\n"
            stream += b"done\n"
            repo.run("fast-import", "--quiet", "--done", input=bytes(stream))
            return repo.run(
                "diff",
                *PLAIN_DIFF_ARGS,
                "refs/heads/base",
                "refs/heads/fork",
            ).stdout


@dataclass
class Member:
    archive: zipfile.ZipFile | None
    info: zipfile.ZipInfo | None
    content: bytes | None
    mode: str

    def read(self) -> bytes:
        if self.content is None:
            assert self.archive is not None and self.info is not None
            self.content = self.archive.read(self.info)
        return self.content

    def is_binary(self) -> bool:
        data = self.read()
        if b"\x00" in data[:8000]:
            return True
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return True
        return False


def _differs(a: Member | None, b: Member | None) -> bool:
    if a is None or b is None:
        return True
    if a.info is not None and b.info is not None:
        if (a.info.file_size, a.info.CRC) != (b.info.file_size, b.info.CRC):
            return True
        if a.info.file_size >= LARGE_MEMBER:
            return False
    return a.read() != b.read() or (a.mode != b.mode and a.info is None)


def resolve_archive(spec: str, project: Project, *, prefer: str, wheel_like: Path | None = None) -> Archive:
    """A path to a wheel or sdist, or `NAME==VERSION`: the pinned file of that version (or the index's)."""
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_file():
            raise VpatchError("not a wheel or sdist file", path=path)
        return Archive(path.resolve(), _archive_kind(path))
    match = _REQ_RE.match(spec.strip())
    if not match:
        raise VpatchError(f"no such file, and not NAME==VERSION: {spec!r}")
    name, version_text = match["name"], match["version"]
    try:
        version = Version(version_text)
    except InvalidVersion:
        raise VpatchError(f"invalid version in {spec!r}") from None
    cache = project.options.cache_dir
    if canonicalize_name(name) == canonicalize_name(project.pins.project):
        pin = next((p for p in project.pins.pins if p.version == version), None)
        if pin is not None:
            artifact = _pinned_artifact(pin, prefer, wheel_like)
            return Archive(fetch_artifact(cache, artifact, quiet=project.options.json), artifact.kind)
    files = list_release_files(project.options.index_url, name, version)
    wheels = [f for f in files if f.filename.endswith(".whl")]
    sdists = [f for f in files if not f.filename.endswith(".whl")]
    pool = wheels if prefer == "wheel" else sdists
    if not pool:
        raise VpatchError(f"{spec}: the index serves no {prefer} of it (and it is not pinned)")
    chosen = _same_tags(pool, wheel_like) if prefer == "wheel" else pool[0]
    artifact = Artifact(chosen.filename, chosen.sha256, chosen.url)
    return Archive(fetch_artifact(cache, artifact, quiet=project.options.json), artifact.kind)


def _pinned_artifact(pin: Pin, prefer: str, wheel_like: Path | None) -> Artifact:
    if prefer == "sdist":
        if pin.sdist is None:
            raise VpatchError(f"pin {pin.version} has no sdist")
        return pin.sdist
    if not pin.wheels:
        raise VpatchError(f"pin {pin.version} has no stock wheel")
    if wheel_like is not None:
        tags = _tags(wheel_like.name)
        for wheel in pin.wheels:
            if _tags(wheel.file) == tags:
                return wheel
    return pin.wheels[0]


def _tags(filename: str) -> frozenset:
    try:
        return frozenset(parse_wheel_filename(filename)[3])
    except ValueError:
        return frozenset()


def _same_tags(pool: list, wheel_like: Path | None):
    if wheel_like is not None:
        tags = _tags(wheel_like.name)
        for entry in pool:
            if _tags(entry.filename) == tags:
                return entry
    return pool[0]


def _archive_kind(path: Path) -> str:
    if path.name.endswith(".whl"):
        return "wheel"
    try:
        parse_sdist_filename(path.name)
    except InvalidSdistFilename:
        if path.name.endswith((".tar.gz", ".tgz", ".tar")):
            return "sdist"
        raise VpatchError("neither a wheel (.whl) nor an sdist (.tar.gz)", path=path) from None
    return "sdist"


# ---------------------------------------------------------------- split, messages, names


def split_files(files: list[FileChange], mode: str) -> list[tuple[str | None, list[FileChange]]]:
    """(label, files) groups in order of first appearance; label is None for the whole unit."""
    if mode == "none":
        return [(None, files)]
    groups: dict[str, list[FileChange]] = {}
    for change in files:
        if mode == "per-file":
            key = change.path
        else:
            parent = PurePosixPath(change.path).parent.as_posix()
            key = "top-level files" if parent == "." else parent + "/"
        groups.setdefault(key, []).append(change)
    if len(groups) == 1:
        return [(None, files)]
    return list(groups.items())


def split_trailer(body: str) -> tuple[str, list[tuple[str, str]]]:
    """A message body as (prose, header lines of its last paragraph), as toolkit.model reads headers."""
    lines = body.rstrip("\n").split("\n")
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    start = end
    while start and lines[start - 1].strip():
        start -= 1
    paragraph = lines[start:end]
    headers: list[tuple[str, str]] = []
    for line in paragraph:
        match = _HEADER_LINE_RE.match(line.rstrip())
        if match:
            headers.append((match["key"], (match["value"] or "").strip()))
        elif line[:1] in (" ", "\t") and headers:
            key, value = headers[-1]
            headers[-1] = (key, f"{value} {line.strip()}")
        else:
            return "\n".join(lines[:end]).strip("\n"), []
    if not headers:
        return "\n".join(lines[:end]).strip("\n"), []
    return "\n".join(lines[:start]).strip("\n"), headers


def compose_message(subject: str, prose: str, headers: list[tuple[str, str]]) -> str:
    parts = [subject]
    if prose.strip():
        parts.append(prose.strip("\n"))
    parts.append("\n".join(f"{k}: {v}" for k, v in headers))
    return "\n\n".join(parts) + "\n"


def _header(headers: list[tuple[str, str]], key: str) -> str | None:
    return next((v for k, v in headers if k.lower() == key.lower()), None)


def _parse_author(text: str) -> tuple[str, str]:
    match = _AUTHOR_RE.match(text.strip())
    if not match or not match["name"]:
        raise VpatchError(f"--author must look like 'Name <email>', not {text!r}")
    return match["name"], match["email"]


# ---------------------------------------------------------------- applying


@dataclass
class _Planned:
    unit: Unit
    label: str | None
    files: list[FileChange]
    subject: str
    message: str
    name: str
    feature: str
    status: str
    author: tuple[str, str]
    date: str


def _tree_paths(checkout: Checkout) -> set[str]:
    raw = checkout.git.run("ls-files", "-z").stdout
    return {_decode(p) for p in raw.split(b"\x00") if p}


def _check_unit(checkout: Checkout, unit: Unit, diff: bytes, *, allow_offset: bool) -> list[str]:
    """Apply-check one unit with zero fuzz; raise with every failing file and hunk; return offset notes."""
    git = checkout.git
    proc = git.run("apply", "--check", "-v", "--whitespace=nowarn", "-", input=diff, check=False)
    output = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    offsets = _offsets(output, unit)
    if proc.returncode == 0 and (allow_offset or not offsets):
        return offsets
    problems: list[str] = []
    if proc.returncode != 0:
        rejected = git.run("apply", "--reject", "-v", "--whitespace=nowarn", "-", input=diff, check=False)
        # --reject wrote the hunks that fit; back to the state before this unit for the fuzz probes
        git.run("reset", "--quiet", "--hard", "HEAD")
        git.run("clean", "-fdxq")
        problems = _failures((rejected.stdout + rejected.stderr).decode("utf-8", "replace"), unit, checkout)
    if not problems and offsets:
        problems = [f"{o} (give --allow-offset to accept)" for o in offsets]
    elif not problems:
        lines = output.strip().splitlines()
        problems = [lines[-1] if lines else "git apply failed"]
    line = next((_first_line(unit, p) for p in problems if _first_line(unit, p)), None)
    what = "" if unit.label == Path(unit.where).name else f"{unit.label} "
    raise VpatchError(
        f"{what}does not apply with zero fuzz to {checkout.project} {checkout.version}: " + "; ".join(problems),
        path=unit.where,
        line=line,
    )


def _find(unit: Unit, path: str) -> FileChange | None:
    return next((f for f in unit.files if path in f.paths), None)


def _first_line(unit: Unit, problem: str) -> int | None:
    path = problem.split(": ", 1)[0]
    change = _find(unit, path)
    if change is None:
        return None
    match = re.search(r"hunk #(\d+)", problem)
    if match and int(match[1]) <= len(change.hunks):
        return change.hunks[int(match[1]) - 1].line
    return change.line


def _apply_path(name: str) -> str:
    """A path as `git apply` prints it (C-quoted when it is not plain ASCII) as the tree names it."""
    if name.startswith('"'):
        try:
            return _unquote(name.encode("utf-8", "surrogateescape"))[0]
        except ValueError:
            return name
    return name


def _offsets(output: str, unit: Unit) -> list[str]:
    notes, current = [], None
    for line in output.splitlines():
        checking = _APPLY_CHECKING.match(line)
        if checking:
            current = _apply_path(checking[1])
            continue
        offset = _APPLY_OFFSET.match(line)
        if offset and current:
            number, at, by = int(offset[1]), int(offset[2]), int(offset[3])
            notes.append(f"{current}: hunk #{number} applies at line {at} (offset {by:+d} lines)")
    return notes


def _failures(output: str, unit: Unit, checkout: Checkout) -> list[str]:
    """Per file and hunk, from `git apply --reject -v`: rejected hunks, missing files, offsets, fuzz that would fit."""
    by_file: dict[str, list[str]] = {}
    failed_files: list[str] = []
    current = None
    for line in output.splitlines():
        checking = _APPLY_CHECKING.match(line) or _APPLY_APPLYING.match(line)
        if checking:
            current = _apply_path(checking[1])
            by_file.setdefault(current, [])
            continue
        rejected = _APPLY_REJECTED.match(line)
        if rejected and current:
            change = _find(unit, current)
            number = int(rejected[1])
            at = change.hunks[number - 1].old_start if change and number <= len(change.hunks) else None
            where = f" at line {at}" if at is not None else ""
            by_file[current].append(f"{current}: hunk #{number}{where} does not apply")
            if current not in failed_files:
                failed_files.append(current)
            continue
        offset = _APPLY_OFFSET.match(line)
        if offset and current:
            text = f"{current}: hunk #{offset[1]} applies at line {offset[2]} (offset {int(offset[3]):+d} lines)"
            if text not in by_file[current]:
                by_file[current].append(text)
            continue
        error = _APPLY_FILE_ERROR.match(line)
        if error and error["why"] != "patch does not apply":
            path = _apply_path(error["path"])
            why = "does not exist" if error["why"] in ("No such file or directory", "does not exist in index") else None
            text = f"{path}: {why or error['why']}"
            by_file.setdefault(path, [])
            if text not in by_file[path]:
                by_file[path].append(text)
            if path not in failed_files:
                failed_files.append(path)
    for path in failed_files:
        fuzz = _fuzz_needed(checkout, unit, path)
        if fuzz:
            by_file[path] = [*by_file[path], f"{path}: would apply with fuzz {fuzz}"]
    return [text for path in by_file if path in failed_files for text in by_file[path]]


def _fuzz_needed(checkout: Checkout, unit: Unit, path: str) -> int | None:
    change = _find(unit, path)
    if change is None or not change.hunks or change.kind == "add":
        return None
    single = change.render()
    for fuzz in (1, 2):
        proc = checkout.git.run(
            "apply", "--check", f"-C{3 - fuzz}", "--whitespace=nowarn", "-", input=single, check=False
        )
        if proc.returncode == 0:
            return fuzz
    return None


def _commit(checkout: Checkout, planned: _Planned) -> None:
    git = checkout.git
    paths = [p for change in planned.files for p in change.paths]
    literal = {"GIT_LITERAL_PATHSPECS": "1"}
    git.run("add", "-A", "--", *paths, env=literal)
    if git.run("diff", "--cached", "--quiet", check=False).returncode == 0:
        raise VpatchError(f"{planned.unit.label}: the change to {', '.join(paths)} is empty", path=planned.unit.where)
    name, email = planned.author
    env = {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_AUTHOR_DATE": planned.date,
        "GIT_COMMITTER_DATE": planned.date,
    }
    proc = git.run(
        "commit",
        "--quiet",
        "--no-verify",
        "--cleanup=whitespace",
        "-F",
        "-",
        input=planned.message.encode(),
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        problem = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise VpatchError(
            f"{planned.unit.label}: cannot commit: {problem[-1] if problem else 'git commit failed'}",
            path=planned.unit.where,
        )


# ---------------------------------------------------------------- the stage


def import_into_series(project: Project, pin: Pin, source: Source, options: ImportOptions) -> ImportResult:
    started = time.perf_counter()
    if options.split not in SPLIT_MODES:
        raise VpatchError(f"--split must be one of {', '.join(SPLIT_MODES)}, not {options.split!r}")
    features = project.pins.features
    _check_feature(options.feature, features, "--feature")
    if options.upstream_status is not None:
        _check_status(options.upstream_status, "--upstream-status")
    author_override = _parse_author(options.author) if options.author else None
    directory = project.series_dir(pin)
    series = project.series(pin) if project.has_series(pin) else empty_series(directory, pin.version)
    notes: list[str] = []
    with project.scratch_checkout(pin) as checkout:
        applied = apply_series(checkout, series)
        if not applied.ok:
            stopped = applied.stopped_at
            detail = f"{stopped.name}: {'; '.join(stopped.details)}" if stopped else "failed"
            raise VpatchError(f"the existing series does not apply ({detail}); fix it before importing", path=directory)
        tree = _tree_paths(checkout)
        units = source.units(tree, notes)
        if options.subject is not None and len(units) > 1:
            raise VpatchError(f"--subject names one patch, but {source.label} holds {len(units)} mails or commits")
        already = _already_imported(checkout, series, units)
        if already:
            return ImportResult(
                str(pin.version),
                directory,
                len(series.patches),
                [],
                notes,
                list(source.skipped),
                source.describe(),
                already=already,
            )
        planned = _plan(units, series, directory, options, features, author_override)
        for unit in units:
            diff = b"".join(change.render() for change in unit.files)
            notes.extend(_check_unit(checkout, unit, diff, allow_offset=options.allow_offset))
            proc = checkout.git.run("apply", "--whitespace=nowarn", "-", input=diff, check=False)
            if proc.returncode != 0:
                message = proc.stderr.decode("utf-8", "replace").strip().splitlines()
                raise VpatchError(f"{unit.label}: git apply failed: {message[-1] if message else ''}", path=unit.where)
            for entry in (p for p in planned if p.unit is unit):
                _commit(checkout, entry)
            leftover = checkout.git.out("status", "--porcelain", "--untracked-files=all")
            if leftover:
                raise VpatchError(f"{unit.label}: applying left changes no patch carries: {leftover.splitlines()[0]}")
        plan = plan_export(checkout, directory)
        final, rendered = _final_plan(plan, series, planned, directory, notes)
        _verify(project, pin, checkout, final, series, features, rendered)
    result = ImportResult(
        version=str(pin.version),
        directory=directory,
        existing=len(series.patches),
        patches=[
            NewPatch(
                p.name,
                p.subject,
                p.feature,
                p.status,
                p.unit.origin,
                f"{p.author[0]} <{p.author[1]}>",
                tuple(dict.fromkeys(path for f in p.files for path in f.paths)),
                sum(f.added for f in p.files),
                sum(f.removed for f in p.files),
            )
            for p in planned
        ],
        notes=notes,
        skipped=list(source.skipped),
        source=source.describe(),
    )
    if not options.dry_run:
        write_export(final)
        _check_written(final, pin)
        result.written = True
    result.seconds = time.perf_counter() - started
    return result


def _already_imported(checkout: Checkout, series: Series, units: list[Unit]) -> list[str]:
    """The series' patches that hold these units already (the same source imported before), else [].

    Every unit must have a patch whose Origin names it, and its diff must reverse-apply to the
    series' tree (its changes are there); a same-named source with other changes is imported.
    """
    carriers: list[str] = []
    for unit in units:
        named = [p.name for p in series.patches if p.header("Origin") == unit.origin]
        if not named:
            return []
        diff = b"".join(change.render() for change in unit.files)
        proc = checkout.git.run("apply", "--reverse", "--check", "--whitespace=nowarn", "-", input=diff, check=False)
        if proc.returncode != 0:
            return []
        carriers.extend(n for n in named if n not in carriers)
    return carriers


def _check_feature(feature: str | None, features: dict[str, str], where: str) -> None:
    if feature is not None and feature not in features:
        declared = ", ".join(sorted(features)) or "none"
        raise VpatchError(f"{where}: unknown feature {feature!r} (declared in pins.toml [features]: {declared})")


def _check_status(text: str, where: str) -> None:
    try:
        UpstreamStatus.parse(text)
    except ValueError as exc:
        raise VpatchError(f"{where}: {exc}") from None


def _plan(
    units: list[Unit],
    series: Series,
    directory: Path,
    options: ImportOptions,
    features: dict[str, str],
    author_override: tuple[str, str] | None,
) -> list[_Planned]:
    subjects = {p.subject for p in series.patches}
    names = {p.name for p in series.patches} | ({p.name for p in directory.iterdir()} if directory.is_dir() else set())
    numbers = [int(n[:4]) for n in names if n[:4].isdigit()]
    next_number = max([*numbers, len(series.patches)], default=0) + 1
    planned: list[_Planned] = []
    for unit in units:
        prose, headers = split_trailer(unit.body)
        feature = options.feature or _header(headers, "Feature")
        if feature is None:
            declared = ", ".join(sorted(features)) or "none"
            raise VpatchError(
                f"{unit.label} has no Feature: header; give --feature NAME (declared: {declared})", path=unit.where
            )
        _check_feature(feature, features, unit.label)
        status = options.upstream_status or _header(headers, "Upstream-Status") or "Pending"
        _check_status(status, unit.label)
        base_subject = options.subject or unit.subject or f"Import {unit.label}"
        base_subject = " ".join(base_subject.split())
        for label, files in split_files(unit.files, options.split):
            subject = f"{base_subject} ({label})" if label else base_subject
            unique, copy = subject, 2
            while unique in subjects:
                unique, copy = f"{subject} ({copy})", copy + 1
            subjects.add(unique)
            name = f"{next_number:04d}-{slugify(unique)}.patch"
            while name in names:
                next_number += 1
                name = f"{next_number:04d}-{slugify(unique)}.patch"
            next_number += 1
            names.add(name)
            kept = [(k, v) for k, v in headers if k.lower() not in ("upstream-status", "feature", "patch-file")]
            trailer = [
                ("Upstream-Status", status),
                ("Feature", feature),
                *kept,
                ("Origin", unit.origin),
                ("Patch-File", name),
            ]
            author = author_override or unit.author or (TOOL_NAME, TOOL_EMAIL)
            planned.append(
                _Planned(
                    unit,
                    label,
                    files,
                    unique,
                    compose_message(unique, prose, trailer),
                    name,
                    feature,
                    status,
                    author,
                    unit.date or FIXED_DATE,
                )
            )
    return planned


def _final_plan(
    plan: ExportPlan, series: Series, planned: list[_Planned], directory: Path, notes: list[str]
) -> tuple[ExportPlan, set[str]]:
    """The existing patches as they are, then the imported ones, appended to the series file.

    An existing patch takes its re-export only when that is the file on disk, or the file plus the
    blank line format-patch puts between mails (the series' last patch gains it when patches follow,
    as `vpatch export` does); a patch out of sync with its re-export is left as it is. Returns the
    plan and the names whose bytes are re-exports (these must re-export identically again).
    """
    existing = len(series.patches)
    new = list(plan.patches[existing:])
    if [name for name, _ in new] != [p.name for p in planned]:
        raise VpatchError(
            f"export named the imported patches {[n for n, _ in new]}, expected {[p.name for p in planned]}",
            path=directory,
        )
    kept: list[tuple[str, bytes]] = []
    rendered = {name for name, _ in new}
    for patch, (_, data) in zip(series.patches, plan.patches[:existing], strict=True):
        if data in (patch.data, patch.data + b"\n"):
            kept.append((patch.name, data))
            rendered.add(patch.name)
        else:
            kept.append((patch.name, patch.data))
            notes.append(f"{patch.name} differs from its re-export (see `vpatch check`); left as it is")
    patches = tuple(kept) + tuple(new)
    text = series.text if (directory / "series").exists() else ""
    if text and not text.endswith("\n"):
        text += "\n"
    text += "".join(f"{p.name}\n" for p in planned)
    return replace(plan, patches=patches, series_text=text, removed=()), rendered


def _verify(
    project: Project, pin: Pin, checkout: Checkout, plan: ExportPlan, series: Series, features, rendered: set[str]
) -> None:
    """Apply the planned series to the base afresh: the imported patches must land clean and re-export identically."""
    git = checkout.git
    git.run("reset", "--quiet", "--hard", UPSTREAM_REF)
    git.run("clean", "-fdxq")
    existing = len(series.patches)
    scratch = project.options.cache_dir / "tmp"
    with tempfile.TemporaryDirectory(prefix=tempnames.prefix("import"), dir=scratch) as tmp:
        staged = Path(tmp) / plan.directory.name
        staged.mkdir()
        for name, data in plan.patches:
            (staged / name).write_bytes(data)
        (staged / "series").write_text(plan.series_text, encoding="utf-8")
        candidate = load_series(staged, pin.version)
        for patch in candidate.patches[existing:]:
            problems = lint_headers(patch, features)
            if problems:
                raise VpatchError(f"imported patch {patch.name}: {problems[0].message}")
        result = apply_series(checkout, candidate)
        for outcome in result.outcomes[existing:]:
            if outcome.status != CLEAN:
                raise VpatchError(
                    f"imported patch {outcome.name} does not apply cleanly to {pin.label} ({outcome.status}: "
                    f"{'; '.join(outcome.details)})"
                )
        again = plan_export(checkout, staged)
        for (name, data), (_, redone) in zip(plan.patches, again.patches, strict=True):
            if name in rendered and data != redone:
                raise VpatchError(f"{name} does not re-export byte-identically after the import")


def _check_written(plan: ExportPlan, pin: Pin) -> None:
    written = load_series(plan.directory, pin.version)
    on_disk = {p.name: p.data for p in written.patches}
    for name, data in plan.patches:
        if on_disk.get(name) != data:
            raise VpatchError(f"{name} was not written as planned", path=plan.directory)
        parse_patch(plan.directory / name, data)
