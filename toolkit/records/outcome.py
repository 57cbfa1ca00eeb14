"""What happened to one patch: the one set of outcome strings every stage writes (apply, rebase, review).

The values are the strings in state files, `--json` output and evidence.json; `Outcome` is a `StrEnum`,
so a member compares equal to (and serializes as) its string.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    # apply and rebase
    CLEAN = "clean"  # applied as written (offsets allowed in a rebase)
    OFFSET = "offset"  # apply: applied with moved hunks
    FUZZ = "fuzz"  # apply: applied with fuzz
    MERGED = "merged"  # needed a three-way merge, a recorded (rerere) resolution, or a hand resolution
    CONFLICT = "conflict"  # stopped: the merge left conflicts to resolve
    FAILED = "failed"  # stopped: the patch does not apply and cannot be merged (no conflict markers to resolve)
    NOT_APPLIED = "not applied"  # apply: after the patch the series stopped at
    # rebase only
    EMPTY = "empty"  # the new release already contains the change: nothing left to carry
    SKIPPED = "skipped"  # dropped by hand (`vpatch rebase --skip`)
    RETIRED = "retired"  # not replayed: `vpatch retire` recorded that upstream carries it from NEW (or earlier) on
    PENDING = "pending"  # not replayed yet
    # stopped: the patch does not apply or conflicts, but every hunk's change is already in NEW (by content)
    UPSTREAM = "upstream has it"
    # what `vpatch review` records for a rebased series edited by hand afterwards
    REWORKED = "reworked"  # dropped by the rebase, then written again by hand onto the new release
    ADDED = "added"  # not in the old series at all
    REMOVED = "removed"  # kept by the rebase, then removed by hand

    @property
    def style(self) -> str:
        """The rich style the terminal shows it in ("" for none)."""
        return _STYLES.get(self, "")


# A rebase's outcomes that keep the patch in the new series, and those that leave it out.
KEPT = (Outcome.CLEAN, Outcome.MERGED)
DROPPED = (Outcome.EMPTY, Outcome.SKIPPED, Outcome.RETIRED)

_STYLES = {
    Outcome.CLEAN: "green",
    Outcome.OFFSET: "yellow",
    Outcome.FUZZ: "yellow",
    Outcome.MERGED: "cyan",
    Outcome.FAILED: "red",
    Outcome.CONFLICT: "red",
    Outcome.UPSTREAM: "magenta",
    Outcome.NOT_APPLIED: "dim",
}
