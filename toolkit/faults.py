"""Fault injection for the crash-safety tests: die at a named write boundary.

`VPATCH_FAULT=<point>[:<n>]` makes the process exit with status 137 (as SIGKILL would, with no cleanup:
no `finally`, no atexit) the n-th time (default 1st) it reaches `point`; `<point>:<n>:enospc` raises
the OSError a full disk gives there instead. The points are the boundaries
between the writes of a transaction (toolkit/txn.py) and the moment before each atomic rename.
Unset (the normal case), `reached` is one dictionary lookup.
"""

from __future__ import annotations

import errno
import os

ENV = "VPATCH_FAULT"
KILLED = 137
_hits: dict[str, int] = {}

# Every point a test may name (tests enumerate these).
POINTS = (
    "txn.staged",  # every new file and directory is written beside its final place; no journal yet
    "txn.write",  # a file is about to be written into a staged directory (n counts them)
    "txn.journal",  # the journal is written; nothing is swapped yet
    "txn.swap",  # after each swap (n counts them)
    "txn.swapped",  # every swap done; the old copies and the journal are still there
    "atomic.write",  # an atomic file write has its temp file complete, before the rename (n counts them)
    "checkout.staged",  # a new checkout is complete under its temp name, before the rename
    "checkout.placed",  # the checkout is under its name, before any patch is applied
    "wheel.write",  # a wheel's temp file is half written in the output dir
    "download.part",  # a download's .part file is half written in the cache
    "rebase.am",  # a rebase's `git am` returned (n counts them); its outcome is not saved yet
)


def reached(point: str) -> None:
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    name, _, rest = wanted.partition(":")
    if name != point:
        return
    count, _, mode = rest.partition(":")
    _hits[point] = _hits.get(point, 0) + 1
    if _hits[point] == (int(count) if count else 1):
        if mode == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os._exit(KILLED)


def reset() -> None:
    """Forget the counts (for tests that run several commands in one process)."""
    _hits.clear()
