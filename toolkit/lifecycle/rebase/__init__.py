"""Rebase a series onto another pinned release: replay, resolve, review, write the new series.

`start_rebase` makes a checkout of the NEW release's base (`checkouts/<project>-NEW-rebase` by default),
fetches the OLD base's objects into it so `git am --3way` can rebuild each patch's preimage, and replays
the old series one patch at a time. Each patch ends up clean, merged (three-way, a recorded resolution, or
by hand), empty (NEW already has the change) or skipped. A conflict stops the replay with the `git am`
session left in place: resolve it with ordinary git (edit, `git add`) and `continue_rebase`, or
`skip_patch`, or `abort_rebase` (back to NEW's base).

git rerere is enabled in the checkout and its rr-cache is a link to the project's own (`<git dir>/vpatch/rr-cache`
for a project in git, else `<cache>/rerere/<project>-<hash of its path>`: two forks on one machine keep apart),
shared by every rebase of that project: a conflict resolved once is resolved the same way the next time,
without stopping, and announced with the patch, rebase and time it was recorded for (`reuse`).
The resolutions a rebase used are also written into the new series (`patches/<project>-NEW/resolutions/`, in
the transaction that writes the patches) and replayed at a stop before rerere's, so a step resolved once
replays on a fresh clone; one that no longer matches the conflict stops the rebase and is named (`resolutions`).
`--no-reuse` turns rerere off for one rebase. `--beside` writes the result next to NEW's committed series
(`patches/<project>-NEW.rebased/`), to be adopted or discarded (`beside`).

The package, by concern:

* `state`: the records (the saved `RebaseState`, each patch's `PatchResult`, a `Stop`, the `RebaseResult`);
* `session`: start, continue, skip, abort (what `vpatch rebase` calls);
* `replay`: the replay state machine, one `git am` at a time, saved after every step;
* `complete`: the new series, its evidence and range-diff, NEW's pin, written as one transaction;
* `reuse`: where recorded resolutions live, their index, the announcement of a reuse;
* `resolutions`: resolutions kept in the tree: recorded as a stop is resolved, replayed, checked;
* `rr_export`: the rr-cache's resolutions of a rebase copied into the tree (`vpatch resolutions export`);
* `beside`: adopting or discarding a rebase written beside a committed series;
* `recipes`: the git recipes (rerere's link, the old series as commits, the range-diff);
* `conflicts`: unmerged paths and conflict-marker blocks;
* `mail`: the `Last-Update:` trailer and the series file's comments.
"""

from __future__ import annotations

from toolkit.lifecycle.rebase.recipes import old_series_head, range_diff, rerere_cache
from toolkit.lifecycle.rebase.session import (
    abort_rebase,
    continue_rebase,
    default_rebase_dir,
    skip_patch,
    start_rebase,
    stopped_patch,
)
from toolkit.lifecycle.rebase.state import (
    RANGE_DIFF_FILE,
    PatchResult,
    RebaseResult,
    RebaseState,
    Stop,
    rebase_state,
)
from toolkit.records.evidence import EVIDENCE_FILE

__all__ = [
    "EVIDENCE_FILE",
    "RANGE_DIFF_FILE",
    "PatchResult",
    "RebaseResult",
    "RebaseState",
    "Stop",
    "abort_rebase",
    "continue_rebase",
    "default_rebase_dir",
    "old_series_head",
    "range_diff",
    "rebase_state",
    "rerere_cache",
    "skip_patch",
    "start_rebase",
    "stopped_patch",
]
