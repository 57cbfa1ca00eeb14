"""Applying units to the checkout: zero-fuzz checks that name every failing file and hunk, and the commits."""

from __future__ import annotations

import re
from pathlib import Path

from toolkit.checkout import Checkout
from toolkit.errors import VpatchError
from toolkit.git import (
    ApplyingWithRejects,
    CheckingPatch,
    FileRefused,
    HunkOffset,
    HunkRejected,
    read_apply_output,
)
from toolkit.importer.diff_lexer import decode_name
from toolkit.importer.paths import FileChange
from toolkit.importer.plan import PlannedPatch
from toolkit.importer.units import Unit


def tree_paths(checkout: Checkout) -> set[str]:
    return {decode_name(p) for p in checkout.git.tracked_paths()}


SHOWN_PROBLEMS = 8  # failing hunks named in the one error line; the rest are counted


def check_unit_applies(
    checkout: Checkout, unit: Unit, diff: bytes, *, allow_offset: bool, series_paths: frozenset[str] = frozenset()
) -> list[str]:
    """Apply-check one unit with zero fuzz; raise naming the first failing files and hunks (and counting the
    rest); return offset notes. `series_paths`, the files the series already changes, tell a diff taken
    against stock (which repeats the series' changes) from one that does not fit the tree."""
    git = checkout.git
    proc = git.apply(diff, check=True, verbose=True, quiet_whitespace=True)
    output = proc.output
    offsets = _offsets(output, unit)
    if proc.ok and (allow_offset or not offsets):
        return offsets
    problems: list[str] = []
    if not proc.ok:
        rejected = git.apply(diff, reject=True, verbose=True, quiet_whitespace=True)
        # --reject wrote the hunks that fit; back to the state before this unit for the fuzz probes
        git.reset_hard("HEAD")
        git.clean_all()
        problems = _failures(rejected.output, unit, checkout)
    if not problems and offsets:
        problems = [f"{o} (give --allow-offset to accept)" for o in offsets]
    elif not problems:
        lines = output.strip().splitlines()
        problems = [lines[-1] if lines else "git apply failed"]
    line = next((_first_line(unit, p) for p in problems if _first_line(unit, p)), None)
    what = "" if unit.label == Path(unit.where).name else f"{unit.label} "
    shown = "; ".join(problems[:SHOWN_PROBLEMS])
    if len(problems) > SHOWN_PROBLEMS:
        shown += f"; and {len(problems) - SHOWN_PROBLEMS} more"
    failing = {p.split(":", 1)[0] for p in problems}
    overlap = sorted(failing & series_paths)
    hint = (
        f" ({len(overlap)} of the {len(failing)} failing files are ones the series already changes: a diff taken "
        "against stock vLLM repeats the series' changes; import only what it adds, e.g. `vpatch import --git REPO "
        "OLD..NEW` of the fork's two releases, or `--base` the fork release it was made from with `--fork`)"
        if overlap
        else ""
    )
    raise VpatchError(
        f"{what}does not apply with zero fuzz to {checkout.project} {checkout.version}: {shown}{hint}",
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


def _offsets(output: str, unit: Unit) -> list[str]:
    notes, current = [], None
    for event in read_apply_output(output):
        if isinstance(event, CheckingPatch):
            current = event.path
        elif isinstance(event, HunkOffset) and current:
            notes.append(f"{current}: hunk #{event.hunk} applies at line {event.line} (offset {event.offset:+d} lines)")
    return notes


def _failures(output: str, unit: Unit, checkout: Checkout) -> list[str]:
    """Per file and hunk, from `git apply --reject -v`: rejected hunks, missing files, offsets, fuzz that would fit."""
    by_file: dict[str, list[str]] = {}
    failed_files: list[str] = []
    current = None
    for event in read_apply_output(output):
        if isinstance(event, CheckingPatch | ApplyingWithRejects):
            current = event.path
            by_file.setdefault(current, [])
        elif isinstance(event, HunkRejected) and current:
            change = _find(unit, current)
            number = event.hunk
            at = change.hunks[number - 1].old_start if change and number <= len(change.hunks) else None
            where = f" at line {at}" if at is not None else ""
            by_file[current].append(f"{current}: hunk #{number}{where} does not apply")
            if current not in failed_files:
                failed_files.append(current)
        elif isinstance(event, HunkOffset) and current:
            text = f"{current}: hunk #{event.hunk} applies at line {event.line} (offset {event.offset:+d} lines)"
            if text not in by_file[current]:
                by_file[current].append(text)
        elif isinstance(event, FileRefused) and event.why != "patch does not apply":
            path = event.path
            why = "does not exist" if event.why in ("No such file or directory", "does not exist in index") else None
            text = f"{path}: {why or event.why}"
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
        if checkout.git.apply(single, check=True, context=3 - fuzz, quiet_whitespace=True).ok:
            return fuzz
    return None


def commit_planned(checkout: Checkout, planned: PlannedPatch) -> None:
    git = checkout.git
    paths = [p for change in planned.files for p in change.paths]
    git.add(paths, removals=True, literal=True)
    if git.nothing_staged():
        raise VpatchError(f"{planned.unit.label}: the change to {', '.join(paths)} is empty", path=planned.unit.where)
    name, email = planned.author
    env = {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_AUTHOR_DATE": planned.date,
        "GIT_COMMITTER_DATE": planned.date,
    }
    proc = git.commit(planned.message, env)
    if not proc.ok:
        raise VpatchError(
            f"{planned.unit.label}: cannot commit: {proc.last_error_line('git commit failed')}",
            path=planned.unit.where,
        )
