"""The load-metrics message and its PUB socket (the wire contract is docs/plugin.md, "The message").

Runs INSIDE a vLLM venv (see the package docstring); msgspec and pyzmq are vLLM's own dependencies.
Frames are those of KV-event streams: `[topic, seq as 8-byte big-endian unsigned, payload]`; the payload
is a msgpack map tagged `"type": "LoadMetrics"`, so a consumer can never mistake it for a KV-event batch.
Sending never blocks the caller: a PUB socket drops at its high-water mark, and `NOBLOCK` covers the rest.

`offer()` sends a step's figures only when they differ from the last ones sent, or when `repeat_s` has passed
since that send: a step that changed nothing costs a dict comparison instead of a ZMQ message (on a loaded
2-vCPU machine ~35 µs on the sending thread and ~55 µs on libzmq's I/O thread, bench/README.md). A router so
holds every step's figures as soon as that step is recorded; `seq` numbers the messages, `step` tells which
SchedulerStats (counted from 0) a message carries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import MethodType
from typing import Any

import msgspec
import zmq

from . import REPEAT_ENV

MESSAGE_TYPE = "LoadMetrics"
SOURCE = "dynamo-base-plugin"
SEND_HWM = 10_000
REPEAT_S = 1.0  # unchanged figures are sent again after this long (while steps are recorded): a liveness bound
_MORE = zmq.SNDMORE | zmq.NOBLOCK
_ENCODER = msgspec.msgpack.Encoder()


def encode_message(
    seq: int, engine_index: int, figures: dict[str, Any], *, step: int | None = None, ts: float | None = None
) -> bytes:
    """The payload of message `seq` (what `LoadPublisher.send` sends, which builds the same map inline); `step`
    defaults to `seq` (every step sent)."""
    return _ENCODER.encode(
        {
            "type": MESSAGE_TYPE,
            "ts": time.time() if ts is None else ts,
            "seq": seq,
            "step": seq if step is None else step,
            "engine_index": engine_index,
            **figures,
            "source": SOURCE,
        }
    )


def repeat_seconds(text: str) -> float:
    """DYNAMO_LOAD_METRICS_REPEAT_S: seconds after which unchanged figures are sent again (0: every step)."""
    if not text.strip():
        return REPEAT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0.0:  # also NaN
        raise ValueError(f"{REPEAT_ENV}={text!r}: expected seconds >= 0")
    return seconds


def endpoint_for_engine(endpoint: str, engine_index: int) -> str:
    """Engine N of a data-parallel frontend binds the TCP port + N (what vLLM does with its KV-event port)."""
    if not engine_index or not endpoint.startswith("tcp://"):
        return endpoint if not engine_index else f"{endpoint}-{engine_index}"
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"load-metrics endpoint {endpoint!r} has no port")
    return f"{host}:{int(port) + engine_index}"


class LoadPublisher:
    """A bound PUB socket; one message per `send`, numbered from 0; `offer` sends only what changed."""

    def __init__(self, endpoint: str, topic: str = "", repeat_s: float = REPEAT_S) -> None:
        self.endpoint = endpoint
        self.topic = topic.encode()
        self.repeat_s = repeat_s
        self.seq = 0
        self.dropped = 0
        self.unchanged = 0  # steps offered whose figures were not sent again
        self._last: dict[str, Any] | None = None  # the figures of the last message that went out
        self._last_ts = 0.0
        self.socket: zmq.Socket = zmq.Context.instance().socket(zmq.PUB)
        try:
            self.socket.setsockopt(zmq.LINGER, 0)
            self.socket.setsockopt(zmq.SNDHWM, SEND_HWM)
            self.socket.bind(endpoint)
        except BaseException:
            self.socket.close(linger=0)
            raise
        # the compiled backend's send of this socket (pyzmq's sugar `zmq.Socket` subclasses it; its `send` ends in it)
        self._send_frame: Callable[[bytes, int], Any] = MethodType(zmq.backend.Socket.send, self.socket)
        self._encode: Callable[[Any], bytes] = _ENCODER.encode

    def offer(self, engine_index: int, step: int, figures: dict[str, Any]) -> int | None:
        """Send step `step`'s figures unless they equal the last ones sent less than `repeat_s` ago; the seq sent,
        or None. A message the socket dropped does not count as sent: the next step offers its figures again."""
        now = time.time()
        if figures == self._last and 0.0 <= now - self._last_ts < self.repeat_s:
            self.unchanged += 1
            return None
        dropped = self.dropped
        seq = self.send(engine_index, figures, step=step, ts=now)
        if self.dropped == dropped:
            self._last, self._last_ts = figures, now
        return seq

    def send(
        self, engine_index: int, figures: dict[str, Any], *, step: int | None = None, ts: float | None = None
    ) -> int:
        """Send one message now (`step` defaults to its seq); its seq."""
        # Once per engine step that changed the figures, on the thread that records vLLM's stats, right after a
        # forward pass that evicted this code from the caches: each Python call here is paid cold (bench/README.md,
        # the per-step rows). So the three frames go straight to the compiled socket's `send` (pyzmq's
        # `send_multipart` type-checks them and passes each through its sugar class's Python `send`: the same
        # libzmq calls, 49-52 µs cold against 36-39 µs direct), and the encoder is bound once.
        seq = self.seq
        self.seq = seq + 1
        payload = self._encode(
            {
                "type": MESSAGE_TYPE,
                "ts": time.time() if ts is None else ts,
                "seq": seq,
                "step": seq if step is None else step,
                "engine_index": engine_index,
                **figures,
                "source": SOURCE,
            }
        )
        send = self._send_frame
        try:
            send(self.topic, _MORE)
            send(seq.to_bytes(8, "big"), _MORE)
            send(payload, zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1  # the seq stays taken: the consumer sees the gap
        return seq

    def close(self) -> None:
        if not self.socket.closed:
            self.socket.close(linger=0)
