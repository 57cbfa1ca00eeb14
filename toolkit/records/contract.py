"""patches/conformance/<project>-<NEW>-against-<OLD>.json: feature contracts judged over the real wire (schema 2).

Written by `vpatch conform NEW --against OLD` (toolkit/contracts/), read by `vpatch retire` (the gate) and by
`vpatch status` / the report (the default-engine verdict). One file holds, for each side (a `BuildSpec`:
version, build kind, extra wheels) and each transport configuration it ran (endpoint form, hash
algorithm), what the consumer saw and the per-item results of every feature contract. The consumer's own
per-batch observations (`Observation`, JSON lines written by `vpatch kv-watch --record`) use this module too.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from toolkit.records.codec import RecordError, decode_versioned, encode
from toolkit.records.status import CONTRACT_STATUSES, Status, require

SCHEMA = 2  # schema 1 files of the same name were ConformanceResults of the in-process comparison
BuildKind = Literal["dynamo-base", "stock", "stock+plugin"]
BUILD_KINDS: tuple[str, ...] = ("dynamo-base", "stock", "stock+plugin")
CONTRACT_FEATURES: tuple[str, ...] = ("kv-routing", "pd-disagg")  # the features toolkit/contracts/ judges
# A sub-feature one contract item judges on its own (retiring its patch needs that item passing on stock NEW):
# pd-disagg/nixl's nixl-transport is run with what `vpatch config migrate` makes of dynamo-base's NixlConnectorV1
# configuration and request parameters (toolkit/conformance/engine_pd_nixl.py). The item may also be a scenario
# a run told in an item's line rather than judged in it (TOLD): the NIXL run's nixl-steps-while-held, the
# prefill engine stepping while its blocks are held for the sends (patch 0011's capability).
SUB_FEATURE_ITEMS: dict[str, tuple[str, str]] = {
    "pd-disagg/nixl": ("pd-disagg", "nixl-transport"),
    "pd-disagg/stepping-while-held": ("pd-disagg", "nixl-steps-while-held"),
}
# How an item's line tells a run's scenarios that are not its to judge (the NIXL run's scheduler scenarios,
# toolkit/contracts/engine_stock.py): ` (not judged here: NAME: pass (...); NAME: fail [...])` at its end.
TOLD = "not judged here: "
_TOLD_PART = re.compile(r"([a-z][\w-]*): (pass|fail)\b")
_TOLD_SPLIT = re.compile(r"; (?=[a-z][\w-]*: (?:pass|fail)\b)")


def told_outcomes(detail: str) -> dict[str, tuple[bool, str]]:
    """scenario -> (passed, what the line says of it), for the scenarios an item's line tells (TOLD)."""
    start = detail.find(f"({TOLD}")
    if start == -1:
        return {}
    body = detail[start + 1 + len(TOLD) :].removesuffix(")")
    found: dict[str, tuple[bool, str]] = {}
    for part in _TOLD_SPLIT.split(body):
        if (match := _TOLD_PART.match(part)) is not None:
            found.setdefault(match[1], (match[2] == "pass", part))
    return found


class PluginRef(msgspec.Struct, frozen=True, omit_defaults=True):
    """A plugin wheel installed beside stock vLLM, from its own provenance (toolkit/plugin/build.py):
    distribution name and version, the wheel's file name and sha256, the series fingerprint it was built
    with, and what it delivers per feature."""

    name: str
    version: str
    file: str
    sha256: str
    series_fingerprint: str | None = None
    delivers: dict[str, str] = {}

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


class BuildSpec(msgspec.Struct, frozen=True, omit_defaults=True):
    """One side of a contract run: the vLLM release, which build of it, and wheels installed beside it
    (for `stock+plugin`: the plugin's wheel; paths when asked for, file names once recorded) with `plugins`
    saying what they are."""

    version: str
    kind: BuildKind
    extra_wheels: tuple[str, ...] = ()
    plugins: tuple[PluginRef, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.kind} {self.version}"

    def __post_init__(self) -> None:
        if self.kind == "stock+plugin" and not self.extra_wheels:
            raise ValueError("extra_wheels: a stock+plugin side needs the plugin's wheel")


class ItemResult(msgspec.Struct, omit_defaults=True):
    """One contract item on one side and configuration: pass, fail (with `diff`) or not-provided (`detail`
    names what the build lacks)."""

    feature: str
    item: str
    status: Status
    detail: str = ""
    diff: str = ""

    def __post_init__(self) -> None:
        require(self.status, CONTRACT_STATUSES)

    @property
    def key(self) -> str:
        return f"{self.feature}/{self.item}"


class Transport(msgspec.Struct, omit_defaults=True):
    """How one configuration's events travelled: the engine's endpoint as configured, who bound it, the
    replay endpoint (None when the build has none or it was not used), the prefix-caching hash."""

    endpoint: str
    consumer_endpoint: str
    consumer_binds: bool
    hash_algo: str
    replay_endpoint: str | None = None
    metrics_endpoint: str | None = None  # the plugin's load endpoint the consumer followed (stock+plugin)
    # the engine's KV-event publisher class when it is not vLLM's own ZmqEventPublisher, as the engine reported
    # it (stock+plugin: dynamo_base_plugin.event_publisher.InlineZmqEventPublisher, DYNAMO_KV_EVENTS_PUBLISHER)
    publisher: str | None = None


class Seen(msgspec.Struct, omit_defaults=True):
    """What the consumer reported at the end (from `vpatch kv-watch --json`); `encodings` counts the batches
    applied per wire encoding over the whole run (from its observations: kv-watch's own count restarts with
    each engine)."""

    received: int = 0
    batches: int = 0
    decode_errors: int = 0
    restarts: int = 0
    unrecoverable: list[list[int]] = []
    encodings: dict[str, int] = {}
    metrics_seen: bool = False
    errors: list[str] = []
    load_received: int = 0  # LoadMetrics messages from the plugin's endpoint (--metrics), apart from batches
    load_missed: int = 0


class ConfigRun(msgspec.Struct, omit_defaults=True):
    """One side under one transport configuration: what ran, what the consumer saw, the item results."""

    name: str
    side: str  # "old" or "new"
    build: BuildSpec
    transport: Transport | None
    items: list[ItemResult]
    seen: Seen | None = None
    workloads: list[str] = []
    engine_steps: int = 0
    error: str = ""  # the run itself failed (engine or consumer did not start): every item fails with it


class FigureComparison(msgspec.Struct, omit_defaults=True):
    """Supporting evidence, not an item: NEW's load figures against OLD's, per step, under one configuration,
    on the steps both engines scheduled alike (same workload, step and scheduled tokens). `equal`: figure ->
    the steps on which NEW's equals OLD's. The items judge each build against its own scheduler; this says how
    far the two builds' figures agree where their schedules do."""

    config: str
    steps: int
    equal: dict[str, int]
    steps_old: int = 0
    steps_new: int = 0


class ContractResults(msgspec.Struct):
    """`ok`: every item on the NEW side passed (what retiring NEW's features needs); `provided` per
    feature: the NEW side's items that are not pass, by key, with why."""

    project: str
    new: BuildSpec
    old: BuildSpec
    features: list[str]
    consumer: str
    runs: list[ConfigRun]
    ok: bool
    transport: str = ""
    schema: int = SCHEMA
    toolkit: str = ""
    python: str = ""
    started: str = ""
    seconds: float = 0.0
    # unset (not written) when nothing was compared, so files written before this field re-encode unchanged
    figures_vs_old: list[FigureComparison] | msgspec.UnsetType = msgspec.UNSET

    def items_of(self, side: str, feature: str) -> list[ItemResult]:
        return [i for run in self.runs if run.side == side for i in run.items if i.feature == feature]

    def feature_passes(self, feature: str, side: str = "new") -> bool:
        """Every item of `feature` on `side` passed, in every configuration (and there was at least one)."""
        items = self.items_of(side, feature)
        return bool(items) and all(i.status == Status.PASS for i in items)

    def item_passes(self, feature: str, item: str, side: str = "new") -> bool | None:
        """`item` of `feature` on `side` passed in every configuration that judged it (None: none did)."""
        found = [i for i in self.items_of(side, feature) if i.item == item]
        return all(i.status == Status.PASS for i in found) if found else None

    def told(self, feature: str, scenario: str, side: str = "new") -> tuple[bool, str] | None:
        """(passed in every line that told it, the first such line's words) for a scenario the items of
        `feature` on `side` tell but do not judge (TOLD); None when none tells it."""
        found = [
            (item.item, outcome)
            for item in self.items_of(side, feature)
            if (outcome := told_outcomes(item.detail).get(scenario)) is not None
        ]
        if not found:
            return None
        passed = all(ok for _, (ok, _) in found)
        item, (_, words) = next((f for f in found if f[1][0] == passed), found[0])
        return passed, f"{words}, told in the {item} item's line"

    def lacking(self, feature: str, side: str = "new") -> list[str]:
        """The items of `feature` that `side` does not meet, each with how and where:
        `cached-prefixes (fail in new-bind-sha256, new-loopback-sha256)`."""
        where: dict[str, dict[str, list[str]]] = {}  # item -> status label -> runs
        for run in self.runs:
            for item in run.items:
                if run.side == side and item.feature == feature and item.status != Status.PASS:
                    where.setdefault(item.item, {}).setdefault(item.status.label, []).append(run.name)
        found = []
        for name, by_status in where.items():
            how = "; ".join(f"{label} in {', '.join(runs)}" for label, runs in by_status.items())
            found.append(f"{name} ({how})")
        return found


class Observation(msgspec.Struct, omit_defaults=True):
    """One line of `vpatch kv-watch --record`: one worker's consumer state right after it applied a batch.

    `epoch` counts engine restarts the Subscriber detected (a runner starts a new engine per workload);
    `overlaps` are the Router's overlap (in blocks) for each probe prompt, by probe id. `stream` "load": the
    state right after one LoadMetrics message of the plugin's endpoint (`seq` its seq, `epoch` the restarts
    the LoadSubscriber counted, `step` the SchedulerStats it carries, `metrics` what the router then weighs; no
    hashes or overlaps)."""

    worker: str
    epoch: int
    seq: int | None
    batches: int
    hashes: list[int]
    overlaps: dict[str, int]
    stale: bool = False
    decode_errors: int = 0
    metrics: dict[str, float] | None = None
    encoding: str | None = None  # the encoding the worker speaks (KVIndex.encoding) after this batch
    stream: Literal["events", "load"] = "events"
    step: int | None = None  # stream "load": which SchedulerStats of the engine (from 0) the message carries


def encode_contract(results: ContractResults) -> str:
    return encode(results)


def decode_contract(text: str | bytes) -> ContractResults:
    """The results; RecordError for another schema or a field of the wrong shape."""
    return decode_versioned(text, ContractResults, SCHEMA)


OBSERVATION_ENCODER = msgspec.json.Encoder()
OBSERVATION_DECODER = msgspec.json.Decoder(Observation)


def encode_observation(observation: Observation) -> bytes:
    return OBSERVATION_ENCODER.encode(observation) + b"\n"


def decode_observations(data: bytes) -> list[Observation]:
    """Every complete line (a consumer killed mid-line leaves a partial last line: it is dropped)."""
    lines = data.split(b"\n")
    out = []
    for number, line in enumerate(lines[:-1] if not data.endswith(b"\n") else lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(OBSERVATION_DECODER.decode(line))
        except msgspec.DecodeError as exc:
            raise RecordError(f"observation: {exc}", line=number) from None
    return out
