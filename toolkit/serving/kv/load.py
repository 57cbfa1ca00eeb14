"""Load metrics from the dynamo-base plugin (stock vLLM + plugin): the message, and `LoadSubscriber`.

Stock vLLM publishes KV-cache events but no load figures; the plugin (toolkit/serving/plugin/, docs/plugin.md)
publishes them on an endpoint of their own, a `LoadMetrics` message for every engine step that changed them
(and again after a second of unchanged steps): frames `[topic, seq (8-byte big-endian), payload]`, the payload a
msgpack map `{"type": "LoadMetrics", "ts", "seq", "step", "engine_index", "num_running", "num_waiting",
"kv_cache_usage", "prefix_cache_queries", "prefix_cache_hits", "prefix_cache_hit_rate", "prefix_cache_unit",
"source"}` (unknown keys ignored, so later plugin versions may add fields; a plugin before `step` sent every
step, so its seq was the step).

A router follows both endpoints of a worker under one name: the KV events with `Subscriber`, the load with
`LoadSubscriber` (or `Subscriber(..., metrics_endpoint=...)`, which opens one itself); the figures land in
the same `KVIndex` worker state as dynamo-base's per-batch metrics (`KVIndex.set_metrics`), so `Router`
weighs them the same way. The figures are snapshots: the newest message wins; a seq that goes back means
the engine restarted (counted) and is followed; seqs skipped are counted as `missed`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import zmq

from toolkit.serving.kv.index import KVIndex
from toolkit.serving.kv.wire import Metrics, WireError, unpack_seq

PLUGIN_LOAD = "plugin-load-metrics"
"""The encoding name of the plugin's load messages (what `KVIndex` records as the metrics' source)."""


class _LoadMessage(Metrics, tag_field="type", tag="LoadMetrics"):
    """The plugin's message: dynamo-base's figures (a map, so field order does not matter) and its own."""

    ts: float
    seq: int
    step: int | None = None  # which SchedulerStats of the engine (from 0) the figures are
    engine_index: int = 0
    prefix_cache_unit: str = "tokens"
    source: str = ""


_load_decoder = msgspec.msgpack.Decoder(_LoadMessage)


@dataclass(frozen=True, slots=True)
class LoadReport:
    ts: float
    seq: int
    engine_index: int
    metrics: Metrics
    unit: str  # what prefix_cache_queries/hits count: "tokens" (the plugin) or "blocks" (dynamo-base)
    source: str
    step: int  # which SchedulerStats of the engine (from 0) the figures are; = seq from a plugin without it


def decode_load(data: bytes) -> LoadReport:
    """Decode one plugin payload; raises `WireError` (only) when it is not a `LoadMetrics` message."""
    try:
        message = _load_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise WireError(str(exc)) from None
    except RecursionError:
        raise WireError("nesting too deep to decode") from None
    metrics = Metrics(
        num_running=message.num_running,
        num_waiting=message.num_waiting,
        kv_cache_usage=message.kv_cache_usage,
        prefix_cache_queries=message.prefix_cache_queries,
        prefix_cache_hits=message.prefix_cache_hits,
        prefix_cache_hit_rate=message.prefix_cache_hit_rate,
    )
    step = message.seq if message.step is None else message.step
    return LoadReport(
        message.ts, message.seq, message.engine_index, metrics, message.prefix_cache_unit, message.source, step
    )


class Follower:
    """What a subscriber of one worker's stream holds: the endpoint it follows (SUB; `bind=True` binds it
    instead), its topic, and the worker it feeds in `index` (a fresh KVIndex when none is given)."""

    errors: deque[str]  # the latest problems, newest last
    other_topics: int  # messages on a topic not ours

    def follow(self, endpoint: str, topic: bytes, worker: str, index: KVIndex | None, bind: bool) -> None:
        self.endpoint = endpoint
        self.topic = topic
        self.worker = worker
        self.bind = bind
        self.index = index if index is not None else KVIndex()
        self.index.add_worker(worker)

    def our_message(self, frames: list[bytes], stream: str) -> tuple[bytes, bytes] | None:
        """(seq frame, payload) of a `[topic, seq, payload]` message on our topic; else None, the message counted
        in `other_topics` (another topic) or named in `errors` (another number of frames)."""
        if len(frames) != 3:
            self.errors.append(f"{stream} message with {len(frames)} frames, expected 3")
            return None
        topic, seq_frame, payload = frames
        if topic != self.topic:
            self.other_topics += 1
            return None
        return seq_frame, payload


def open_sub(context: zmq.Context, endpoint: str, topic: bytes, *, bind: bool, hwm: int | None = None) -> zmq.Socket:
    """A SUB socket on `endpoint` subscribed to `topic` (connected, or bound with `bind`); closed again when
    it cannot be."""
    socket = context.socket(zmq.SUB)
    try:
        socket.setsockopt(zmq.LINGER, 0)
        if hwm is not None:
            socket.setsockopt(zmq.RCVHWM, hwm)
        socket.setsockopt(zmq.SUBSCRIBE, topic)
        (socket.bind if bind else socket.connect)(endpoint)
    except BaseException:
        socket.close(linger=0)
        raise
    return socket


class LoadSubscriber(Follower):
    """Follow one plugin load endpoint (SUB; `bind=True` binds it instead) into `index` under `worker`."""

    def __init__(
        self,
        endpoint: str,
        topic: bytes = b"",
        worker: str = "w0",
        *,
        index: KVIndex | None = None,
        context: zmq.Context | None = None,
        bind: bool = False,
        on_report: Callable[[LoadReport], None] | None = None,
    ) -> None:
        self.follow(endpoint, topic, worker, index, bind)
        self.on_report = on_report
        self.received = 0
        self.applied = 0
        self.missed = 0
        self.restarts = 0
        self.decode_errors = 0
        self.other_topics = 0
        self.last: LoadReport | None = None
        self.errors: deque[str] = deque(maxlen=100)
        self._next_seq: int | None = None
        self.socket = open_sub(context or zmq.Context.instance(), endpoint, topic, bind=bind)

    def __enter__(self) -> LoadSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self.socket.closed:
            self.socket.close(linger=0)

    def poll(self, timeout_ms: float = 0, *, max_messages: int = 10_000) -> int:
        """Wait up to `timeout_ms` for messages, handle those available; return how many were applied."""
        if not self.socket.poll(max(0, math.ceil(timeout_ms)), zmq.POLLIN):
            return 0
        return self.drain(max_messages)

    def drain(self, max_messages: int = 10_000) -> int:
        """Handle the messages already queued, without waiting."""
        applied = 0
        for _ in range(max_messages):
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            applied += self._on_message(frames)
        return applied

    def _on_message(self, frames: list[bytes]) -> int:
        if (message := self.our_message(frames, "load")) is None:
            return 0
        seq_frame, payload = message
        self.received += 1
        try:
            seq = unpack_seq(seq_frame)
            report = decode_load(payload)
        except (ValueError, WireError) as exc:  # WireError is a ValueError
            self.decode_errors += 1
            self.errors.append(f"load: cannot decode message: {exc}")
            return 0
        if self._next_seq is not None and seq < self._next_seq:
            self.restarts += 1
            self.errors.append(f"load seq went back from {self._next_seq - 1} to {seq}: engine restarted")
        elif self._next_seq is not None:
            self.missed += seq - self._next_seq
        self._next_seq = seq + 1
        self.index.set_metrics(self.worker, report.metrics, report.ts, unit=report.unit, source=PLUGIN_LOAD)
        self.last = report
        self.applied += 1
        if self.on_report is not None:
            self.on_report(report)
        return 1

    def summary(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "bind": self.bind,
            "received": self.received,
            "applied": self.applied,
            "missed": self.missed,
            "restarts": self.restarts,
            "decode_errors": self.decode_errors,
            "last_seq": self.last.seq if self.last is not None else None,
            "source": self.last.source if self.last is not None else None,
            "errors": list(self.errors),
        }
