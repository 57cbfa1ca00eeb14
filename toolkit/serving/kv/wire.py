"""KV-cache event payloads in every encoding a fleet can mix, decoded into one internal model.

Encodings (docs/kv-events.md, "Encodings the consumer reads"):

- `dynamo-maps`: dynamo-base's batches (patches/vllm-0.8.4, 0.8.5): a map
  `{"ts", "seq", "events", "metrics"}`, events maps tagged by `"type"`, hashes reduced to u64.
- `upstream-arrays`: stock vLLM 0.9.0 .. 0.23 (msgspec `array_like`): a batch `[ts, events,
  data_parallel_rank?]`, events `["BlockStored", block_hashes, parent_block_hash, token_ids, block_size,
  lora_id, medium?, lora_name?, ...]`; hashes unreduced (negative with the builtin hash) or bytes.
- `upstream-maps`: stock vLLM 0.24.0+: the batch is still an array `[ts, events, data_parallel_rank?]`, its
  events tagged maps (`{"type": "BlockStored", "block_hashes": ..., "medium": ..., ...}`). A map batch
  without dynamo-base's `seq`/`metrics` is read the same way.

Fields added over releases and unknown fields are ignored (array_like structs ignore trailing elements,
map structs unknown keys). An unknown event *type* fails the whole batch: what it did to the cache is
unknown. Every failure, including nesting too deep to skip (`RecursionError` inside msgspec), is a
`WireError`, never anything else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

WIRE_MASK = 2**64 - 1
"""The one 64-bit mask: a block's canonical key is its hash `& WIRE_MASK` (= `hash % 2**64`, also for
negative builtin hashes), what dynamo-base sends and what the runner's `cached_hashes` hold."""

END_OF_REPLAY = b"\xff" * 8
"""The seq frame of the message that ends a replay answer (vLLM's `(-1).to_bytes(8, signed=True)`)."""

U64 = Annotated[int, msgspec.Meta(ge=0)]
WireHash = int | bytes  # msgpack carries int64/uint64 ints; 0.10.2+ may send the hash digest as bytes

DYNAMO_MAPS = "dynamo-maps"
UPSTREAM_ARRAYS = "upstream-arrays"
UPSTREAM_MAPS = "upstream-maps"
ENCODINGS = (DYNAMO_MAPS, UPSTREAM_ARRAYS, UPSTREAM_MAPS)


class WireError(ValueError):
    """A payload that is not a batch in any encoding this consumer reads."""


def canonical_hash(value: WireHash) -> int:
    """One key type for every hash form: ints masked to u64; bytes by their last 8 bytes, big-endian (what
    vLLM 0.10.2+ sends as the int form of a bytes block hash)."""
    if isinstance(value, bytes):
        return int.from_bytes(value[-8:], "big")
    return value & WIRE_MASK


# --------------------------------------------------------------------------------------------- internal model


@dataclass(frozen=True, slots=True)
class Stored:
    block_hashes: tuple[int, ...]
    parent_block_hash: int | None
    token_ids: tuple[int, ...]
    block_size: int
    lora_id: int | None = None


@dataclass(frozen=True, slots=True)
class Removed:
    block_hashes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Cleared:
    pass


KVEvent = Stored | Removed | Cleared
EVENT_NAMES = {Stored: "BlockStored", Removed: "BlockRemoved", Cleared: "AllBlocksCleared"}


class Metrics(msgspec.Struct):
    """dynamo-base's load metrics (stock vLLM publishes none)."""

    num_running: int
    num_waiting: int
    kv_cache_usage: float
    prefix_cache_queries: int
    prefix_cache_hits: int
    prefix_cache_hit_rate: float


@dataclass(frozen=True, slots=True)
class Batch:
    """One decoded batch; `seq` only when the payload carries one (dynamo-base), else the frame's counts."""

    ts: float
    events: tuple[KVEvent, ...]
    encoding: str
    seq: int | None = None
    metrics: Metrics | None = None
    data_parallel_rank: int | None = None


def event_name(event: KVEvent) -> str:
    return EVENT_NAMES[type(event)]


# --------------------------------------------------------------------------------------------- dynamo-base maps


class BlockStored(msgspec.Struct, tag_field="type", tag=True):
    """dynamo-base's `BlockStored` (also the event shape of upstream's tagged maps, which add fields)."""

    block_hashes: list[U64]
    parent_block_hash: U64 | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None = None


class BlockRemoved(msgspec.Struct, tag_field="type", tag=True):
    block_hashes: list[U64]


class AllBlocksCleared(msgspec.Struct, tag_field="type", tag=True):
    pass


Event = BlockStored | BlockRemoved | AllBlocksCleared


class EventBatch(msgspec.Struct):
    """dynamo-base's batch as the engine sends it: what `encode_batch` writes (and tests' fake engines use)."""

    ts: float
    seq: int
    events: list[Event]
    metrics: Metrics | None = None


_dynamo_encoder = msgspec.msgpack.Encoder()


def encode_batch(batch: EventBatch) -> bytes:
    """msgpack bytes of a dynamo-base batch (maps with string keys, events tagged by "type")."""
    return _dynamo_encoder.encode(batch)


# --------------------------------------------------------------------------------------------- decoding structs


class _MapStored(msgspec.Struct, tag_field="type", tag="BlockStored"):
    block_hashes: list[WireHash]
    parent_block_hash: WireHash | None = None
    token_ids: list[int] = []
    block_size: int = 0
    lora_id: int | None = None


class _MapRemoved(msgspec.Struct, tag_field="type", tag="BlockRemoved"):
    block_hashes: list[WireHash]


class _MapCleared(msgspec.Struct, tag_field="type", tag="AllBlocksCleared"):
    pass


class _MapBatch(msgspec.Struct):
    ts: float
    events: list[_MapStored | _MapRemoved | _MapCleared]
    seq: int | msgspec.UnsetType = msgspec.UNSET  # dynamo-base only
    metrics: Metrics | msgspec.UnsetType | None = msgspec.UNSET  # dynamo-base only
    data_parallel_rank: int | None = None  # upstream 0.9.1+


class _ArrayStored(msgspec.Struct, array_like=True, tag="BlockStored"):
    block_hashes: list[WireHash]
    parent_block_hash: WireHash | None = None
    token_ids: list[int] = []
    block_size: int = 0
    lora_id: int | None = None


class _ArrayRemoved(msgspec.Struct, array_like=True, tag="BlockRemoved"):
    block_hashes: list[WireHash]


class _ArrayCleared(msgspec.Struct, array_like=True, tag="AllBlocksCleared"):
    pass


class _ArrayBatch(msgspec.Struct, array_like=True):
    ts: float
    events: list[_ArrayStored | _ArrayRemoved | _ArrayCleared]
    data_parallel_rank: int | None = None


class _ArrayBatchOfMaps(msgspec.Struct, array_like=True):
    """0.24.0+: the batch stays array_like, its events became tagged maps."""

    ts: float
    events: list[_MapStored | _MapRemoved | _MapCleared]
    data_parallel_rank: int | None = None


_map_decoder = msgspec.msgpack.Decoder(_MapBatch)
_array_decoder = msgspec.msgpack.Decoder(_ArrayBatch)
_array_of_maps_decoder = msgspec.msgpack.Decoder(_ArrayBatchOfMaps)


def _hashes(values: list[WireHash]) -> tuple[int, ...]:
    return tuple(v & WIRE_MASK if type(v) is int else canonical_hash(v) for v in values)


def _event(raw: Any) -> KVEvent:
    if isinstance(raw, (_MapStored, _ArrayStored)):
        parent = None if raw.parent_block_hash is None else canonical_hash(raw.parent_block_hash)
        return Stored(_hashes(raw.block_hashes), parent, tuple(raw.token_ids), raw.block_size, raw.lora_id)
    if isinstance(raw, (_MapRemoved, _ArrayRemoved)):
        return Removed(_hashes(raw.block_hashes))
    return Cleared()


def decode(data: bytes) -> Batch:
    """Decode one payload in whichever encoding it is; raises `WireError` (only) when it is none of them."""
    if not data:
        raise WireError("empty payload")
    first = data[0]
    try:
        if 0x80 <= first <= 0x8F or first in (0xDE, 0xDF):
            mapped = _map_decoder.decode(data)
            dynamo = mapped.seq is not msgspec.UNSET or mapped.metrics is not msgspec.UNSET
            return Batch(
                ts=mapped.ts,
                events=tuple(_event(e) for e in mapped.events),
                encoding=DYNAMO_MAPS if dynamo else UPSTREAM_MAPS,
                seq=mapped.seq if isinstance(mapped.seq, int) else None,
                metrics=mapped.metrics if isinstance(mapped.metrics, Metrics) else None,
                data_parallel_rank=mapped.data_parallel_rank,
            )
        if 0x90 <= first <= 0x9F or first in (0xDC, 0xDD):
            array: _ArrayBatch | _ArrayBatchOfMaps
            encoding = UPSTREAM_ARRAYS
            try:
                array = _array_decoder.decode(data)
            except msgspec.ValidationError as exc:
                if "got `object`" not in str(exc):  # not events that are maps: a real error
                    raise
                array, encoding = _array_of_maps_decoder.decode(data), UPSTREAM_MAPS
            return Batch(
                ts=array.ts,
                events=tuple(_event(e) for e in array.events),
                encoding=encoding,
                data_parallel_rank=array.data_parallel_rank,
            )
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise WireError(str(exc)) from None
    except RecursionError:
        raise WireError("nesting too deep to decode") from None
    raise WireError(f"payload starts with byte 0x{first:02x}: neither a msgpack map nor an array")


def decode_batch(data: bytes) -> EventBatch:
    """Decode a dynamo-base payload strictly into its own types; raises `msgspec.DecodeError` when malformed."""
    try:
        return _dynamo_decoder.decode(data)
    except RecursionError:
        raise msgspec.DecodeError("nesting too deep to decode") from None


_dynamo_decoder = msgspec.msgpack.Decoder(EventBatch)


def from_event_batch(batch: EventBatch) -> Batch:
    """The internal model of a dynamo-base batch built in memory (tests, the conformance checks)."""
    events: list[KVEvent] = []
    for event in batch.events:
        if isinstance(event, BlockStored):
            parent = None if event.parent_block_hash is None else canonical_hash(event.parent_block_hash)
            events.append(
                Stored(
                    _hashes(list(event.block_hashes)), parent, tuple(event.token_ids), event.block_size, event.lora_id
                )
            )
        elif isinstance(event, BlockRemoved):
            events.append(Removed(_hashes(list(event.block_hashes))))
        else:
            events.append(Cleared())
    return Batch(ts=batch.ts, events=tuple(events), encoding=DYNAMO_MAPS, seq=batch.seq, metrics=batch.metrics)


# --------------------------------------------------------------------------------------------- upstream encoders


def encode_upstream(events: list[KVEvent], *, ts: float, arrays: bool, extra: dict[str, Any] | None = None) -> bytes:
    """A payload in stock vLLM's shape (`arrays`: 0.9.0's array_like events; else 0.24.0+'s tagged-map events,
    in the array batch both use), for tests. `extra` adds fields later releases send (appended in order for
    arrays)."""
    extra = extra or {}
    out: list[Any] = []
    for event in events:
        if isinstance(event, Stored):
            fields: dict[str, Any] = {
                "block_hashes": list(event.block_hashes),
                "parent_block_hash": event.parent_block_hash,
                "token_ids": list(event.token_ids),
                "block_size": event.block_size,
                "lora_id": event.lora_id,
                **extra.get("BlockStored", {}),
            }
        elif isinstance(event, Removed):
            fields = {"block_hashes": list(event.block_hashes), **extra.get("BlockRemoved", {})}
        else:
            fields = dict(extra.get("AllBlocksCleared", {}))
        name = event_name(event)
        out.append([name, *fields.values()] if arrays else {"type": name, **fields})
    return msgspec.msgpack.encode([ts, out, *extra.get("batch", {}).values()])


def pack_seq(seq: int) -> bytes:
    return struct.pack(">Q", seq)


def unpack_seq(frame: bytes) -> int:
    if len(frame) != 8:
        raise ValueError(f"seq frame has {len(frame)} bytes, expected 8")
    return int(struct.unpack(">Q", frame)[0])
