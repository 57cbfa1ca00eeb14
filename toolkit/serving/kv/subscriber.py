"""`Subscriber`: follows one engine's PUB stream, fills gaps from its replay ROUTER, and detects late joins,
engine restarts and implausible seqs (docs/kv-events.md, "Sequence rules")."""

from __future__ import annotations

import math
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Iterator
from typing import Any

import msgspec
import zmq

from toolkit.serving.kv.index import KVIndex
from toolkit.serving.kv.load import Follower, LoadSubscriber, open_sub
from toolkit.serving.kv.wire import END_OF_REPLAY, WireError, decode, pack_seq, unpack_seq

MAX_SEQ_JUMP = 1_000_000
"""A stream seq more than this far ahead of the next expected one is implausible (see `Subscriber`)."""

STARTUP_WAIT_MS = 200
"""How long the first poll waits for the stream before asking replay whether the engine published already."""

RECENT_SEQS = 20_000
"""How many applied seqs' payload checksums are kept to tell a duplicate from a restarted engine."""


class Subscriber(Follower):
    """Follow one engine: SUB on `endpoint`, replay through a DEALER on `replay_endpoint`, feed a `KVIndex`.

    Batches are applied strictly in seq order (the seq frame; dynamo-base also repeats it in the payload).

    - A seq jump asks replay for everything from the first missing seq; what replay cannot provide (it starts
      later, skips a seq, does not answer within `replay_timeout_ms`, or there is no replay endpoint) is
      appended to `unrecoverable` as an inclusive range and the worker is marked stale.
    - Late join: a first stream seq above 0 is a gap (replayed or reported). With a replay endpoint, a first
      `poll` that finds the stream quiet for `STARTUP_WAIT_MS` asks replay from 0 once (`catch_up`), so an
      engine that published everything before we joined is applied, or reported as a gap. `joined_late`
      says whether the engine had published before we joined (None: not known yet).
    - A seq below the next expected one is a duplicate when it repeats a batch applied under that seq (same
      payload checksum); otherwise the engine restarted: the worker's index is reset, `restarts` counts it,
      an error says so, and the new numbering is followed (replaying its start when it is missed).
    - A seq more than `max_seq_jump` ahead is held back and counted in `implausible`: if the next batch
      continues from it, the new numbering is accepted as a restart; otherwise it is dropped.
    - An undecodable payload is counted in `decode_errors`, recorded as a one-batch gap, and never raises.

    Only messages whose topic frame equals `topic` exactly are used (ZMQ itself filters by prefix). With
    `bind=True` the SUB socket binds `endpoint` and the engine connects to it: stock vLLM 0.9.0 connects
    its PUB socket for endpoints without `*`/`::` (e.g. `tcp://127.0.0.1:5557`) and binds only for those
    and for ipc/inproc.

    `metrics_endpoint`: where the dynamo-base plugin publishes this worker's load figures (stock vLLM + plugin,
    docs/plugin.md); a `LoadSubscriber` (always connecting: the plugin binds) feeds them into the same worker.
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
        bind: bool = False,
        max_seq_jump: int = MAX_SEQ_JUMP,
        metrics_endpoint: str | None = None,
    ) -> None:
        self.follow(endpoint, topic, worker, index, bind)
        self.replay_endpoint = replay_endpoint
        self.replay_timeout_ms = replay_timeout_ms
        self.max_seq_jump = max_seq_jump
        self.seq: int | None = None  # last applied seq
        self.next_seq = 0
        self.first_seen_seq: int | None = None
        self.joined_late: bool | None = None
        self.unrecoverable: list[tuple[int, int]] = []
        self.errors: deque[str] = deque(maxlen=100)  # the latest problems, newest last
        self.received = 0  # stream messages on our topic
        self.batches = 0  # applied, from the stream and from replay
        self.replayed = 0
        self.replay_requests = 0
        self.duplicates = 0
        self.other_topics = 0
        self.decode_errors = 0
        self.restarts = 0
        self.implausible = 0
        self._recent: OrderedDict[int, int] = OrderedDict()  # seq -> crc32 of its payload
        self._suspect: tuple[int, bytes] | None = None
        self._caught_up = False
        self._deadline: float | None = None  # of the poll in progress: bounds the replay waits it triggers
        self._context = context or zmq.Context.instance()
        self._hwm = hwm
        self._replay: zmq.Socket | None = None
        self.load: LoadSubscriber | None = None
        self._sub = open_sub(self._context, endpoint, topic, bind=bind, hwm=hwm)
        try:
            if replay_endpoint is not None:
                self._replay = self._open_replay()
            if metrics_endpoint is not None:
                self.load = LoadSubscriber(metrics_endpoint, topic, worker, index=self.index, context=self._context)
        except BaseException:
            self.close()
            raise
        self._poller = zmq.Poller()
        self._poller.register(self._sub, zmq.POLLIN)
        if self.load is not None:
            self._poller.register(self.load.socket, zmq.POLLIN)

    # -- lifecycle

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for sock in (self._sub, self._replay):
            if sock is not None and not sock.closed:
                sock.close(linger=0)
        if self.load is not None:
            self.load.close()

    @property
    def stale(self) -> bool:
        return self.index.is_stale(self.worker)

    # -- receiving

    def poll(self, timeout_ms: float = 0, *, max_messages: int = 10_000, deadline: float | None = None) -> int:
        """Wait up to `timeout_ms` for stream messages, handle those available; return batches applied.
        `deadline` (time.monotonic()) bounds every replay wait this call makes."""
        applied = 0
        # Until the stream shows where the engine is, a quiet stream may mean it published before we joined.
        pending_catch_up = not self._caught_up and self._replay is not None
        wait_ms = min(timeout_ms, STARTUP_WAIT_MS) if pending_catch_up else timeout_ms
        ready = dict(self._poller.poll(max(0, math.ceil(wait_ms))))
        if self.load is not None and self.load.socket in ready:
            self.load.drain()  # load figures are snapshots: applied as they come, apart from the batch order
        if self._sub not in ready:
            return self.catch_up(deadline=deadline) if pending_catch_up else 0
        for _ in range(max_messages):
            try:
                frames = self._sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._deadline = deadline
            applied += self._on_stream(frames)
        return applied

    def drain(self, until_seq: int, timeout_s: float) -> bool:
        """Poll until the batch `until_seq` has been handled (applied or given up as unrecoverable)."""
        deadline = time.monotonic() + timeout_s
        while self.next_seq <= until_seq:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.poll(remaining * 1000, deadline=deadline)
        return True

    def catch_up(self, *, deadline: float | None = None) -> int:
        """Ask replay for everything from `next_seq` now; return batches applied. `poll` does this once by
        itself before its first read. Without a replay endpoint this does nothing."""
        if self._replay is None:
            return 0
        first = not self._caught_up
        self._caught_up = True
        before = self.batches
        applied = self._replay_from(self.next_seq, upto=None, deadline=deadline)
        if first and self.joined_late is None and self._replay_answered:
            self.joined_late = self.batches > before or bool(self.unrecoverable)
        return applied

    def _on_stream(self, frames: list[bytes]) -> int:
        deadline = self._deadline
        if (message := self.our_message(frames, "stream")) is None:
            return 0
        seq_frame, payload = message
        try:
            seq = unpack_seq(seq_frame)
        except ValueError as exc:
            self.errors.append(f"stream: {exc}")
            return 0
        self.received += 1
        if self.first_seen_seq is None:
            self.first_seen_seq = seq
            self._caught_up = True  # from here on, the stream's seqs tell us what we missed
            if self.joined_late is None:
                self.joined_late = seq > self.next_seq
        applied = 0
        if self._suspect is not None:
            suspect, self._suspect = self._suspect, None
            if seq == suspect[0] + 1:
                self._restart(f"seq jumped from {self.next_seq} to {suspect[0]} and continued there")
                self.next_seq = suspect[0]
                applied += self._apply(*suspect)
        if seq < self.next_seq:
            if self._recent.get(seq) == zlib.crc32(payload):
                self.duplicates += 1
                return applied
            self._restart(f"seq went back from {self.next_seq - 1} to {seq}")
            self.next_seq = 0
        elif seq - self.next_seq > self.max_seq_jump and self.batches:
            self.implausible += 1
            self.errors.append(f"seq {seq}: {seq - self.next_seq} ahead of the expected {self.next_seq}; held back")
            self._suspect = (seq, payload)
            return applied
        if seq > self.next_seq:
            applied += self._fill_gap(self.next_seq, seq, deadline)
            if seq < self.next_seq:  # the replay already brought it
                return applied
        return applied + self._apply(seq, payload)

    def _restart(self, why: str) -> None:
        self.restarts += 1
        self.errors.append(f"engine restarted ({why}): index of {self.worker} reset")
        self.index.reset_worker(self.worker)
        self._recent.clear()
        self.seq = None

    def _fill_gap(self, start: int, upto: int, deadline: float | None) -> int:
        """Batches `start .. upto-1` are missing: replay them, or record them as unrecoverable."""
        if self._replay is None:
            self._give_up(start, upto - 1)
            self.next_seq = upto
            return 0
        return self._replay_from(start, upto=upto, deadline=deadline)

    def _replay_from(self, start: int, *, upto: int | None, deadline: float | None) -> int:
        applied = 0
        for seq, payload in self._request_replay(start, deadline):
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

    def _request_replay(self, start: int, deadline: float | None) -> Iterator[tuple[int, bytes]]:
        """The replay answer from `start`; the whole answer must arrive within `replay_timeout_ms` and before
        `deadline`, or it is cut short (a peer that never sends the end marker cannot hold us)."""
        assert self._replay is not None
        self.replay_requests += 1
        self._replay_answered = False
        self._replay.send_multipart([b"", pack_seq(start)])
        until = time.monotonic() + self.replay_timeout_ms / 1000
        if deadline is not None:
            until = min(until, deadline)
        while True:
            wait_ms = max(0, math.ceil((until - time.monotonic()) * 1000))
            if not wait_ms or not self._replay.poll(wait_ms, zmq.POLLIN):
                self.errors.append(
                    f"replay from {start}: no answer (or no end marker) within {self.replay_timeout_ms} ms"
                )
                # Late answers to this request must not be read as answers to the next one.
                self._replay.close(linger=0)
                self._replay = self._open_replay()
                return
            frames = self._replay.recv_multipart()
            self._replay_answered = True
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

    _replay_answered = False

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
            batch = decode(payload)
        except WireError as exc:
            self.decode_errors += 1
            self.errors.append(f"seq {seq}: cannot decode batch: {exc}")
            self._give_up(seq, seq)
            return 0
        if batch.seq is not None and batch.seq != seq:
            self.errors.append(f"seq {seq}: batch says seq {batch.seq}; using the frame's")
        self._recent[seq] = zlib.crc32(payload)
        if len(self._recent) > RECENT_SEQS:
            self._recent.popitem(last=False)
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
            "bind": self.bind,
            "replay_endpoint": self.replay_endpoint,
            "topic": self.topic.decode("utf-8", "replace"),
            "worker": self.worker,
            "encoding": self.index.encoding(self.worker),
            "encodings": dict(state.encodings),
            "received": self.received,
            "batches": self.batches,
            "replayed": self.replayed,
            "replay_requests": self.replay_requests,
            "duplicates": self.duplicates,
            "decode_errors": self.decode_errors,
            "restarts": self.restarts,
            "implausible_seqs": self.implausible,
            "joined_late": self.joined_late,
            "other_topics": self.other_topics,
            "first_seen_seq": self.first_seen_seq,
            "last_seq": self.seq,
            "events": dict(state.events),
            "blocks_stored": state.blocks_stored,
            "blocks_removed": state.blocks_removed,
            "removed_unknown": state.removed_unknown,
            "hashes_cached": len(state.blocks),
            "metrics": msgspec.to_builtins(state.metrics) if state.metrics is not None else None,
            "metrics_unit": state.metrics_unit,
            "metrics_source": state.metrics_source,
            "load": self.load.summary() if self.load is not None else None,
            "unrecoverable": [list(gap) for gap in self.unrecoverable],
            "stale": state.stale,
            "errors": list(self.errors),
        }
