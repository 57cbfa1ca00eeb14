"""Patch files as the pipeline reads them: `git format-patch` mails with DEP-3 / Yocto headers.

The headers (`Upstream-Status:`, `Feature:`, `Origin:` ...) are the last paragraph of the commit message, so
they travel through `git am` and `git format-patch` unchanged and can be edited with ordinary git. A mail is
parsed once, here, into frozen dataclasses (Patch, FileDiff, UpstreamStatus); later stages never re-read the
file. Pins and the series file are in toolkit/model.py.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import VpatchError
from toolkit.git import unquote_name
from toolkit.symlinks import check_patch_symlinks
from toolkit.trailer import HEADER_LINE, last_paragraph, read_trailer

# ---------------------------------------------------------------- upstream status

UPSTREAM_STATUS_FORMS = (
    "Pending",
    "Submitted [url]",
    "Backport [url]",
    "Accepted [version|commit]",
    "Inappropriate [reason]",
    "Denied [url]",
)
_STATUS_RE = re.compile(r"^(?P<kind>[A-Za-z]+)(?:\s*\[(?P<detail>[^\]]*)\])?\s*$")
_STATUS_NEEDS_DETAIL = {"Submitted", "Backport", "Accepted", "Inappropriate", "Denied"}


@dataclass(frozen=True)
class UpstreamStatus:
    kind: str
    detail: str = ""

    @classmethod
    def parse(cls, text: str) -> UpstreamStatus:
        match = _STATUS_RE.match(text.strip())
        forms = ", ".join(UPSTREAM_STATUS_FORMS)
        if not match:
            raise ValueError(f"malformed Upstream-Status {text.strip()!r} (expected one of: {forms})")
        kind, detail = match["kind"], (match["detail"] or "").strip()
        if kind == "Pending":
            return cls(kind, detail)
        if kind not in _STATUS_NEEDS_DETAIL:
            raise ValueError(f"unknown Upstream-Status {kind!r} (expected one of: {forms})")
        if not detail:
            form = next(f for f in UPSTREAM_STATUS_FORMS if f.startswith(kind))
            raise ValueError(f"Upstream-Status {kind} needs a bracketed detail: {form}")
        return cls(kind, detail)

    def __str__(self) -> str:
        return f"{self.kind} [{self.detail}]" if self.detail else self.kind

    @property
    def is_upstream(self) -> bool:
        return self.kind == "Accepted"


# ---------------------------------------------------------------- patches

REQUIRED_HEADERS = ("Upstream-Status", "Feature")
KNOWN_HEADERS = (
    "Upstream-Status",
    "Feature",
    "Origin",
    "Forwarded",
    "Applied-Upstream",
    "Last-Update",
    "Patch-File",
    "Bug",
    "Author",
    "Reviewed-by",
    "Signed-off-by",
    "Retired-Since",
    "Retired-Evidence",
    "API-Change",
    "Feature-Env",
)
_MBOX_FROM_RE = re.compile(r"^From [0-9a-f]{40} ")
_DIFF_GIT_RE = re.compile(r'^diff --git (?P<a>"(?:[^"\\]|\\.)*"|\S+) (?P<b>"(?:[^"\\]|\\.)*"|\S+)$')


class PathPair:
    """The old and new path of one file in a diff (None for the side where it does not exist); a mixin for
    the dataclasses that carry them."""

    old_path: str | None
    new_path: str | None

    @property
    def path(self) -> str:
        return self.new_path or self.old_path or ""

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(p for p in dict.fromkeys((self.old_path, self.new_path)) if p)


@dataclass(frozen=True)
class FileDiff(PathPair):
    """One file's part of a patch: the paths it touches and how many hunks it has."""

    old_path: str | None  # None for an added file
    new_path: str | None  # None for a deleted file
    hunks: int
    binary: bool
    line: int  # line of `diff --git` in the patch file
    hunk_starts: tuple[int, ...] = ()  # old-file start line of each hunk
    blob_ids: tuple[str, str] | None = None  # full `index <old>..<new>` ids, when the patch has them


@dataclass(frozen=True)
class Patch:
    """A parsed patch mail."""

    name: str  # file name inside the series directory
    path: Path
    data: bytes = field(repr=False)
    author: str
    date: str
    subject: str
    message: str  # full commit message body (without the subject)
    headers: tuple[tuple[str, str, int], ...]  # (key, value, line number) from the trailer paragraph
    files: tuple[FileDiff, ...]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def header(self, key: str) -> str | None:
        for k, value, _ in self.headers:
            if k.lower() == key.lower():
                return value
        return None

    def header_line(self, key: str) -> int | None:
        for k, _, line in self.headers:
            if k.lower() == key.lower():
                return line
        return None

    @property
    def upstream_status(self) -> UpstreamStatus:
        return UpstreamStatus.parse(self.header("Upstream-Status") or "")

    @property
    def upstream_status_text(self) -> str:
        """The normalized status when it parses, else the header as written (for reports, never raises)."""
        try:
            return str(self.upstream_status)
        except ValueError:
            return self.header("Upstream-Status") or ""

    @property
    def feature(self) -> str:
        return self.header("Feature") or ""

    @property
    def touched_paths(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p for f in self.files for p in f.paths))


def _strip_prefix(token: str, prefix: str) -> str | None:
    path = unquote_name(token)
    if path == "/dev/null":
        return None
    if path.startswith(prefix):
        return path[len(prefix) :]
    return path


def check_tree_path(path: str) -> str | None:
    """Why `path` would escape the source tree (or touch git's own files), or None if it is safe."""
    if not path:
        return "empty path"
    if "\x00" in path or "\\" in path:
        return f"path {path!r} contains a NUL or backslash"
    if path.startswith("/"):
        return f"absolute path {path!r}"
    parts = path.split("/")  # plain string work: this runs for every member of a 1000-file wheel
    if ".." in parts:
        return f"path {path!r} leaves the tree through '..'"
    if next((p for p in parts if p and p != "."), "") == ".git":
        return f"path {path!r} is inside .git"
    return None


def parse_patch(path: Path, data: bytes | None = None, *, name: str | None = None) -> Patch:
    """Parse a format-patch mail; any defect is a VpatchError naming the file and line."""
    if data is None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise VpatchError("patch file does not exist", path=path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_line = data[: exc.start].count(b"\n") + 1
        raise VpatchError("patch is not valid UTF-8", path=path, line=bad_line) from None
    lines = text.split("\n")

    def fail(message: str, line: int) -> VpatchError:
        return VpatchError(message, path=path, line=line)

    if not lines or not _MBOX_FROM_RE.match(lines[0]):
        raise fail("not a git format-patch mail (first line must be 'From <sha> ...')", 1)
    # Header block: up to the first empty line. CR here means the file itself was converted to CRLF.
    raw_headers: list[tuple[str, str, int]] = []
    index = 1
    while index < len(lines) and lines[index] != "":
        line = lines[index]
        if line.endswith("\r"):
            raise fail("CRLF line ending in the mail header (the patch file was converted; restore LF)", index + 1)
        if line[:1] in (" ", "\t") and raw_headers:
            key, value, at = raw_headers[-1]
            raw_headers[-1] = (key, value + line, at)
        else:
            match = re.match(r"^([A-Za-z][A-Za-z0-9-]*):\s?(.*)$", line)
            if not match:
                raise fail(f"malformed mail header line {line!r}", index + 1)
            raw_headers.append((match[1], match[2], index + 1))
        index += 1
    if index >= len(lines):
        raise fail("mail ends inside its header block", index)
    mail = {key.lower(): (value, at) for key, value, at in raw_headers}
    for required in ("from", "date", "subject"):
        if required not in mail:
            raise fail(f"mail header '{required.capitalize()}:' is missing", 1)
    subject = _decode_header(mail["subject"][0])
    subject = re.sub(r"^\[PATCH[^\]]*\]\s*", "", subject).strip()
    if not subject:
        raise fail("empty Subject", mail["subject"][1])
    author = _decode_header(mail["from"][0])

    # Message body: until the '---' separator or the first diff.
    body_start = index + 1
    end = body_start
    while end < len(lines) and lines[end] != "---" and not lines[end].startswith("diff --git "):
        end += 1
    body_lines = lines[body_start:end]
    message = "\n".join(body_lines).strip("\n")
    headers = _trailer_headers(body_lines, body_start, fail)

    files = _parse_diffs(lines, end, fail)
    if not files:
        raise fail("patch contains no 'diff --git' section", end + 1)
    check_patch_symlinks(lines, files, fail)
    return Patch(
        name=name or path.name,
        path=path,
        data=data,
        author=author,
        date=mail["date"][0].strip(),
        subject=subject,
        message=message,
        headers=tuple(headers),
        files=tuple(files),
    )


def _decode_header(value: str) -> str:
    if "=?" not in value:  # no RFC 2047 encoded word: decode_header would return it as it is
        return value.strip()
    import email.header  # only for encoded words (=?utf-8?q?...?=): most series have none

    parts = email.header.decode_header(value)
    out = []
    for chunk, charset in parts:
        out.append(chunk.decode(charset or "utf-8", "replace") if isinstance(chunk, bytes) else chunk)
    return "".join(out).strip()


def _trailer_headers(body_lines: list[str], first_line: int, fail) -> list[tuple[str, str, int]]:
    """The last paragraph of the message, when every line of it is `Key: value` (see toolkit.trailer)."""
    start, end = last_paragraph(body_lines)
    paragraph = body_lines[start:end]
    if not any(HEADER_LINE.match(line) for line in paragraph):
        return []

    def check(line: str, offset: int) -> None:
        number = first_line + start + offset + 1
        if line.endswith("\r"):
            raise fail("CRLF line ending in the patch headers", number)
        prose = not HEADER_LINE.match(line) and line[:1] not in (" ", "\t")
        if prose and any(line.startswith(f"{k}:") for k in KNOWN_HEADERS):
            raise fail(f"malformed header line {line!r}", number)

    headers = read_trailer(paragraph, check)
    # A prose paragraph that merely contains a colon line is not a header block.
    return [(key, value, first_line + start + offset + 1) for key, value, offset in headers or []]


def _parse_diffs(lines: list[str], start: int, fail) -> list[FileDiff]:
    files: list[FileDiff] = []
    current: dict | None = None

    def close() -> None:
        if current is not None:
            files.append(
                FileDiff(
                    current["old"],
                    current["new"],
                    current["hunks"],
                    current["binary"],
                    current["line"],
                    tuple(current["starts"]),
                    current["ids"],
                )
            )

    index = start
    while index < len(lines):
        line = lines[index]
        if line.startswith("diff --git "):
            close()
            match = _DIFF_GIT_RE.match(line.rstrip("\r"))
            if not match:
                raise fail(f"malformed diff header {line!r}", index + 1)
            old = _strip_prefix(match["a"], "a/")
            new = _strip_prefix(match["b"], "b/")
            current = {
                "old": old,
                "new": new,
                "hunks": 0,
                "binary": False,
                "line": index + 1,
                "starts": [],
                "ids": None,
            }
            for candidate in (old, new):
                problem = check_tree_path(candidate or "x")
                if problem:
                    raise fail(f"patch touches a path outside the tree: {problem}", index + 1)
        elif current is not None and not current["hunks"]:
            # extended header lines, before the first hunk
            index_ids = _INDEX_RE.match(line)
            if index_ids:
                current["ids"] = (index_ids[1], index_ids[2])
            if line.startswith("new file mode"):
                current["old"] = None
            elif line.startswith("deleted file mode"):
                current["new"] = None
            elif line.startswith("rename from ") or line.startswith("copy from "):
                current["old"] = unquote_name(line.split(" ", 2)[2])
            elif line.startswith("rename to ") or line.startswith("copy to "):
                current["new"] = unquote_name(line.split(" ", 2)[2])
            elif line.startswith("--- ") and current["old"] is not None:
                old = _strip_prefix(line[4:].rstrip("\r"), "a/")
                if old is None:
                    current["old"] = None
            elif line.startswith("+++ "):
                new = _strip_prefix(line[4:].rstrip("\r"), "b/")
                if new is None:
                    current["new"] = None
            elif line.startswith("GIT binary patch") or line.startswith("Binary files "):
                current["binary"] = True
            if line.startswith("@@ "):
                current["hunks"] += 1
                current["starts"].append(_hunk_start(line))
            for candidate in (current["old"], current["new"]):
                if candidate is not None:
                    problem = check_tree_path(candidate)
                    if problem:
                        raise fail(f"patch touches a path outside the tree: {problem}", index + 1)
        elif current is not None and line.startswith("@@ "):
            current["hunks"] += 1
            current["starts"].append(_hunk_start(line))
        index += 1
    close()
    return files


_INDEX_RE = re.compile(r"^index ([0-9a-f]{40})\.\.([0-9a-f]{40})(?: [0-7]{6})?$")
_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@")


def _hunk_start(line: str) -> int:
    match = _HUNK_RE.match(line)
    return int(match[1]) if match else 0
