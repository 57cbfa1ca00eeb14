"""The rebase's records: its state in the checkout, each patch's outcome, a stop, and the stage's result.

The state lives in the checkout's `.git/vpatch.json` under `rebase`, with a private copy of the old
patches (and of NEW's pin when it is not written yet) in `.git/vpatch-rebase/`. `RebaseState` is the one
schema that writes and reads it: a field with a default is left out of the file while it has that value,
so a state written by this code and one written before it are the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from toolkit.checkout import Checkout, read_state, update_state
from toolkit.errors import VpatchError
from toolkit.records.evidence import Evidence, HunkInNew
from toolkit.records.outcome import Outcome

STATE_KEY = "rebase"
PRIVATE_DIR = "vpatch-rebase"
OLD_HEAD_REF = "refs/vpatch/rebase/old-head"
OLD_BASE_REF = "refs/vpatch/rebase/old-base"
RANGE_DIFF_FILE = "range-diff.txt"


class PatchResult(msgspec.Struct, omit_defaults=True):
    """One patch's outcome in a rebase."""

    name: str
    subject: str
    status: Outcome
    details: list[str]
    commit: str | None
    content_changed: bool | None = None  # set for kept patches when the rebase completes
    reason: str | None = None  # why it was dropped by hand (`vpatch rebase --skip --reason`)


class ConflictFile(msgspec.Struct):
    path: str
    kind: str  # what `git status` says of it ("content conflict", "added on both sides" ...)
    hunks: list[list[int]]  # [first, last] line of each conflict-marker block


class Stop(msgspec.Struct, omit_defaults=True):
    """The patch the replay stopped at (a conflict, or a patch that does not apply)."""

    name: str
    status: Outcome  # CONFLICT or FAILED
    files: list[ConflictFile]
    details: list[str]
    # Its hunks and where NEW already has their post-image (toolkit.lifecycle.post_image); [] in states
    # written before this was looked for.
    upstream: list[HunkInNew] = msgspec.field(default_factory=list)

    @property
    def upstream_has_it(self) -> bool:
        """Every hunk's post-image is in NEW: offered as "upstream has it" rather than as a conflict."""
        return bool(self.upstream) and all(h.found for h in self.upstream)

    @property
    def shown_status(self) -> Outcome:
        return Outcome.UPSTREAM if self.upstream_has_it else self.status


class RebaseState(msgspec.Struct, omit_defaults=True):
    old_version: str
    new_version: str
    old_base: str
    old_head: str | None  # where the old series' commits end (None: not made, or it does not apply)
    patches: list[str]  # the old series, in order
    remaining: list[str]  # not replayed yet
    outcomes: list[PatchResult]  # settled so far
    current: str | None  # the patch being replayed (or stopped at)
    stopped: Stop | None
    pending_pin: bool  # NEW's pin is written when the rebase completes
    # None: a state from before the old series' commits were made beside the replay (they were made).
    old_head_made: bool | None = None
    force: bool | None = None
    current_start: int | None = None  # commits above the base when the current patch started
    current_head: str | None = None  # HEAD when the current patch started
    am_from: str | None = None  # HEAD a `git am` started from, until its outcome is saved
    continuing: str | None = None  # how the stopped patch was resolved, once `git am --continue` runs
    no_reuse: bool | None = None  # `--no-reuse`: rerere is off, no recorded resolution is replayed
    rr_ids: dict[str, str] | None = None  # the stopped patch's conflicts as rerere tracks them {id: path}
    beside: bool | None = None  # `--beside`: the result goes to patches/<project>-NEW.rebased/


def private_dir(checkout: Checkout) -> Path:
    return checkout.git.git_dir() / PRIVATE_DIR


def rebase_state(path: Path) -> RebaseState | None:
    """The rebase in progress in the checkout at `path`, or None."""
    raw = read_state(path).get(STATE_KEY)
    if raw is None:
        return None
    try:
        return msgspec.convert(raw, RebaseState)
    except msgspec.ValidationError as exc:
        raise VpatchError(f"unreadable rebase state: {exc}", path=path / ".git" / "vpatch.json") from None


def save_state(checkout: Checkout, state: RebaseState) -> None:
    update_state(checkout, {STATE_KEY: msgspec.to_builtins(state)})


@dataclass
class RebaseResult:
    checkout: Checkout
    old_version: str
    new_version: str
    outcomes: list[PatchResult]
    stopped: Stop | None = None
    series_dir: Path | None = None
    range_diff: str | None = None
    evidence: Evidence | None = None
    pinned: bool = False  # NEW's pin was written by this rebase
    dropped: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.stopped is None

    def as_dict(self) -> dict:
        return {
            "old_version": self.old_version,
            "new_version": self.new_version,
            "checkout": str(self.checkout.path),
            "done": self.done,
            "patches": msgspec.to_builtins(self.outcomes),
            "stopped": msgspec.to_builtins(self.stopped),
            "series": str(self.series_dir) if self.series_dir else None,
            "pinned": self.pinned,
            "dropped": self.dropped,
            "range_diff": self.range_diff,
            "evidence": msgspec.to_builtins(self.evidence),
        }
