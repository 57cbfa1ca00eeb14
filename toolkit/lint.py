"""Series lint and the sync check: every problem as `path:line: message`, all of them, not just the first."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import VpatchError, display_path
from toolkit.features import undeclared
from toolkit.model import Patch, Pin, UpstreamStatus, parse_patch, parse_series_file


@dataclass(frozen=True)
class Problem:
    path: Path
    line: int | None
    message: str

    def render(self) -> str:
        where = display_path(self.path)
        return f"{where}:{self.line}: {self.message}" if self.line else f"{where}: {self.message}"

    def as_dict(self) -> dict:
        return {"path": display_path(self.path), "line": self.line, "message": self.message}


def problem_from(error: VpatchError, fallback: Path) -> Problem:
    return Problem(error.path or fallback, error.line, error.message)


def lint_series_dir(directory: Path, pin: Pin, features: dict[str, str]) -> tuple[list[Problem], list[Patch]]:
    """Structural and header problems of one series directory, and the patches that parsed."""
    problems: list[Problem] = []
    series_file = directory / "series"
    entry_errors: list[VpatchError] = []
    try:
        entries, _ = parse_series_file(series_file, entry_errors)
    except VpatchError as error:
        return [problem_from(error, series_file)], []
    problems.extend(problem_from(error, series_file) for error in entry_errors)
    listed = {e.name for e in entries}
    for path in sorted(directory.glob("*.patch")):
        if path.name not in listed:
            problems.append(Problem(path, None, "patch file is not listed in series"))
    patches: list[Patch] = []
    subjects: dict[str, str] = {}
    for entry in entries:
        path = directory / entry.name
        if not path.is_file():
            problems.append(Problem(series_file, entry.line, f"series lists {entry.name} but the file does not exist"))
            continue
        try:
            patch = parse_patch(path)
        except VpatchError as error:
            problems.append(problem_from(error, path))
            continue
        patches.append(patch)
        problems.extend(lint_headers(patch, features))
        if patch.subject in subjects:
            problems.append(Problem(path, None, f"subject {patch.subject!r} is also used by {subjects[patch.subject]}"))
        subjects.setdefault(patch.subject, patch.name)
    return problems, patches


def lint_headers(patch: Patch, features: dict[str, str]) -> list[Problem]:
    problems = []
    seen: dict[str, int] = {}
    for key, _value, line in patch.headers:
        folded = key.lower()  # header names are case-insensitive, as Patch.header() reads them
        if folded in seen and folded not in ("signed-off-by", "reviewed-by", "bug", "origin"):
            problems.append(Problem(patch.path, line, f"header {key} appears twice (first on line {seen[folded]})"))
        seen.setdefault(folded, line)
    last_line = patch.headers[-1][2] if patch.headers else None
    for key in ("Upstream-Status", "Feature"):
        if patch.header(key) is None:
            problems.append(Problem(patch.path, last_line, f"required header {key}: is missing"))
    status = patch.header("Upstream-Status")
    if status is not None:
        try:
            UpstreamStatus.parse(status)
        except ValueError as exc:
            problems.append(Problem(patch.path, patch.header_line("Upstream-Status"), str(exc)))
    feature = patch.header("Feature")
    unknown = undeclared(feature, features) if feature is not None else None
    if unknown is not None:
        problems.append(Problem(patch.path, patch.header_line("Feature"), unknown))
    name = patch.header("Patch-File")
    if name is not None and name != patch.name:
        problems.append(
            Problem(
                patch.path,
                patch.header_line("Patch-File"),
                f"Patch-File header says {name!r} but the file is {patch.name!r}",
            )
        )
    return problems


def first_difference(old: bytes, new: bytes) -> int:
    """1-based line number of the first line where two byte strings differ."""
    old_lines, new_lines = old.split(b"\n"), new.split(b"\n")
    for number, (a, b) in enumerate(zip(old_lines, new_lines, strict=False), start=1):
        if a != b:
            return number
    return min(len(old_lines), len(new_lines)) + 1


def rationale_warnings(patches: list[Patch]) -> list[Problem]:
    """A patch whose mail says nothing but its subject and headers: nobody can tell later why the series
    carries it, or when it may go. A warning, not a problem: an imported fork's patches start out so."""
    warnings = []
    for patch in patches:
        trailer = {line for _, _, line in patch.headers}
        paragraphs = [p for p in patch.message.split("\n\n") if p.strip()]
        if paragraphs and all(_is_header(line) for line in paragraphs[-1].splitlines() if line.strip()):
            paragraphs = paragraphs[:-1]
        if not paragraphs:
            line = min(trailer) if trailer else None
            warnings.append(
                Problem(
                    patch.path,
                    line,
                    "no rationale: the mail has only a subject and headers; say why the series carries it "
                    "(what upstream lacks) and what would let it retire",
                )
            )
    return warnings


# A patch past this many changed lines is hard to review and to retire piece by piece (issue 15).
MAX_CHANGED_LINES = 400


def patch_stats(patch: Patch) -> tuple[int, int]:
    """(added, removed) lines of the patch's hunks: neither the mail's headers nor the context count."""
    added = removed = 0
    in_hunk = False
    for line in patch.data.decode("utf-8", "replace").split("\n"):
        if line.startswith("diff --git "):
            in_hunk = False
        elif line.startswith("@@ "):
            in_hunk = True
        elif in_hunk and line.startswith("+"):
            added += 1
        elif in_hunk and line.startswith("-"):
            removed += 1
    return added, removed


def size_warnings(patches: list[Patch], limit: int = MAX_CHANGED_LINES) -> list[Problem]:
    """A patch changing more than `limit` lines: a warning to split it where it has seams."""
    warnings = []
    for patch in patches:
        added, removed = patch_stats(patch)
        if added + removed > limit:
            warnings.append(
                Problem(
                    patch.path,
                    None,
                    f"changes {added + removed} lines (+{added} -{removed}, over {limit}): split it by capability, "
                    "each part with its own test and Feature: sub-name",
                )
            )
    return warnings


def _is_header(line: str) -> bool:
    key, colon, _ = line.partition(":")
    return bool(colon) and bool(key) and " " not in key.strip()
