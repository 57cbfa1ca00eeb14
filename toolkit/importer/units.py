"""Units (one mail, commit or diff each) and the Source interface the three sources implement."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import VpatchError
from toolkit.importer.diff_lexer import DiffSyntaxError, RawFile, parse_diff
from toolkit.importer.paths import FileChange

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
# Commits made from a source that has no date of its own (plain diffs, wheel pairs): fixed, so the
# same input gives the same patch bytes (1980-01-01, the zip epoch, as the sdist base commits use).
FIXED_DATE = "315532800 +0000"


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


class Source:
    """Where the changes come from; `units` parses them against the tree they will be applied to."""

    kind = "file"
    label = ""
    skipped: tuple[str, ...] = ()  # members of an archive pair that were not compared, and why

    def units(self, tree: set[str], notes: list[str]) -> list[Unit]:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict:
        return {"kind": self.kind, "label": self.label}


def parse_unit_diff(data: bytes, where: str, first_line: int) -> list[RawFile]:
    """The file sections of a unit's diff; a malformed diff or a section without content is a VpatchError."""
    try:
        files, problems = parse_diff(data, first_line=first_line)
    except DiffSyntaxError as exc:
        raise VpatchError(f"malformed diff: {exc.message}", path=where, line=exc.line) from None
    if problems:
        line, message = problems[0]
        raise VpatchError(message, path=where, line=line)
    return files


def not_a_diff(path: Path | str) -> VpatchError:
    return VpatchError(
        "not a diff: no file changes found (expected a unified diff, `git diff` output or format-patch mails)",
        path=path,
    )


def note_recounts(changes: list[FileChange], where: str, notes: list[str]) -> None:
    for change in changes:
        for number in change.recounted:
            hunk = change.hunks[number - 1]
            notes.append(
                f"{where}:{hunk.line}: {change.path}: hunk #{number}: wrong line counts in its header, recounted"
            )
