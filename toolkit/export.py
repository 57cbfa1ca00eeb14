"""The export stage: the commits above the upstream ref, written back as a series.

File names are stable: each mail carries its own name in a `Patch-File:` header,
so reordering, rewording or inserting patches never renames the others. A commit
without one keeps the name of the old series' patch with the same subject (exported
before, its commit never got the header); otherwise it is new work and gets
`NNNN-<subject-slug>.patch`, NNNN the next number after the highest the project has used
(this series, its `retired/`, and the other series directories the caller names), not its
position in the series: a number names one patch in every release, and a retired one's is
never given again. The header is added to its mail. The series directory is rewritten as a whole:
built beside the old one and swapped in as one transaction (toolkit/txn.py), so an interrupted export
leaves the old series or the new.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from toolkit.checkout import UPSTREAM_REF, Checkout
from toolkit.errors import VpatchError
from toolkit.model import parse_patch, parse_series_file
from toolkit.render import render_range, set_patch_file_header, slugify
from toolkit.txn import transaction


@dataclass(frozen=True)
class ExportPlan:
    directory: Path
    patches: tuple[tuple[str, bytes], ...]  # (file name, mail bytes) in series order
    series_text: str
    removed: tuple[str, ...]  # patch files of the old series that are no longer in it

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.patches)

    def changes(self) -> dict[str, str]:
        """file name -> 'added' | 'modified' | 'removed' against what is on disk."""
        result: dict[str, str] = {}
        for name, data in self.patches:
            path = self.directory / name
            if not path.exists():
                result[name] = "added"
            elif path.read_bytes() != data:
                result[name] = "modified"
        series = self.directory / "series"
        if not series.exists():
            result["series"] = "added"
        elif series.read_text(encoding="utf-8") != self.series_text:
            result["series"] = "modified"
        for name in self.removed:
            result[name] = "removed"
        return result


def plan_export(checkout: Checkout, directory: Path, elsewhere: Iterable[Path] = ()) -> ExportPlan:
    """The series `directory` gets from the checkout's commits; `elsewhere`: the project's other series
    directories, whose patch numbers (retired/ too) a new patch does not take."""
    rendered = render_range(checkout.git, UPSTREAM_REF, "HEAD")
    old_names: list[str] = []
    old_text = ""
    if (directory / "series").exists():
        entries, old_text = parse_series_file(directory / "series")
        old_names = [e.name for e in entries]
    patches: list[tuple[str, bytes]] = []
    taken: set[str] = set()
    pending: list[tuple[int, bytes, str]] = []
    for index, mail in enumerate(rendered):
        parsed = parse_patch(directory / f"commit-{mail.commit[:12]}.patch", mail.data)
        name = parsed.header("Patch-File")
        if name:
            if "/" in name or not name.endswith(".patch"):
                raise VpatchError(f"commit {mail.commit[:12]} ({mail.subject}): bad Patch-File header {name!r}")
            if name in taken:
                raise VpatchError(f"two commits claim Patch-File {name}; reword one of them")
            taken.add(name)
            patches.append((name, mail.data))
        else:
            patches.append(("", mail.data))
            pending.append((index, mail.data, parsed.subject))
    unclaimed = [n for n in old_names if n not in taken]
    used = {*taken, *old_names, *used_patch_names([directory, *elsewhere])}
    next_number = max((int(n[:4]) for n in used if n[:4].isdigit()), default=0) + 1
    for index, data, subject in pending:
        # the old series may hold this very patch (exported before its commit carried a Patch-File
        # header): same subject, same name; anything else is new work, numbered after the highest
        name = next((n for n in unclaimed if _subject_of(directory / n) == subject), None)
        if name is None:
            name = f"{next_number:04d}-{slugify(subject)}.patch"
            next_number += 1
        else:
            unclaimed.remove(name)
        taken.add(name)
        patches[index] = (name, set_patch_file_header(data, name))
    names = [name for name, _ in patches]
    series_text = old_text if old_names == names else _series_text(old_text, names)
    removed = tuple(n for n in old_names if n not in names)
    return ExportPlan(directory, tuple(patches), series_text, removed)


def used_patch_names(directories: Iterable[Path]) -> set[str]:
    """The patch files of these series directories and of their retired/: what a new patch's number comes after
    (export and import number new work after the highest the project has used in any release)."""
    return {p.name for d in directories for p in (*d.glob("*.patch"), *d.glob("retired/*.patch"))}


def _subject_of(path: Path) -> str | None:
    try:
        return parse_patch(path).subject
    except VpatchError:
        return None


def _series_text(old_text: str, names: list[str]) -> str:
    """Keep the old file's leading comment block, then one patch per line."""
    header: list[str] = []
    for line in old_text.split("\n"):
        if line.startswith("#") or (not line.strip() and header):
            header.append(line)
        else:
            break
    while header and not header[-1].strip():
        header.pop()
    lines = [*header, *([""] if header else []), *names]
    return "\n".join(lines) + "\n"


def write_export(plan: ExportPlan) -> None:
    """Replace the series directory with the plan's content in one transaction (files it does not own carried over)."""
    with transaction(plan.directory.parent, f"export of {plan.directory.name}") as txn:
        files = {name: data for name, data in plan.patches}
        files["series"] = plan.series_text.encode("utf-8")
        txn.stage_series(plan.directory, files, owned=plan.removed)
        txn.commit()
