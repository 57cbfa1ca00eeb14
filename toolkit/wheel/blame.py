"""Which change brought a line in: the series patch (or, for a wheel vpatch did not build, the changed file)
whose added lines import a module, or name a distribution the code looks itself up by.

Used by verify: an import failure names the module and the patch that introduced the import, and a dist
name the series' own code contradicts (`importlib.metadata.version("ai_dynamo_vllm")` in a wheel named
`vllm`) is warned about, naming the patch and line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

from toolkit.dist_files import canonical_name
from toolkit.model import Patch


class Added(NamedTuple):
    """One line a change adds: where it is said (patch and its line, or a wheel member and its line).

    A NamedTuple: a series adds ~1,800 lines of Python, each one made at every build (~4 ms as a dataclass)."""

    source: str  # a patch's file name, or a wheel member
    line: int  # line number in `source`
    path: str  # the file the line is in
    text: str

    def where(self) -> str:
        shown = f"{self.source}:{self.line}"
        return shown if self.source == self.path else f"{shown} ({self.path})"


def added_by_patches(patches: Iterable[Patch]) -> list[Added]:
    found = []
    for patch in patches:
        path = ""
        for number, raw in enumerate(patch.data.decode("utf-8", "replace").splitlines(), start=1):
            if raw.startswith("+++ "):
                target = raw[4:].split("\t")[0].strip()
                path = target[2:] if target.startswith("b/") else target
            elif raw.startswith("+") and path.endswith(".py"):
                found.append(Added(patch.name, number, path, raw[1:]))
    return found


def added_by_files(files: dict[str, str]) -> list[Added]:
    """Every line of changed or added Python files ({member: text}), for a wheel without a series."""
    return [
        Added(member, number, member, line)
        for member, text in sorted(files.items())
        if member.endswith(".py")
        for number, line in enumerate(text.splitlines(), start=1)
    ]


MISSING = re.compile(r"No module named '([\w.]+)'")


def missing_module(output: str) -> str | None:
    """The module a failed import names (`ModuleNotFoundError: No module named 'triton'`), or None."""
    found = MISSING.findall(output)
    return found[-1] if found else None


def who_imports(module: str, lines: Iterable[Added]) -> Added | None:
    """The first added line that imports `module` (or a package of it), `import x` or `from x import`."""
    names = [module]
    while "." in names[-1]:
        names.append(names[-1].rsplit(".", 1)[0])
    patterns = [
        re.compile(rf"^\s*(?:import\s+{re.escape(n)}\b|from\s+{re.escape(n)}(?:\s|\.)\S*\s*import\b)") for n in names
    ]
    for pattern in patterns:
        for added in lines:
            if pattern.search(added.text):
                return added
    return None


LOOKUP = re.compile(
    r"(?<![\w.])(?:importlib\.metadata\.|metadata\.|importlib_metadata\.|pkg_resources\.)?"
    r"(?P<call>version|distribution|get_distribution)\(\s*['\"](?P<name>[A-Za-z][A-Za-z0-9_.-]*)['\"]"
)


def dist_name_contradictions(dist: str, lines: Iterable[Added]) -> list[str]:
    """One warning per added line that looks the package up under another distribution name than `dist`."""
    warnings = []
    for added in lines:
        if "version(" not in added.text and "distribution(" not in added.text:  # what every LOOKUP match holds
            continue
        for match in LOOKUP.finditer(added.text):
            name = match["name"]
            if canonical_name(name) != canonical_name(dist):
                warnings.append(
                    f"{added.where()}: the code looks itself up as {name!r} ({match['call']}(...)) "
                    f"but the distribution is named {dist!r}: build with --dist-name {name} or change the code"
                )
    return warnings
