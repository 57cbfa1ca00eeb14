"""The apply stage: a Series onto a Checkout, one commit per patch.

One `git am` runs the whole series (as fast as a raw `git am`). Offsets are found
afterwards by comparing each patch's hunk positions with the commit it produced;
that rendering is the same one export and check use. On a failing patch the `git
am` session is left in place, so the maintainer can fix it with ordinary git and
run `vpatch apply --continue`, or `--abort` to return to the upstream base.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toolkit.checkout import UPSTREAM_REF, Checkout, read_state, update_state, write_state
from toolkit.errors import VpatchError
from toolkit.git import FileRefused, PatchFailedAt, am_sections, fell_back_to_three_way, read_apply_output
from toolkit.model import Patch, Series, parse_patch
from toolkit.records.outcome import Outcome
from toolkit.render import render_range

# The apply stage's outcomes, by their names in toolkit.records.outcome.
CLEAN, OFFSET, FUZZ, MERGED = Outcome.CLEAN, Outcome.OFFSET, Outcome.FUZZ, Outcome.MERGED
FAILED, CONFLICT, NOT_APPLIED = Outcome.FAILED, Outcome.CONFLICT, Outcome.NOT_APPLIED


@dataclass(frozen=True)
class PatchOutcome:
    name: str
    subject: str
    status: str
    details: tuple[str, ...] = ()
    commit: str | None = None


@dataclass(frozen=True)
class ApplyResult:
    checkout: Checkout
    series: Series
    outcomes: tuple[PatchOutcome, ...]

    @property
    def ok(self) -> bool:
        return all(o.status in (CLEAN, OFFSET, FUZZ, MERGED) for o in self.outcomes)

    @property
    def stopped_at(self) -> PatchOutcome | None:
        return next((o for o in self.outcomes if o.status in (FAILED, CONFLICT)), None)


def am_in_progress(checkout: Checkout) -> bool:
    return (checkout.git.git_dir() / "rebase-apply").is_dir()


def apply_series(checkout: Checkout, series: Series, *, three_way: bool = False, fuzz: int = 0) -> ApplyResult:
    if am_in_progress(checkout):
        raise VpatchError(f"{checkout.path}: an apply is in progress; use --continue or --abort")
    upstream = checkout.git.rev_parse(UPSTREAM_REF)
    if checkout.git.rev_parse("HEAD") != upstream:
        raise VpatchError(f"{checkout.path}: HEAD is not at {UPSTREAM_REF}; apply needs a fresh checkout")
    write_state(
        checkout,
        {
            "series_dir": str(series.directory),
            "patches": [p.name for p in series.patches],
            "three_way": three_way,
            "fuzz": fuzz,
        },
    )
    notes: dict[int, tuple[str, tuple[str, ...]]] = {}
    if series.patches:
        proc = checkout.git.am([p.path for p in series.patches], three_way=three_way)
        _record_merges(proc.stdout.decode("utf-8", "replace"), series, notes, offset=0)
        if not proc.ok:
            return _resolve_stop(checkout, series, notes, three_way=three_way, fuzz=fuzz)
    return _finish(checkout, series, notes)


def continue_apply(checkout: Checkout) -> ApplyResult:
    state = read_state(checkout.path)
    series = _series_from_state(checkout, state)
    if not am_in_progress(checkout):
        raise VpatchError(f"{checkout.path}: no apply is in progress")
    notes = {int(k): (v[0], tuple(v[1])) for k, v in state.get("notes", {}).items()}
    applied = len(checkout.git.commits(f"{UPSTREAM_REF}..HEAD"))
    proc = checkout.git.am_continue()
    if proc.ok or len(checkout.git.commits(f"{UPSTREAM_REF}..HEAD")) > applied:
        notes.setdefault(applied, (MERGED, ("resolved by hand",)))
    _record_merges(proc.stdout.decode("utf-8", "replace"), series, notes, offset=applied + 1)
    if not proc.ok:
        return _resolve_stop(
            checkout, series, notes, three_way=state.get("three_way", False), fuzz=state.get("fuzz", 0)
        )
    return _finish(checkout, series, notes)


def abort_apply(checkout: Checkout) -> None:
    """Drop the in-progress apply and every applied patch: back to the upstream base."""
    if am_in_progress(checkout):
        checkout.git.am_abort()
    checkout.git.reset_hard(UPSTREAM_REF)
    write_state(checkout, {})


def _series_from_state(checkout: Checkout, state: dict) -> Series:
    from toolkit.model import SeriesEntry

    directory = Path(state["series_dir"])
    patches = tuple(parse_patch(directory / name) for name in state["patches"])
    entries = tuple(SeriesEntry(p.name, i + 1) for i, p in enumerate(patches))
    return Series(checkout.version, directory, entries, patches, "")


def _record_merges(output: str, series: Series, notes: dict, *, offset: int) -> None:
    """Note which patches `git am --3way` had to merge, from its 'Applying:' log."""
    for index, section in enumerate(am_sections(output), start=offset):
        if fell_back_to_three_way(section) and index < len(series.patches):
            notes[index] = (MERGED, ("applied with a three-way merge",))


def _resolve_stop(checkout: Checkout, series: Series, notes: dict, *, three_way: bool, fuzz: int) -> ApplyResult:
    """`git am` stopped: apply with fuzz if allowed and go on, else describe the failure and leave it resumable."""
    repo = checkout.git
    while True:
        index = len(repo.commits(f"{UPSTREAM_REF}..HEAD"))
        patch = series.patches[index]
        unmerged = repo.unmerged_names()
        if unmerged:
            details = tuple(f"{path}: conflict, resolve and `git add` it" for path in unmerged)
            return _stopped(checkout, series, notes, index, CONFLICT, details)
        details = _diagnose(checkout, patch)
        if fuzz > 0:
            context = max(0, 3 - fuzz)
            fuzzed = repo.apply(patch.path, context=context, index=True)
            if fuzzed.ok:
                notes[index] = (FUZZ, tuple(d.replace("does not apply", "applied with fuzz") for d in details))
                proc = repo.am_continue()
                _record_merges(proc.stdout.decode("utf-8", "replace"), series, notes, offset=index + 1)
                if proc.ok:
                    return _finish(checkout, series, notes)
                continue
        return _stopped(checkout, series, notes, index, FAILED, details)


def _stopped(
    checkout: Checkout, series: Series, notes: dict, index: int, status: str, details: tuple[str, ...]
) -> ApplyResult:
    update_state(checkout, {"notes": {str(k): [v[0], list(v[1])] for k, v in notes.items()}})
    done = _finish(checkout, series, notes, upto=index).outcomes
    stopped = PatchOutcome(series.patches[index].name, series.patches[index].subject, status, details)
    rest = tuple(PatchOutcome(p.name, p.subject, NOT_APPLIED) for p in series.patches[index + 1 :])
    return ApplyResult(checkout, series, (*done, stopped, *rest))


# What describe_apply_failure reports of git apply's file refusals ("patch does not apply" names no hunk).
_REPORTED_REFUSALS = (
    "does not exist in index",
    "No such file or directory",
    "already exists in index",
    "already exists in working directory",
)


def _diagnose(checkout: Checkout, patch: Patch) -> tuple[str, ...]:
    """Which file and hunk of `patch` does not apply, in words."""
    proc = checkout.git.apply(patch.path, check=True, verbose=True)
    return describe_apply_failure(patch, proc.errors)


def describe_apply_failure(patch: Patch, stderr: str) -> tuple[str, ...]:
    """git apply's complaints about `patch`, as 'file: hunk #N at line L does not apply'."""
    details: list[str] = []
    for event in read_apply_output(stderr):
        if isinstance(event, PatchFailedAt):
            path, at = event.path, event.line
            hunk = _hunk_number(patch, path, at)
            details.append(
                f"{path}: hunk #{hunk} at line {at} does not apply"
                if hunk
                else f"{path}: hunk at line {at} does not apply"
            )
        elif isinstance(event, FileRefused) and event.why in _REPORTED_REFUSALS:
            details.append(f"{event.path}: {event.why}")
    if not details:
        message = stderr.strip().splitlines()
        details.append(message[-1] if message else "git apply failed")
    return tuple(details)


def _hunk_number(patch: Patch, path: str, line: int) -> int | None:
    for diff in patch.files:
        if path in diff.paths:
            for number, start in enumerate(diff.hunk_starts, start=1):
                if start == line:
                    return number
    return None


def _finish(checkout: Checkout, series: Series, notes: dict, *, upto: int | None = None) -> ApplyResult:
    """Outcomes of the applied patches: clean, or offset when a hunk landed elsewhere than written."""
    count = len(series.patches) if upto is None else upto
    applied = _applied_blobs(checkout)
    if len(applied) < count:
        raise VpatchError(f"{checkout.path}: expected {count} applied commits, found {len(applied)}")
    # A patch whose every file went from exactly the blob it was made against to exactly the blob
    # it describes landed as written; only the others are rendered to find their offsets.
    exact = [_lands_as_written(patch, applied[i][1]) for i, patch in enumerate(series.patches[:count])]
    rendered = None if all(exact) else render_range(checkout.git, UPSTREAM_REF, "HEAD")
    outcomes = []
    for index, patch in enumerate(series.patches[:count]):
        commit = applied[index][0]
        if index in notes:
            status, details = notes[index]
        elif exact[index]:
            status, details = CLEAN, ()
        else:
            assert rendered is not None
            details = _offsets(patch, parse_patch(patch.path, rendered[index].data))
            status = OFFSET if details else CLEAN
        outcomes.append(PatchOutcome(patch.name, patch.subject, status, details, commit))
    if upto is None:
        update_state(checkout, {}, drop=("notes",))
    return ApplyResult(checkout, series, tuple(outcomes))


def _applied_blobs(checkout: Checkout) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """Each applied commit with {path: (old blob, new blob)}."""
    return checkout.git.changed_blobs(f"{UPSTREAM_REF}..HEAD")


def _lands_as_written(patch: Patch, files: dict[str, tuple[str, str]]) -> bool:
    zero = "0" * 40
    if len(files) != len(patch.files):
        return False
    for diff in patch.files:
        if diff.blob_ids is None or diff.path not in files:
            return False
        old, new = diff.blob_ids
        if files[diff.path] != (old if diff.old_path else zero, new if diff.new_path else zero):
            return False
    return True


def _offsets(original: Patch, applied: Patch) -> tuple[str, ...]:
    details = []
    applied_by_path = {d.path: d for d in applied.files}
    for diff in original.files:
        now = applied_by_path.get(diff.path)
        if now is None:
            continue
        if len(now.hunk_starts) != len(diff.hunk_starts):
            details.append(f"{diff.path}: hunks regrouped ({len(diff.hunk_starts)} → {len(now.hunk_starts)})")
            continue
        for number, (was, got) in enumerate(zip(diff.hunk_starts, now.hunk_starts, strict=True), start=1):
            if was != got:
                details.append(f"{diff.path}: hunk #{number} at line {got} (offset {got - was:+d} lines)")
    return tuple(details)
