"""KV-event batches sent on the caller's thread, upstream's wire, replay served by a thread that sleeps until asked.

Runs INSIDE a vLLM venv (see the package docstring) but imports nothing from vLLM: `event_publisher.py` wraps it
in vLLM's `EventPublisher` interface. msgspec and pyzmq are vLLM's own dependencies.

The wire is that of vLLM's `ZmqEventPublisher` (vllm/distributed/kv_events.py, 0.9.0 to 0.32.0):

- PUB: one message per batch, frames `[topic, seq as 8-byte big-endian unsigned, msgpack payload]`, seq counted
  from 0; the payload is what `msgspec.msgpack.Encoder().encode(batch)` makes of the release's `KVEventBatch`.
- Replay (ROUTER, when a replay endpoint is given): a request is `[identity, b"", start seq as 8 bytes]` (a DEALER
  or REQ client sends the empty delimiter and the seq); the answer is every buffered batch with seq >= start, in
  order, then the end marker whose seq frame is -1 as 8 signed big-endian bytes (`ff` x 8). A request of another
  shape is logged and dropped, as upstream does. Up to vLLM 0.22.1 a replayed batch is `[identity, b"", seq,
  payload]` and the marker `[identity, b"", END, b""]`; 0.32.0 puts the topic in front: `[identity, b"", topic,
  seq, payload]`, marker `[identity, b"", b"", END, b""]`. `replay_topic` selects the layout (event_publisher.py
  reads it from the release's own `_service_replay`).
- `buffer_steps` bounds the replay buffer (the last N batches), `hwm` is the PUB socket's high-water mark: a PUB
  socket drops at its HWM instead of blocking, and every frame goes out with NOBLOCK, so `send` never waits for a
  subscriber (a dropped batch keeps its seq: the consumer sees the gap, and replay still has the batch). A batch
  that cannot be encoded is logged and skipped, its seq taken, as upstream's thread does: publishing never raises
  into the engine's step.

Thread-safety. vLLM's publisher hands each batch to a Python thread, which then wakes once per published step and
takes the GIL from the engine thread (bench/README.md, "where the engine thread's extra goes"). Here:

- the PUB socket is used only by the thread that calls `send` (the engine thread: vLLM's scheduler calls
  `publish` once per step, always from the same thread); `close` comes after the last `send` (vLLM's shutdown);
- the ROUTER socket is used only by the replay thread, which blocks in `zmq.Poller.poll` without a timeout on it
  and on an inproc PAIR socket (`_stop_rx`), so it runs only when a replay request or the stop message arrives,
  never per step; it is created on the constructing thread and handed over before the thread starts
  (`Thread.start` is the memory barrier ZMQ asks for when a socket changes threads), and closed by that thread;
- the stop PAIR's sending end is used only by `close`;
- the replay buffer, the one object both threads touch, is guarded by `_lock`: the engine thread holds it for one
  `deque.append`, the replay thread for one copy of the batches to send, and sends them after releasing it, so a
  long replay never holds up a step.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from itertools import count
from types import MethodType
from typing import Any

import msgspec
import zmq

logger = logging.getLogger("dynamo_base_plugin")

END_SEQ = (-1).to_bytes(8, "big", signed=True)  # upstream's ZmqEventPublisher.END_SEQ
_MORE = zmq.SNDMORE | zmq.NOBLOCK
JOIN_TIMEOUT_S = 1.0  # upstream's SHUTDOWN_TIMEOUT


class InlineSender:
    """The PUB socket `pub` (bound or connected by the caller), a replay buffer and, with `replay`, its thread."""

    def __init__(
        self,
        pub: zmq.Socket,
        replay: zmq.Socket | None = None,
        *,
        topic: str = "",
        buffer_steps: int = 10_000,
        replay_topic: bool = True,
    ) -> None:
        self.pub = pub
        self.replay = replay
        self.topic = topic.encode("utf-8")
        self.replay_topic = replay_topic
        self.dropped = 0  # batches the PUB socket refused (NOBLOCK): their seq stays taken
        self.failed = 0  # batches that could not be encoded or sent (logged): their seq stays taken too
        self._seqs = count()
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer_steps)
        self._lock = threading.Lock()
        self._closed = False
        # the compiled backend's send of this socket, bound once (what publisher.LoadPublisher does: pyzmq's
        # send_multipart type-checks each frame and goes through its sugar class's Python send)
        self._send: Callable[[bytes, int], Any] = MethodType(zmq.backend.Socket.send, pub)
        self._encode: Callable[[Any], bytes] = msgspec.msgpack.Encoder().encode
        self._thread: threading.Thread | None = None
        self._stop_tx: zmq.Socket | None = None
        if replay is not None:
            context = pub.context
            address = f"inproc://dynamo-base-plugin-replay-stop-{id(self):x}"
            self._stop_rx: zmq.Socket = context.socket(zmq.PAIR)
            self._stop_rx.bind(address)
            self._stop_tx = context.socket(zmq.PAIR)
            self._stop_tx.connect(address)
            self._thread = threading.Thread(target=self._serve, name="dynamo-kv-replay", daemon=True)
            self._thread.start()

    def send(self, batch: Any) -> int:
        """Encode `batch` and send it now, on this thread, without blocking; its seq. Never raises for a batch:
        one that cannot be encoded (vLLM 0.9.0's sha256 block hashes overflow msgpack) or sent is logged and lost
        with its seq taken, as upstream's publisher thread does, and the engine goes on."""
        seq = next(self._seqs)
        try:
            payload = self._encode(batch)
        except Exception:
            self.failed += 1
            logger.exception("dynamo-base plugin: KV-event batch %d cannot be encoded; not published", seq)
            return seq
        send = self._send
        try:
            send(self.topic, _MORE)
            send(seq.to_bytes(8, "big"), _MORE)
            send(payload, zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
        except Exception:
            self.failed += 1
            logger.exception("dynamo-base plugin: KV-event batch %d not sent", seq)
        if self.replay is not None:
            with self._lock:
                self._buffer.append((seq, payload))
        return seq

    def buffered(self, start: int = 0) -> list[tuple[int, bytes]]:
        """The buffered batches with seq >= `start`, oldest first (a copy, taken under the lock)."""
        with self._lock:
            return [entry for entry in self._buffer if entry[0] >= start]

    def close(self) -> None:
        """Stop and join the replay thread (it closes the ROUTER), then close the PUB socket. Idempotent."""
        if self._closed:
            return
        self._closed = True
        thread, stop = self._thread, self._stop_tx
        if thread is not None and stop is not None:
            with contextlib.suppress(zmq.ZMQError):  # an inproc PAIR: refuses only when the thread is gone
                stop.send(b"", zmq.NOBLOCK)
            thread.join(timeout=JOIN_TIMEOUT_S)
            stop.close(linger=0)
            if thread.is_alive():
                logger.warning("dynamo-base plugin: the KV-event replay thread did not stop in %ss", JOIN_TIMEOUT_S)
        self.pub.close(linger=0)

    def _serve(self) -> None:
        replay = self.replay
        assert replay is not None
        poller = zmq.Poller()
        poller.register(replay, zmq.POLLIN)
        poller.register(self._stop_rx, zmq.POLLIN)
        try:
            while True:
                ready = dict(poller.poll())
                if self._stop_rx in ready:
                    return
                if replay in ready:
                    try:
                        self._answer(replay)
                    except Exception:  # as upstream: a bad request never ends the replay service
                        logger.exception("dynamo-base plugin: error in KV-event replay")
        finally:
            replay.close(linger=0)
            self._stop_rx.close(linger=0)

    def _answer(self, replay: zmq.Socket) -> None:
        frames = replay.recv_multipart()
        if len(frames) != 3:
            logger.warning("Invalid replay request: %s", frames)
            return
        client, _, start = frames
        head = (client, b"", self.topic) if self.replay_topic else (client, b"")
        for seq, payload in self.buffered(int.from_bytes(start, "big")):
            replay.send_multipart((*head, seq.to_bytes(8, "big"), payload))
        end_head = (client, b"", b"") if self.replay_topic else (client, b"")
        replay.send_multipart((*end_head, END_SEQ, b""))
