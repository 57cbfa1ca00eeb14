"""The load-metrics message and its PUB socket (the wire contract is docs/plugin.md, "The message").

Runs INSIDE a vLLM venv (see the package docstring); msgspec and pyzmq are vLLM's own dependencies.
Frames are those of KV-event streams: `[topic, seq as 8-byte big-endian unsigned, payload]`; the payload
is a msgpack map tagged `"type": "LoadMetrics"`, so a consumer can never mistake it for a KV-event batch.
Sending never blocks the caller: a PUB socket drops at its high-water mark, and `NOBLOCK` covers the rest.
"""

from __future__ import annotations

import struct
import time
from typing import Any

import msgspec
import zmq

MESSAGE_TYPE = "LoadMetrics"
SOURCE = "dynamo-base-plugin"
SEND_HWM = 10_000


def encode_message(seq: int, engine_index: int, figures: dict[str, Any], *, ts: float | None = None) -> bytes:
    return msgspec.msgpack.encode(
        {
            "type": MESSAGE_TYPE,
            "ts": time.time() if ts is None else ts,
            "seq": seq,
            "engine_index": engine_index,
            **figures,
            "source": SOURCE,
        }
    )


def endpoint_for_engine(endpoint: str, engine_index: int) -> str:
    """Engine N of a data-parallel frontend binds the TCP port + N (what vLLM does with its KV-event port)."""
    if not engine_index or not endpoint.startswith("tcp://"):
        return endpoint if not engine_index else f"{endpoint}-{engine_index}"
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"load-metrics endpoint {endpoint!r} has no port")
    return f"{host}:{int(port) + engine_index}"


class LoadPublisher:
    """A bound PUB socket; one message per `send`, numbered from 0."""

    def __init__(self, endpoint: str, topic: str = "") -> None:
        self.endpoint = endpoint
        self.topic = topic.encode()
        self.seq = 0
        self.dropped = 0
        self.socket: zmq.Socket = zmq.Context.instance().socket(zmq.PUB)
        try:
            self.socket.setsockopt(zmq.LINGER, 0)
            self.socket.setsockopt(zmq.SNDHWM, SEND_HWM)
            self.socket.bind(endpoint)
        except BaseException:
            self.socket.close(linger=0)
            raise

    def send(self, engine_index: int, figures: dict[str, Any]) -> int:
        seq = self.seq
        self.seq += 1
        payload = encode_message(seq, engine_index, figures)
        try:
            self.socket.send_multipart([self.topic, struct.pack(">Q", seq), payload], flags=zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1  # the seq stays taken: the consumer sees the gap
        return seq

    def close(self) -> None:
        if not self.socket.closed:
            self.socket.close(linger=0)
