"""patches/<project>-NEW/resolutions/index.json: the conflict resolutions a rebase onto NEW used (format 1).

Written by `vpatch rebase` with the series it produced (toolkit/lifecycle/rebase/resolutions.py) and by
`vpatch resolutions export`; read by the next `vpatch rebase OLD --onto NEW`, which replays them. One
record per conflicted file of a patch: the file in vLLM's tree, the patch of OLD's series that conflicted,
and two plain files beside the index, the conflicted preimage (the file with git's conflict markers) and
the resolution (the file as resolved), each with its sha256 so an edited or truncated file is refused.
"""

from __future__ import annotations

import msgspec

from toolkit.records.codec import decode_versioned, encode

INDEX_FILE = "index.json"
RESOLUTIONS_DIR = "resolutions"
RESOLUTIONS_FORMAT = 1


class Resolution(msgspec.Struct, omit_defaults=True):
    """One conflicted file of one patch, and how it was resolved."""

    patch: str  # the patch of OLD's series whose `git am --3way` conflicted
    path: str  # the file in vLLM's tree (relative, '/'-separated)
    preimage: str  # under resolutions/: the conflicted file, conflict markers and all
    resolution: str  # under resolutions/: the file as resolved
    preimage_sha256: str
    resolution_sha256: str
    hunks: list[list[int]]  # [first, last] line of each conflict-marker block in the preimage
    how: str  # "by hand", "recorded resolution (rerere)", "exported from the rr-cache", "replayed from ..."
    recorded: str  # the day it was first recorded (YYYY-MM-DD, UTC; SOURCE_DATE_EPOCH when set)


class ResolutionIndex(msgspec.Struct, omit_defaults=True):
    format: int
    project: str
    old_version: str  # the rebase step these resolve: OLD's series onto NEW's base
    new_version: str
    resolutions: list[Resolution] = msgspec.field(default_factory=list)

    def find(self, patch: str, path: str) -> Resolution | None:
        for entry in self.resolutions:
            if entry.patch == patch and entry.path == path:
                return entry
        return None

    def put(self, entry: Resolution) -> None:
        """Add `entry`, replacing the one of the same patch and file; kept in series then path order."""
        self.resolutions = [e for e in self.resolutions if (e.patch, e.path) != (entry.patch, entry.path)]
        self.resolutions.append(entry)
        self.resolutions.sort(key=lambda e: (e.patch, e.path))


def encode_index(index: ResolutionIndex) -> str:
    return encode(index)


def decode_index(text: str | bytes) -> ResolutionIndex:
    """The index; RecordError for another format or a field of the wrong shape."""
    return decode_versioned(text, ResolutionIndex, RESOLUTIONS_FORMAT, "format")
