"""Which patch wrote each line of a file of the applied series: `git blame` of the one-commit-per-patch checkout.

The blame of the series' last commit gives every line the commit that last wrote it; a commit of the
series is its patch, anything else is upstream. A finding is the series' when it is on a line a patch
wrote (a formatter's hunk: when any line it changes is); findings on upstream's own lines are counted,
not reported, so a patch is never blamed for code it did not touch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from toolkit.git import Git
from toolkit.upstream_lint.tools import RawFinding

_BLAME_HEADER = re.compile(r"^([0-9a-f]{40}) \d+ (\d+)(?: (\d+))?$")


@dataclass(frozen=True)
class Finding:
    """One linter finding on a line a patch wrote."""

    patch: str  # the patch file's name
    path: str  # the file in the vLLM tree
    line: int
    tool: str  # `ruff 0.9.3`
    code: str  # the rule (`E501`), or `format` / `spelling` / `spdx` / `import`
    message: str

    def render(self) -> str:
        code = "" if self.code in ("format", "spelling", "spdx", "import") else f"{self.code} "
        return f"{self.path}:{self.line}: {self.tool}: {code}{self.message}"

    def as_dict(self) -> dict:
        return {
            "patch": self.patch,
            "path": self.path,
            "line": self.line,
            "tool": self.tool,
            "code": self.code,
            "message": self.message,
        }


def line_owners(repo: Git, path: str, commits: dict[str, str]) -> dict[int, str]:
    """{line number: patch name} for the lines of `path` at HEAD that a patch wrote (`commits`: commit -> patch)."""
    text = repo.blame("HEAD", path).checked("blame", "--porcelain").stdout.decode("utf-8", "replace").strip()
    owners: dict[int, str] = {}
    for line in text.splitlines():
        match = _BLAME_HEADER.match(line)
        if match is None:
            continue
        patch = commits.get(match.group(1))
        if patch is not None:
            start, count = int(match.group(2)), int(match.group(3) or 1)
            for number in range(start, start + count):
                owners[number] = patch
    return owners


def attribute(raw: RawFinding, tool: str, owners: dict[int, str]) -> list[Finding]:
    """The finding once per patch that wrote one of its lines, on that patch's first such line."""
    first: dict[str, int] = {}
    for number in raw.lines:
        patch = owners.get(number)
        if patch is not None:
            first.setdefault(patch, number)
    return [Finding(patch, raw.path, line, tool, raw.code, raw.message) for patch, line in first.items()]


__all__ = ["Finding", "attribute", "line_owners"]
