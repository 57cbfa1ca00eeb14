"""patches/<project>-NEW/evidence.json: what a rebase found about every patch of the old series (format 1).

Written by `vpatch rebase` (toolkit/lifecycle/upstream.py builds it, rebase/complete.py writes it beside
the series), rewritten by `vpatch review`; read by the next rebase (`earlier`), `vpatch retire`, the
verdict, `vpatch ci` and `vpatch report`. One schema for all of them.

Fields added to format 1 later are `UNSET` when a file lacks them and stay out of it when written again,
so older files still read and re-encode to their own bytes: a patch's `new_patch_id`, `skip_reason` and
`past_native_since`, its signals' `native_since` and `post_image_in_new`, a dropped entry's `dropped_in`
and `skip_reason`, the document's `warnings`. Other fields a reader of a hand-made file may miss take
their defaults; fields the schema does not know are ignored (and not written back by `vpatch review`).
A field of the wrong shape is named by its path, a patch by its name (`$.patches["0001-x.patch"].kept`).
"""

from __future__ import annotations

import json
from typing import Annotated

import msgspec
from msgspec import UNSET, UnsetType

from toolkit.records.codec import RecordError, decode, encode, require_version
from toolkit.records.outcome import Outcome

EVIDENCE_FILE = "evidence.json"
EVIDENCE_FORMAT = 1
Count = Annotated[int, msgspec.Meta(ge=0)]


class HunkInNew(msgspec.Struct, omit_defaults=True):
    """One hunk of a patch and where NEW already has its post-image (line None: not found); found by
    toolkit/lifecycle/post_image.py, kept in evidence.json and in a stopped rebase's state."""

    file: str
    hunk: int  # 1-based, in the patch's file section
    line: int | None = None  # first line of the post-image (or of the added lines) in NEW's file
    how: str | None = None  # "exact", "moved context", "file deleted"

    def describe(self, release: str) -> str:
        if self.line is None and self.how is None:
            return f"{self.file} hunk #{self.hunk}: not in {release}"
        if self.how == "file deleted":
            return f"{self.file} hunk #{self.hunk}: {release} deletes the file too"
        return f"{self.file} hunk #{self.hunk}: in {release} at line {self.line}" + (
            " (moved context)" if self.how == "moved context" else ""
        )

    @property
    def found(self) -> bool:
        return self.how is not None


class Side(msgspec.Struct, kw_only=True):
    """OLD or NEW: the release and the base commit its series was applied to."""

    version: str = ""
    source: str = ""  # "sdist" or "git"
    base_commit: str = ""


class UpstreamCommit(msgspec.Struct):
    commit: str
    subject: str = ""


class Header(msgspec.Struct, kw_only=True):
    """What the patch's own headers say (`Applied-Upstream:`, `Upstream-Status:`)."""

    applied_upstream: str | None = None
    upstream_status: str = ""
    says_upstream: bool = False


class ConformanceRef(msgspec.Struct):
    """The contract result that shows every item of the patch's feature passing on NEW."""

    file: str
    build: str
    against: str


class PostImage(msgspec.Struct, kw_only=True):
    """Per hunk, where NEW's tree already has the hunk's post-image by content."""

    hunks: list[HunkInNew] = []
    found: Count = 0
    total: Count = 0


class Signals(msgspec.Struct, kw_only=True):
    """The independent signals that upstream has a patch (toolkit/lifecycle/upstream.py says what each means)."""

    became_empty: bool = False
    patch_id_match: list[UpstreamCommit] | str = []  # a str: why the match is not available
    reverse_applies: bool = False
    header: Header = msgspec.field(default_factory=Header)
    conformance: ConformanceRef | None = None
    native_since: str | UnsetType | None = UNSET
    post_image_in_new: PostImage | UnsetType = UNSET


class PatchEntry(msgspec.Struct, kw_only=True):
    """One patch of the old series (or one added by hand afterwards, `vpatch review`)."""

    outcome: Outcome
    position: int | None = None  # in the old series; None for a patch added after the rebase
    subject: str = ""
    feature: str | None = None
    details: list[str] = []
    kept: bool = False
    content_changed: bool | None = None
    patch_id: str | None = None
    new_patch_id: str | UnsetType | None = UNSET  # what the rebase (or review) wrote, for kept patches
    evidence: Signals | None = None
    upstream_signals: list[str] = []  # the names of the signals that fired
    skip_reason: str | UnsetType | None = UNSET  # `vpatch rebase --skip --reason`
    past_native_since: str | UnsetType | None = UNSET  # kept past its feature's native-since, no contract
    renamed_from: str | UnsetType = UNSET  # its name in the old series, when the rebase renamed it


class Dropped(msgspec.Struct, kw_only=True):
    """A patch the series left out; in `earlier`, dropped by a rebase before this one (`dropped_in`)."""

    name: str
    reason: Outcome
    feature: str | None = None
    dropped_in: str | UnsetType | None = UNSET
    skip_reason: str | UnsetType | None = UNSET


class Evidence(msgspec.Struct, kw_only=True):
    format: int = EVIDENCE_FORMAT
    project: str = ""
    old: Side = msgspec.field(default_factory=Side)
    new: Side = msgspec.field(default_factory=Side)
    patches: dict[str, PatchEntry] = {}
    dropped: list[Dropped] = []
    earlier: list[Dropped] = []
    kept: list[str] = []
    warnings: list[str] | UnsetType = UNSET

    def ordered(self) -> list[tuple[str, PatchEntry]]:
        """The patches in the old series' order (those without a position last), then by name."""
        return sorted(self.patches.items(), key=lambda item: (_position(item[1]), item[0]))

    def carried_forward(self) -> list[Dropped]:
        """The `earlier` list of a rebase of this series: its earlier and its dropped patches."""
        return [*self.earlier, *(msgspec.structs.replace(d, dropped_in=self.new.version) for d in self.dropped)]


def _position(entry: PatchEntry) -> int:
    return entry.position if entry.position is not None else 1 << 30


def encode_evidence(evidence: Evidence) -> str:
    return encode(evidence)


def decode_evidence(text: str | bytes) -> Evidence:
    """The evidence; RecordError for another format or a field of the wrong shape (a patch named by its name)."""
    require_version(text, EVIDENCE_FORMAT, "format")
    try:
        return decode(text, Evidence)
    except RecordError as exc:
        prefix = "$.patches[...]"
        if not exc.where.startswith(prefix):
            raise
        name = _bad_patch(text)
        if name is None:
            raise
        raise RecordError(exc.message, where=f"$.patches[{json.dumps(name)}]{exc.where[len(prefix) :]}") from None


def _bad_patch(text: str | bytes) -> str | None:
    """The name of the first patch entry that does not decode on its own (msgspec does not name dict keys)."""
    patches = json.loads(text).get("patches")
    for name, entry in patches.items() if isinstance(patches, dict) else ():
        try:
            msgspec.json.decode(json.dumps(entry), type=PatchEntry)
        except msgspec.ValidationError:
            return str(name)
    return None
