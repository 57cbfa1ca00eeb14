"""The story of the series: per pinned release and capability, carried / plugin / retired / not-applicable, and
the release from which stock vLLM (with or without the dynamo-base plugin) is the recommended default.

Computed by toolkit/report/story.py from the pins (`[features]`, with `upstream`), each release's series and
`retired/` list, the rebase evidence (evidence.json) and the default-engine verdicts (toolkit/verdict.py, on
the contract evidence under patches/conformance/); shown by `vpatch status` (under `story` with `--json`)
and by the report, which writes it as `story.json` beside index.html. One schema for writing and reading.

A capability is a declared feature without sub-features, or a sub-feature (`pd-disagg/nixl`); a feature with
sub-features has its own row too (`parent` None), judged as a whole by its contract. Per release a cell is:

- `carried`: active patches deliver it (`patches`; `within` names the parent when the parent's own patches
  carry it, before the series was split by capability);
- `plugin`: retired from the series (`since`) and delivered beside stock vLLM by the plugin (`plugin`,
  `module`), on the evidence in `evidence` (contract files) and `items` (what the plugin adds);
- `retired`: retired from the series since `since`, stock vLLM does it, on `evidence` / `items` / `note`;
- `not-applicable`: the release does not carry it and nothing retired it (`note` says why).

`judged_at` names the release whose verdict the cell's plugin/retired judgement comes from when the release
itself has no verdict for the feature (a later release inherits the judgement of the one that retired it).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from toolkit.records.codec import decode_versioned, encode
from toolkit.records.verdict import Engine

STORY_FILE = "story.json"
STORY_FORMAT = 1
CellStatus = Literal["carried", "plugin", "retired", "not-applicable"]
CELL_STATUSES: tuple[str, ...] = ("carried", "plugin", "retired", "not-applicable")


class Capability(msgspec.Struct, omit_defaults=True):
    """A declared feature or sub-feature; `upstream` the pins.toml text, `prs` the pull requests it and the
    capability's patches (Upstream-Status, Forwarded) name, `lead` when pins.toml marks it unverified."""

    name: str
    description: str = ""
    parent: str | None = None
    has_parts: bool = False  # a feature with sub-features: its row sums them up
    upstream: str | None = None
    prs: list[str] = []
    lead: bool = False
    native_since: str | None = None


class Cell(msgspec.Struct, omit_defaults=True):
    capability: str
    status: CellStatus
    patches: list[str] = []  # carried: the active patches; retired/plugin: the retired patches
    within: str | None = None  # carried by the parent feature's own patches
    since: str | None = None  # retired/plugin: the release its last patch left the series in
    plugin: str | None = None  # plugin: the plugin's name and version
    module: str | None = None  # plugin: the plugin module that delivers it
    evidence: list[str] = []  # contract files (patches/conformance/, out/conform/) and records
    items: list[str] = []  # contract items: what the plugin adds, the conditions still unmet
    note: str = ""  # Retired-Evidence, rebase signals, or why not applicable
    judged_at: str | None = None  # the release whose verdict judged it, when not this one


class Release(msgspec.Struct, omit_defaults=True):
    """One pinned release: its verdict (engine None: no verdict) and one cell per capability."""

    version: str
    engine: Engine | None
    summary: str
    cells: list[Cell] = []
    plugin: str | None = None  # the plugin the verdict installs beside stock vLLM
    contracts: list[str] = []  # the contract files the verdict rests on

    @property
    def stock_default(self) -> bool:
        return self.engine in ("stock", "stock+plugin")

    def cell(self, capability: str) -> Cell | None:
        return next((c for c in self.cells if c.capability == capability), None)


class Switch(msgspec.Struct, omit_defaults=True):
    """`release`: the first pinned release whose verdict is stock or stock + plugin with every later pinned
    release agreeing (None: no such release); `sentence` says so and why; `needs` the capabilities that still
    need dynamo-base at the newest pin when there is no switch."""

    release: str | None
    engine: Engine | None
    sentence: str
    needs: list[str] = []


class Story(msgspec.Struct):
    project: str
    capabilities: list[Capability]
    releases: list[Release]
    switch: Switch
    format: int = STORY_FORMAT

    def release(self, version: str) -> Release | None:
        return next((r for r in self.releases if r.version == version), None)


def encode_story(story: Story) -> str:
    return encode(story)


def decode_story(text: str | bytes) -> Story:
    """The story; RecordError for another format or a field of the wrong shape (named by its JSON path)."""
    return decode_versioned(text, Story, STORY_FORMAT, "format")
