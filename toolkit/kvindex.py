"""Reference consumer of the KV-cache events a patched vLLM engine publishes (see docs/kv-events.md).

- Wire types (`EventBatch`, `BlockStored`, `BlockRemoved`, `AllBlocksCleared`, `Metrics`) with
  `decode_batch` / `encode_batch`.
- `KVIndex`: per worker, the set of cached block hashes (plus each block's token ids) and the latest
  load metrics, rebuilt from the event stream.
- `Subscriber`: follows one engine's PUB stream, detects gaps by `seq`, fills them from the engine's
  replay ROUTER, and records what it cannot recover.
- `Router`: picks the worker with the longest cached prefix of a request, weighed against load.
- `Vllm084BlockHasher`: recomputes vLLM 0.8.4's chained block hashes without importing vLLM.
"""

from __future__ import annotations

import hashlib
import math
import pickle
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
import zmq

WIRE_MASK = 2**64
"""Block hashes travel as `hash_value % 2**64` (an unsigned 64-bit msgpack integer)."""

END_OF_REPLAY = b"\xff" * 8
"""The seq frame of the message that ends a replay answer."""

U64 = Annotated[int, msgspec.Meta(ge=0)]  # msgpack cannot carry more than 2**64 - 1 anyway


# --------------------------------------------------------------------------------------------- wire types


class BlockStored(msgspec.Struct, tag_field="type", tag=True):
    """Hashes that entered the engine's cached-block map: one run of consecutive blocks of one request."""

    block_hashes: list[U64]
    parent_block_hash: U64 | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None = None


class BlockRemoved(msgspec.Struct, tag_field="type", tag=True):
    """Hashes that left the cached-block map."""

    block_hashes: list[U64]


class AllBlocksCleared(msgspec.Struct, tag_field="type", tag=True):
    """The prefix cache was reset: the map is empty."""


Event = BlockStored | BlockRemoved | AllBlocksCleared


class Metrics(msgspec.Struct):
    num_running: int
    num_waiting: int
    kv_cache_usage: float
    prefix_cache_queries: int
    prefix_cache_hits: int
    prefix_cache_hit_rate: float


class EventBatch(msgspec.Struct):
    ts: float
    seq: int
    events: list[Event]
    metrics: Metrics | None = None


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(EventBatch)


def encode_batch(batch: EventBatch) -> bytes:
    """msgpack bytes of a batch, as the engine sends them (maps with string keys, events tagged by "type")."""
    return _encoder.encode(batch)


def decode_batch(data: bytes) -> EventBatch:
    """Decode and validate one batch; raises `msgspec.DecodeError` (or its `ValidationError`) when malformed."""
    return _decoder.decode(data)


def pack_seq(seq: int) -> bytes:
    return struct.pack(">Q", seq)


def unpack_seq(frame: bytes) -> int:
    if len(frame) != 8:
        raise ValueError(f"seq frame has {len(frame)} bytes, expected 8")
    return struct.unpack(">Q", frame)[0]


def event_type(event: Event) -> str:
    return type(event).__name__


# --------------------------------------------------------------------------------------------- the index


@dataclass
class WorkerState:
    """What the index knows about one worker."""

    blocks: set[int] = field(default_factory=set)
    tokens: dict[int, tuple[int, ...]] = field(default_factory=dict)
    # engine block hash -> content key (see `content_chain`), and how many cached blocks share each key
    content: dict[int, int] = field(default_factory=dict)
    content_refs: dict[int, int] = field(default_factory=dict)
    block_size: int | None = None
    metrics: Metrics | None = None
    metrics_ts: float | None = None
    stale: bool = False
    batches: int = 0
    last_seq: int | None = None
    events: dict[str, int] = field(default_factory=lambda: {"BlockStored": 0, "BlockRemoved": 0, "AllBlocksCleared": 0})
    blocks_stored: int = 0
    blocks_removed: int = 0


class KVIndex:
    """Per-worker sets of cached block hashes (wire hashes), rebuilt by applying event batches in order.

    A worker is *stale* when batches were lost (see `Subscriber.unrecoverable`): its set may hold hashes the
    engine has evicted or miss hashes it has stored. An `AllBlocksCleared` makes the set exact again and
    clears the flag.
    """

    def __init__(self, *, keep_tokens: bool = True) -> None:
        self.keep_tokens = keep_tokens
        self._workers: dict[str, WorkerState] = {}

    def add_worker(self, worker: str) -> WorkerState:
        return self._workers.setdefault(worker, WorkerState())

    def remove_worker(self, worker: str) -> None:
        self._workers.pop(worker, None)

    def workers(self) -> list[str]:
        return sorted(self._workers)

    def state(self, worker: str) -> WorkerState:
        try:
            return self._workers[worker]
        except KeyError:
            raise KeyError(f"unknown worker {worker!r}") from None

    def apply(self, worker: str, batch: EventBatch, *, seq: int | None = None) -> None:
        state = self.add_worker(worker)
        for event in batch.events:
            state.events[event_type(event)] = state.events.get(event_type(event), 0) + 1
            if isinstance(event, BlockStored):
                state.blocks.update(event.block_hashes)
                state.blocks_stored += len(event.block_hashes)
                self._store_content(state, event)
                if self.keep_tokens and len(event.token_ids) == len(event.block_hashes) * event.block_size:
                    size = event.block_size
                    for i, block_hash in enumerate(event.block_hashes):
                        state.tokens[block_hash] = tuple(event.token_ids[i * size : (i + 1) * size])
            elif isinstance(event, BlockRemoved):
                state.blocks.difference_update(event.block_hashes)
                state.blocks_removed += len(event.block_hashes)
                for block_hash in event.block_hashes:
                    state.tokens.pop(block_hash, None)
                    key = state.content.pop(block_hash, None)
                    if key is not None:
                        state.content_refs[key] -= 1
                        if not state.content_refs[key]:
                            del state.content_refs[key]
            elif isinstance(event, AllBlocksCleared):
                state.blocks.clear()
                state.tokens.clear()
                state.content.clear()
                state.content_refs.clear()
                state.stale = False
        if batch.metrics is not None:
            state.metrics = batch.metrics
            state.metrics_ts = batch.ts
        state.batches += 1
        state.last_seq = batch.seq if seq is None else seq

    @staticmethod
    def _store_content(state: WorkerState, event: BlockStored) -> None:
        """Give each stored block a content key chained from its parent's (when the parent is known)."""
        size = event.block_size
        if len(event.token_ids) != len(event.block_hashes) * size:
            return
        if event.parent_block_hash is None:
            parent = None
        elif event.parent_block_hash in state.content:
            parent = state.content[event.parent_block_hash]
        else:
            return  # the parent was stored before we joined (or lost): these blocks cannot be keyed
        state.block_size = size
        for i, block_hash in enumerate(event.block_hashes):
            parent = content_key(parent, event.token_ids[i * size : (i + 1) * size], event.lora_id)
            if block_hash not in state.content:
                state.content[block_hash] = parent
                state.content_refs[parent] = state.content_refs.get(parent, 0) + 1

    def content_overlap(self, worker: str, keys: Sequence[int]) -> int:
        """How many leading content keys (see `content_chain`) the worker holds."""
        refs = self.state(worker).content_refs
        count = 0
        for key in keys:
            if key not in refs:
                break
            count += 1
        return count

    def mark_stale(self, worker: str) -> None:
        self.add_worker(worker).stale = True

    def is_stale(self, worker: str) -> bool:
        return self.state(worker).stale

    def hashes(self, worker: str) -> frozenset[int]:
        return frozenset(self.state(worker).blocks)

    def tokens(self, worker: str, block_hash: int) -> tuple[int, ...] | None:
        """The token ids of a cached block, when the `BlockStored` carried them."""
        return self.state(worker).tokens.get(block_hash)

    def metrics(self, worker: str) -> Metrics | None:
        return self.state(worker).metrics

    def overlap(self, worker: str, block_hashes: Iterable[int]) -> int:
        """How many leading blocks of `block_hashes` the worker holds."""
        blocks = self.state(worker).blocks
        count = 0
        for block_hash in block_hashes:
            if block_hash not in blocks:
                break
            count += 1
        return count


# --------------------------------------------------------------------------------------------- subscriber


class Subscriber:
    """Follow one engine: SUB on `endpoint`, replay through a DEALER on `replay_endpoint`, feed a `KVIndex`.

    Batches are applied strictly in `seq` order. A batch with a lower `seq` than the next expected one is a
    duplicate and is ignored. A jump in `seq` (including a first batch with `seq > 0`: a late joiner) asks
    the replay endpoint for everything from the first missing `seq`; what the replay cannot provide (it
    starts later, skips a `seq`, does not answer within `replay_timeout_ms`, or there is no replay endpoint)
    is appended to `unrecoverable` as an inclusive `(from_seq, to_seq)` range and the worker is marked
    stale in the index. Only messages whose topic frame equals `topic` exactly are used (ZMQ itself filters
    by prefix).
    """

    def __init__(
        self,
        endpoint: str,
        replay_endpoint: str | None = None,
        topic: bytes = b"",
        worker: str = "w0",
        *,
        index: KVIndex | None = None,
        context: zmq.Context | None = None,
        replay_timeout_ms: int = 2000,
        hwm: int = 100_000,
    ) -> None:
        self.endpoint = endpoint
        self.replay_endpoint = replay_endpoint
        self.topic = topic
        self.worker = worker
        self.index = index if index is not None else KVIndex()
        self.index.add_worker(worker)
        self.replay_timeout_ms = replay_timeout_ms
        self.seq: int | None = None  # last applied seq
        self.next_seq = 0
        self.first_seen_seq: int | None = None
        self.unrecoverable: list[tuple[int, int]] = []
        self.errors: deque[str] = deque(maxlen=100)  # the latest problems, newest last
        self.batches = 0  # applied, from the stream and from replay
        self.replayed = 0  # applied from replay
        self.replay_requests = 0
        self.duplicates = 0
        self.other_topics = 0
        self._context = context or zmq.Context.instance()
        self._hwm = hwm
        self._replay: zmq.Socket | None = None
        self._sub = self._context.socket(zmq.SUB)
        try:
            self._sub.setsockopt(zmq.LINGER, 0)
            self._sub.setsockopt(zmq.RCVHWM, hwm)
            self._sub.setsockopt(zmq.SUBSCRIBE, topic)
            self._sub.connect(endpoint)
            if replay_endpoint is not None:
                self._replay = self._open_replay()
        except BaseException:
            self.close()
            raise
        self._poller = zmq.Poller()
        self._poller.register(self._sub, zmq.POLLIN)

    # -- lifecycle

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for sock in (self._sub, self._replay):
            if sock is not None and not sock.closed:
                sock.close(linger=0)

    @property
    def stale(self) -> bool:
        return self.index.is_stale(self.worker)

    # -- receiving

    def poll(self, timeout_ms: float = 0, *, max_messages: int = 10_000) -> int:
        """Wait up to `timeout_ms` for stream messages, handle those available; return batches applied."""
        applied = 0
        if not self._poller.poll(max(0, math.ceil(timeout_ms))):
            return 0
        for _ in range(max_messages):
            try:
                frames = self._sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            applied += self._on_stream(frames)
        return applied

    def drain(self, until_seq: int, timeout_s: float) -> bool:
        """Poll until the batch `until_seq` has been handled (applied or given up as unrecoverable)."""
        deadline = time.monotonic() + timeout_s
        while self.next_seq <= until_seq:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.poll(remaining * 1000)
        return True

    def catch_up(self) -> int:
        """Ask the replay endpoint for everything from `next_seq` now (e.g. at start, before the engine's next
        step); return batches applied. Without a replay endpoint this does nothing."""
        if self._replay is None:
            return 0
        return self._replay_from(self.next_seq, upto=None)

    def _on_stream(self, frames: list[bytes]) -> int:
        if len(frames) != 3:
            self.errors.append(f"stream message with {len(frames)} frames, expected 3")
            return 0
        topic, seq_frame, payload = frames
        if topic != self.topic:
            self.other_topics += 1
            return 0
        try:
            seq = unpack_seq(seq_frame)
        except ValueError as exc:
            self.errors.append(f"stream: {exc}")
            return 0
        if self.first_seen_seq is None:
            self.first_seen_seq = seq
        if seq < self.next_seq:
            self.duplicates += 1
            return 0
        applied = 0
        if seq > self.next_seq:
            applied += self._fill_gap(self.next_seq, seq)
            if seq < self.next_seq:  # the replay already brought it
                return applied
        return applied + self._apply(seq, payload)

    def _fill_gap(self, start: int, upto: int) -> int:
        """Batches `start .. upto-1` are missing: replay them, or record them as unrecoverable."""
        if self._replay is None:
            self._give_up(start, upto - 1)
            self.next_seq = upto
            return 0
        return self._replay_from(start, upto=upto)

    def _replay_from(self, start: int, *, upto: int | None) -> int:
        applied = 0
        for seq, payload in self._request_replay(start):
            if seq < self.next_seq:
                self.duplicates += 1
                continue
            if seq > self.next_seq:
                self._give_up(self.next_seq, seq - 1)
            done = self._apply(seq, payload)
            applied += done
            self.replayed += done
        if upto is not None and self.next_seq < upto:
            self._give_up(self.next_seq, upto - 1)
            self.next_seq = upto
        return applied

    def _request_replay(self, start: int) -> Iterator[tuple[int, bytes]]:
        assert self._replay is not None
        self.replay_requests += 1
        self._replay.send_multipart([b"", pack_seq(start)])
        while True:
            if not self._replay.poll(self.replay_timeout_ms, zmq.POLLIN):
                self.errors.append(f"replay from {start}: no answer within {self.replay_timeout_ms} ms")
                # Late answers to this request must not be read as answers to the next one.
                self._replay.close(linger=0)
                self._replay = self._open_replay()
                return
            frames = self._replay.recv_multipart()
            if len(frames) != 3 or frames[0] != b"":
                self.errors.append(f"replay: unexpected message with {len(frames)} frames")
                continue
            if frames[1] == END_OF_REPLAY:
                return
            try:
                seq = unpack_seq(frames[1])
            except ValueError as exc:
                self.errors.append(f"replay: {exc}")
                continue
            yield seq, frames[2]

    def _open_replay(self) -> zmq.Socket:
        assert self.replay_endpoint is not None
        sock = self._context.socket(zmq.DEALER)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, self._hwm)
            sock.connect(self.replay_endpoint)
        except BaseException:
            sock.close(linger=0)
            raise
        return sock

    def _apply(self, seq: int, payload: bytes) -> int:
        self.next_seq = seq + 1
        try:
            batch = decode_batch(payload)
        except msgspec.DecodeError as exc:
            self.errors.append(f"seq {seq}: cannot decode batch: {exc}")
            self._give_up(seq, seq)
            return 0
        if batch.seq != seq:
            self.errors.append(f"seq {seq}: batch says seq {batch.seq}; using the frame's")
        self.index.apply(self.worker, batch, seq=seq)
        self.seq = seq
        self.batches += 1
        return 1

    def _give_up(self, first: int, last: int) -> None:
        self.unrecoverable.append((first, last))
        self.index.mark_stale(self.worker)

    def summary(self) -> dict[str, Any]:
        state = self.index.state(self.worker)
        return {
            "endpoint": self.endpoint,
            "replay_endpoint": self.replay_endpoint,
            "topic": self.topic.decode("utf-8", "replace"),
            "worker": self.worker,
            "batches": self.batches,
            "replayed": self.replayed,
            "replay_requests": self.replay_requests,
            "duplicates": self.duplicates,
            "other_topics": self.other_topics,
            "first_seen_seq": self.first_seen_seq,
            "last_seq": self.seq,
            "events": dict(state.events),
            "blocks_stored": state.blocks_stored,
            "blocks_removed": state.blocks_removed,
            "hashes_cached": len(state.blocks),
            "metrics": msgspec.to_builtins(state.metrics) if state.metrics is not None else None,
            "unrecoverable": [list(gap) for gap in self.unrecoverable],
            "stale": state.stale,
            "errors": list(self.errors),
        }


# --------------------------------------------------------------------------------------------- router


@dataclass(frozen=True)
class WorkerScore:
    worker: str
    overlap_blocks: int
    score: float
    kv_cache_usage: float
    num_waiting: int
    num_running: int
    stale: bool


@dataclass(frozen=True)
class RouteDecision:
    worker: str | None
    total_blocks: int
    overlaps: dict[str, int]
    ranking: list[WorkerScore]  # best first


class Router:
    """Pick a worker for a request from the cached prefixes in a `KVIndex`.

    Overlap is measured with `hash_blocks` (the engine's own block hashes, recomputed: exact, but only
    possible when the engine's hash is reproducible outside it) or, by default, with content keys that
    the index derives from the token ids the events carry (`content_chain`): independent of the engine's
    hash function and of the Python it runs on. vLLM 0.8.4's default builtin block hash includes
    `hash(None)`, which before Python 3.12 differs from process to process, so content keys are what a
    router can rely on.

    For a request of `total_blocks` full blocks, each worker gets

        score = overlap_blocks - load_weight * kv_cache_usage * max(total_blocks, 1)

    where `overlap_blocks` is the number of leading request blocks in the worker's set and
    `kv_cache_usage` (0..1) comes from the worker's latest metrics (0 when it has none). Both terms are
    in blocks: a full cache costs as much as the whole request being a hit (with `load_weight` 1), and
    `max(.., 1)` keeps load relevant for requests shorter than a block. The highest score wins; ties go
    to fewer waiting requests, then fewer running requests, then the worker name. Stale workers are
    scored like the others (their overlap is a best guess); `WorkerScore.stale` tells the caller.
    """

    def __init__(
        self,
        index: KVIndex,
        hash_blocks: Callable[[Sequence[int]], list[int]] | None = None,
        *,
        load_weight: float = 1.0,
        block_size: int = 16,
    ) -> None:
        self.index = index
        self.hash_blocks = hash_blocks
        self.load_weight = load_weight
        self.block_size = block_size

    def route(self, token_ids: Sequence[int], workers: Iterable[str] | None = None) -> RouteDecision:
        if self.hash_blocks is not None:
            block_hashes = self.hash_blocks(token_ids)
        else:
            block_hashes = content_chain(token_ids, self.block_size)
        total = len(block_hashes)
        ranking = []
        for worker in self.index.workers() if workers is None else workers:
            state = self.index.state(worker)
            if self.hash_blocks is not None:
                overlap = self.index.overlap(worker, block_hashes)
            else:
                overlap = self.index.content_overlap(worker, block_hashes)
            metrics = state.metrics
            usage = metrics.kv_cache_usage if metrics else 0.0
            score = overlap - self.load_weight * usage * max(total, 1)
            ranking.append(
                WorkerScore(
                    worker=worker,
                    overlap_blocks=overlap,
                    score=score,
                    kv_cache_usage=usage,
                    num_waiting=metrics.num_waiting if metrics else 0,
                    num_running=metrics.num_running if metrics else 0,
                    stale=state.stale,
                )
            )
        ranking.sort(key=lambda s: (-s.score, s.num_waiting, s.num_running, s.worker))
        return RouteDecision(
            worker=ranking[0].worker if ranking else None,
            total_blocks=total,
            overlaps={s.worker: s.overlap_blocks for s in ranking},
            ranking=ranking,
        )


# --------------------------------------------------------------------------------------------- block hashes


def content_key(parent: int | None, block_token_ids: Sequence[int], lora_id: int | None = None) -> int:
    """A block's identity from its tokens and its parent's identity: blake2b, 64 bits, stable everywhere."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(b"root" if parent is None else parent.to_bytes(8, "big"))
    digest.update(b"lora:" + str(lora_id).encode() + b";")
    digest.update(",".join(map(str, block_token_ids)).encode())
    return int.from_bytes(digest.digest(), "big")


def content_chain(token_ids: Sequence[int], block_size: int, lora_id: int | None = None) -> list[int]:
    """Content keys of the full blocks of a token sequence (what `KVIndex` keys stored blocks by)."""
    keys: list[int] = []
    parent: int | None = None
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = content_key(parent, token_ids[start : start + block_size], lora_id)
        keys.append(parent)
    return keys


def pickle_sha256(obj: object) -> int:
    """What `vllm.utils.sha256` computes in 0.8.4: sha256 of `pickle.dumps(obj, HIGHEST_PROTOCOL)`, as a
    big-endian integer (256 bits)."""
    return int.from_bytes(hashlib.sha256(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)).digest(), "big")


VLLM_084_NONE_HASH = pickle_sha256(None)
"""vLLM 0.8.4's `NONE_HASH` for an engine started *without* PYTHONHASHSEED.

0.8.4 (vllm/v1/core/kv_cache_utils.py) sets

    NONE_HASH = int.from_bytes(os.urandom(32), "big") if os.getenv("PYTHONHASHSEED") is not None
                else sha256(os.getenv("PYTHONHASHSEED"))

i.e. the condition is the reverse of what its comment says: without PYTHONHASHSEED it is the fixed
`sha256(None)`, with PYTHONHASHSEED it is random per process. In the second case the engine's value must
be read from that process (`vllm.v1.core.kv_cache_utils.NONE_HASH`) and passed as `none_hash`.
"""


def to_wire(hash_value: int) -> int:
    return hash_value % WIRE_MASK


class Vllm084BlockHasher:
    """vLLM 0.8.4's prefix-cache block hashes, without importing vLLM.

    0.8.4 (`hash_request_tokens` / `hash_block_tokens`) walks the request's tokens in blocks of
    `block_size`, hashes only full blocks (a trailing partial block has no hash), and chains them:

        hash_value_i = hash_fn((parent or NONE_HASH, tuple(block_token_ids_i), extra_keys_i))

    where `parent` is the previous block's *full* `hash_value` (None for the first block; note that
    `if not parent` also replaces a parent of 0), `hash_fn` is the builtin `hash` (the default,
    `--prefix-caching-hash-algo builtin`) or `vllm.utils.sha256` (`sha256`; see `pickle_sha256`), and
    `extra_keys` is None for plain text requests, `(lora_int_id,)` with LoRA, and includes the
    multimodal input hashes for blocks that overlap multimodal placeholders.

    The chain uses the full values; only the output is reduced mod 2**64 for the wire.

    Reproducibility across processes (the router is not the engine process):
    - `sha256`: always, given the engine's NONE_HASH (the default one for an engine without PYTHONHASHSEED).
    - builtin `hash`: the hash of a tuple of ints does not depend on PYTHONHASHSEED (only str/bytes hashing is
      randomised), but `extra_keys` is `None` for plain text requests, and before CPython 3.12 `hash(None)`
      is derived from the address of `None`, which differs from process to process. So builtin block
      hashes of plain text requests match only when both the engine and this process run CPython >= 3.12
      (64-bit); with LoRA (`extra_keys=(lora_int_id,)`) they match on any 64-bit CPython >= 3.8.
      Multimodal extra keys are strings, whose hash is randomised unless PYTHONHASHSEED is shared.

    `extra_keys` is either one tuple (or None) used for every block, or a callable
    `(start, end) -> tuple | None` given each block's token range.
    """

    def __init__(
        self,
        block_size: int,
        *,
        none_hash: int = VLLM_084_NONE_HASH,
        hash_fn: Callable[[Any], int] = hash,
        extra_keys: tuple[Any, ...] | Callable[[int, int], tuple[Any, ...] | None] | None = None,
    ) -> None:
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.block_size = block_size
        self.none_hash = none_hash
        self.hash_fn = hash_fn
        self.extra_keys = extra_keys

    def hash_block(self, parent: int | None, block_token_ids: Sequence[int], extra_keys: Any = None) -> int:
        """One block's full `hash_value` (not reduced)."""
        return self.hash_fn((parent or self.none_hash, tuple(block_token_ids), extra_keys))

    def chain(self, token_ids: Sequence[int]) -> list[int]:
        """The full `hash_value` of every full block, in order."""
        size = self.block_size
        result: list[int] = []
        parent: int | None = None
        for start in range(0, len(token_ids) - size + 1, size):
            end = start + size
            extra = self.extra_keys(start, end) if callable(self.extra_keys) else self.extra_keys
            parent = self.hash_block(parent, token_ids[start:end], extra)
            result.append(parent)
        return result

    def __call__(self, token_ids: Sequence[int]) -> list[int]:
        """Wire hashes (mod 2**64) of every full block: what `BlockStored.block_hashes` carries."""
        return [to_wire(value) for value in self.chain(token_ids)]
