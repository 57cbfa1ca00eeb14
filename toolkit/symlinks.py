"""Symlinks a patch creates or retargets: their targets must stay inside the source tree.

A link that points out of the tree (`/etc/passwd`, `../../..`) would let a checkout, a build or an
installed wheel read or write files beside it. The target is checked lexically from the link's own
directory (a link's parent directories are real directories: git refuses paths beyond a symlink), and
`..` is accepted only at the start of a target: after a name that may itself be a link, `x/..` could
lead anywhere.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Sequence
from typing import Protocol

SYMLINK_MODE = "120000"
_HUNK_RE = re.compile(r"^@@ -\d+(?:,\d+)? \+\d+(?:,(?P<count>\d+))? @@")
_MODE_LINES = ("new file mode ", "new mode ", "index ")  # `index <a>..<b> 120000`: a retarget


class _FileDiff(Protocol):
    @property
    def new_path(self) -> str | None: ...

    @property
    def line(self) -> int: ...


def target_problem(link: str, target: str) -> str | None:
    """Why the symlink `link` -> `target` leaves the tree (or enters .git), or None if it stays inside."""
    if not target:
        return "an empty target"
    if "\x00" in target or "\n" in target:
        return "a target with a NUL or newline"
    if target.startswith("/"):
        return "an absolute target"
    parts = [p for p in target.split("/") if p not in ("", ".")]
    leading = 0
    while leading < len(parts) and parts[leading] == "..":
        leading += 1
    if ".." in parts[leading:]:
        return "'..' after a directory name (which may itself be a link)"
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(link), target))
    if resolved == ".." or resolved.startswith("../"):
        return "a target outside the tree"
    if resolved.split("/")[0] == ".git":
        return "a target inside .git"
    return None


def check_patch_symlinks(
    lines: Sequence[str], files: Sequence[_FileDiff], fail: Callable[[str, int], Exception]
) -> None:
    """Raise `fail(message, line)` for the first symlink the patch points outside the tree."""
    starts = [f.line - 1 for f in files] + [len(lines)]
    for diff, begin, end in zip(files, starts, starts[1:], strict=False):
        if diff.new_path is None:
            continue
        is_link = False
        index = begin + 1
        while index < end and not lines[index].startswith("@@ "):
            line = lines[index].rstrip("\r")
            if line.startswith(_MODE_LINES) and line.split()[-1] == SYMLINK_MODE:
                is_link = True
            elif is_link and (line.startswith("GIT binary patch") or line.startswith("Binary files ")):
                raise fail(f"patch makes {diff.new_path} a symlink whose target is not readable text", index + 1)
            index += 1
        if not is_link or index >= end:
            continue
        target, target_line = _new_content(lines, index, end)
        problem = target_problem(diff.new_path, target)
        if problem:
            raise fail(
                f"patch makes {diff.new_path} a symlink to {target!r}: {problem}; symlinks must stay in the tree",
                target_line,
            )


def _new_content(lines: Sequence[str], index: int, end: int) -> tuple[str, int]:
    """The new side of the hunks starting at `index` (a symlink's target) and the line of its first `+`."""
    content: list[str] = []
    first_plus = index + 1
    while index < end and lines[index].startswith("@@ "):
        match = _HUNK_RE.match(lines[index])
        remaining = int(match["count"]) if match and match["count"] is not None else 1
        index += 1
        while remaining > 0 and index < end:
            line = lines[index]
            if line.startswith("+") or line.startswith(" "):
                if line.startswith("+") and not content:
                    first_plus = index + 1
                content.append(line[1:])
                remaining -= 1
            elif not line.startswith("-") and not line.startswith("\\"):
                break
            index += 1
        while index < end and lines[index].startswith("\\"):
            index += 1
    return "\n".join(content), first_plus
