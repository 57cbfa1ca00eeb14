"""`KVIndex`: per worker, the cached block hashes (reference counted), their token ids and content keys, and
the latest load metrics, rebuilt from decoded batches of any encoding (see `wire.decode`)."""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field

from toolkit.serving.kv.hashes import content_key
from toolkit.serving.kv.wire import Batch, Cleared, EventBatch, Metrics, Removed, Stored, event_name, from_event_batch


def _event_counts() -> dict[str, int]:
    return {"BlockStored": 0, "BlockRemoved": 0, "AllBlocksCleared": 0}


@dataclass
class WorkerState:
    """What the index knows about one worker."""

    # canonical block key -> stores minus removals; a block is cached while its count is positive
    blocks: dict[int, int] = field(default_factory=dict)
    tokens: dict[int, tuple[int, ...]] = field(default_factory=dict)
    # block key -> content key (see `content_chain`), and how many cached blocks share each content key
    content: dict[int, int] = field(default_factory=dict)
    content_refs: dict[int, int] = field(default_factory=dict)
    block_size: int | None = None
    metrics: Metrics | None = None
    metrics_ts: float | None = None
    metrics_unit: str | None = None  # what prefix_cache_queries/hits count: "blocks" (dynamo-base), "tokens"
    metrics_source: str | None = None  # the encoding the figures came in (dynamo-maps, plugin-load-metrics)
    stale: bool = False
    batches: int = 0
    last_seq: int | None = None
    events: dict[str, int] = field(default_factory=_event_counts)
    blocks_stored: int = 0
    blocks_removed: int = 0
    removed_unknown: int = 0  # removals of blocks the index never saw stored (joined late, or lost batches)
    encodings: dict[str, int] = field(default_factory=dict)  # batches applied per wire encoding
    resets: int = 0


class KVIndex:
    """Per-worker reference-counted sets of cached block keys, rebuilt by applying batches in order.

    Stock vLLM announces a hash once per block holding it (two blocks with the same content are two stores)
    and one removal per evicted block; dynamo-base announces a hash once. Counting both ways gives the
    engine's map: a block is cached while its stores exceed its removals. A removal of a block the index
    holds no count for is counted (`removed_unknown`) and ignored, so the count never goes negative.

    A worker is *stale* when batches were lost: its set may hold evicted hashes or miss stored ones. An
    `AllBlocksCleared` makes the set exact again and clears the flag.
    """

    def __init__(self, *, keep_tokens: bool = True) -> None:
        self.keep_tokens = keep_tokens
        self._workers: dict[str, WorkerState] = {}

    def add_worker(self, worker: str) -> WorkerState:
        return self._workers.setdefault(worker, WorkerState())

    def remove_worker(self, worker: str) -> None:
        self._workers.pop(worker, None)

    def reset_worker(self, worker: str) -> None:
        """Forget everything about the worker's cache (its engine restarted); counters restart too."""
        resets = self._workers[worker].resets + 1 if worker in self._workers else 1
        self._workers[worker] = WorkerState(resets=resets)

    def workers(self) -> list[str]:
        return sorted(self._workers)

    def state(self, worker: str) -> WorkerState:
        try:
            return self._workers[worker]
        except KeyError:
            raise KeyError(f"unknown worker {worker!r}") from None

    def apply(self, worker: str, batch: Batch | EventBatch, *, seq: int | None = None) -> None:
        if isinstance(batch, EventBatch):
            batch = from_event_batch(batch)
        state = self.add_worker(worker)
        for event in batch.events:
            name = event_name(event)
            state.events[name] = state.events.get(name, 0) + 1
            if isinstance(event, Stored):
                self._store(state, event)
            elif isinstance(event, Removed):
                self._remove(state, event.block_hashes)
            elif isinstance(event, Cleared):
                state.blocks.clear()
                state.tokens.clear()
                state.content.clear()
                state.content_refs.clear()
                state.stale = False
        if batch.metrics is not None:
            self.set_metrics(worker, batch.metrics, batch.ts, unit="blocks", source=batch.encoding)
        state.batches += 1
        state.encodings[batch.encoding] = state.encodings.get(batch.encoding, 0) + 1
        state.last_seq = batch.seq if seq is None else seq

    def set_metrics(self, worker: str, metrics: Metrics, ts: float, *, unit: str, source: str) -> None:
        """The worker's latest load figures: from a dynamo-base batch, or from the plugin's own endpoint."""
        state = self.add_worker(worker)
        state.metrics, state.metrics_ts, state.metrics_unit, state.metrics_source = metrics, ts, unit, source

    def _store(self, state: WorkerState, event: Stored) -> None:
        blocks = state.blocks
        size = event.block_size
        full = size > 0 and len(event.token_ids) == len(event.block_hashes) * size
        state.blocks_stored += len(event.block_hashes)
        # content keys chain from the parent's; unknown parent (stored before we joined, or lost): no keys
        if not full:
            parent: int | None = None
            keyed = False
        elif event.parent_block_hash is None:
            parent, keyed = None, True
        else:
            parent = state.content.get(event.parent_block_hash)
            keyed = parent is not None
        if keyed:
            state.block_size = size
        for i, block_hash in enumerate(event.block_hashes):
            count = blocks.get(block_hash, 0)
            blocks[block_hash] = count + 1
            if full:
                block_tokens = event.token_ids[i * size : (i + 1) * size]
                if self.keep_tokens and not count:
                    state.tokens[block_hash] = block_tokens
                if keyed:
                    parent = content_key(parent, block_tokens, event.lora_id)
                    if block_hash not in state.content:
                        state.content[block_hash] = parent
                        state.content_refs[parent] = state.content_refs.get(parent, 0) + 1

    @staticmethod
    def _remove(state: WorkerState, block_hashes: Sequence[int]) -> None:
        blocks = state.blocks
        for block_hash in block_hashes:
            count = blocks.get(block_hash, 0)
            if count <= 0:
                state.removed_unknown += 1
                continue
            state.blocks_removed += 1
            if count > 1:
                blocks[block_hash] = count - 1
                continue
            del blocks[block_hash]
            state.tokens.pop(block_hash, None)
            key = state.content.pop(block_hash, None)
            if key is not None:
                state.content_refs[key] -= 1
                if not state.content_refs[key]:
                    del state.content_refs[key]

    def content_overlap(self, worker: str, keys: Sequence[int]) -> int:
        """How many leading content keys (see `content_chain`) the worker holds."""
        return leading_held(keys, self.state(worker).content_refs)

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

    def encoding(self, worker: str) -> str | None:
        """The wire encoding the worker speaks (the one most of its batches came in), None before any."""
        encodings = self.state(worker).encodings
        return max(encodings, key=encodings.__getitem__) if encodings else None

    def overlap(self, worker: str, block_hashes: Iterable[int]) -> int:
        """How many leading blocks of `block_hashes` (canonical keys) the worker holds."""
        return leading_held(block_hashes, self.state(worker).blocks)


def leading_held(keys: Iterable[int], held: Container[int]) -> int:
    """How many of `keys`, from the first, are in `held` (a prefix match stops at the first miss)."""
    count = 0
    for key in keys:
        if key not in held:
            break
        count += 1
    return count
