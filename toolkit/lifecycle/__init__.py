"""The series lifecycle: carry a series to a new upstream release, gather evidence, retire what upstream absorbed.

`rebase` replays one version's series onto another pinned release (three-way merges, git rerere with
resolutions remembered in the cache) and writes the result as that release's series, with a range-diff
for review and per-patch evidence that upstream already has a patch (`upstream`). Retiring patches on
that evidence comes later.
"""

from __future__ import annotations

# Per-patch outcomes of a rebase.
CLEAN = "clean"  # applied as written (offsets allowed)
MERGED = "merged"  # needed a three-way merge, a recorded (rerere) resolution, or a hand resolution
CONFLICT = "conflict"  # stopped: the merge left conflicts to resolve
FAILED = "failed"  # stopped: the patch does not apply and cannot be merged (no conflict markers to resolve)
EMPTY = "empty"  # the new release already contains the change: nothing left to carry
SKIPPED = "skipped"  # dropped by hand (`vpatch rebase --skip`)
RETIRED = "retired"  # not replayed: `vpatch retire` recorded that upstream carries it from NEW (or earlier) on
PENDING = "pending"  # not replayed yet
# What `vpatch review` records for a rebased series edited by hand afterwards.
REWORKED = "reworked"  # dropped by the rebase, then written again by hand onto the new release
ADDED = "added"  # not in the old series at all
REMOVED = "removed"  # kept by the rebase, then removed by hand

KEPT = (CLEAN, MERGED)
DROPPED = (EMPTY, SKIPPED, RETIRED)
