"""The plugin's load-metrics publisher (toolkit/serving/plugin/dynamo_base_plugin/publisher.py) on a real ZMQ PUB
socket, followed by a SUB over TCP loopback: the frames of every message are those of the wire contract
(docs/plugin.md, "The message"), byte for byte what `encode_message` makes, one message per `send`; `offer` sends a
step's figures only when they changed (or `repeat_s` passed since the last send)."""

from __future__ import annotations

import time

import msgspec
import pytest
import zmq

from toolkit.serving.plugin.dynamo_base_plugin.publisher import REPEAT_S, LoadPublisher, encode_message, repeat_seconds

FIGURES = {
    "num_running": 3,
    "num_waiting": 70000,  # a uint32 in msgpack: the variable-width ints are encoded as the encoder does
    "kv_cache_usage": 0.25,
    "prefix_cache_queries": 2**40,
    "prefix_cache_hits": 0,
    "prefix_cache_hit_rate": 0.0,
    "prefix_cache_unit": "tokens",
}


def test_every_send_is_one_three_frame_message_as_the_contract_says() -> None:
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVTIMEO, 5000)
    sub.setsockopt(zmq.LINGER, 0)
    publisher = LoadPublisher("tcp://127.0.0.1:*", topic="load")
    try:
        sub.connect(publisher.socket.getsockopt_string(zmq.LAST_ENDPOINT))
        for _attempt in range(200):  # a PUB drops what it sends before the subscription arrives: probe until one lands
            publisher.send(5, FIGURES)
            if sub.poll(25):
                break
        first = sub.recv_multipart()
        probes = int.from_bytes(first[1], "big")
        sent = [publisher.send(5, {**FIGURES, "num_running": k}) for k in range(4)]
        got = [sub.recv_multipart() for _ in sent]
    finally:
        publisher.close()
        sub.close()
        context.term()
    assert sent == [probes + 1 + k for k in range(4)]  # numbered on from the probes, one per send
    for k, (seq, frames) in enumerate(zip(sent, got, strict=True)):
        topic, seq_frame, payload = frames
        assert topic == b"load"
        assert seq_frame == seq.to_bytes(8, "big")
        message = msgspec.msgpack.decode(payload)
        assert list(message) == ["type", "ts", "seq", "step", "engine_index", *FIGURES, "source"]
        assert message["step"] == seq  # send() without a step: every step sent
        assert payload == encode_message(seq, 5, {**FIGURES, "num_running": k}, ts=message["ts"])
    assert publisher.socket.closed


def connected_pair(repeat_s: float) -> tuple[zmq.Context, zmq.Socket, LoadPublisher]:
    """A publisher and a SUB that has seen its probe messages; the probes drained."""
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVTIMEO, 5000)
    sub.setsockopt(zmq.LINGER, 0)
    publisher = LoadPublisher("tcp://127.0.0.1:*", repeat_s=repeat_s)
    sub.connect(publisher.socket.getsockopt_string(zmq.LAST_ENDPOINT))
    for _attempt in range(200):
        publisher.send(0, FIGURES)
        if sub.poll(25):
            break
    while sub.poll(100):
        sub.recv_multipart()
    return context, sub, publisher


def received(sub: zmq.Socket) -> list[dict]:
    """Every message that arrives until the marker (`num_running` -1) does."""
    out = []
    while True:
        message = msgspec.msgpack.decode(sub.recv_multipart()[2])
        if message["num_running"] == -1:
            return out
        out.append(message)


def test_offer_sends_the_steps_that_changed_the_figures_numbered_by_message_and_step() -> None:
    context, sub, publisher = connected_pair(repeat_s=3600.0)
    try:
        first = publisher.seq
        running = [2, 2, 2, 3, 3, 2, 2, 2]
        sent = [publisher.offer(1, step, {**FIGURES, "num_running": n}) for step, n in enumerate(running)]
        publisher.send(1, {**FIGURES, "num_running": -1})
        got = received(sub)
    finally:
        publisher.close()
        sub.close()
        context.term()
    assert sent == [first, None, None, first + 1, None, first + 2, None, None]
    assert [(m["seq"], m["step"], m["num_running"]) for m in got] == [
        (first, 0, 2),
        (first + 1, 3, 3),
        (first + 2, 5, 2),
    ]
    assert publisher.unchanged == 5


def test_unchanged_figures_go_out_again_once_repeat_s_has_passed_and_every_step_with_zero() -> None:
    context, sub, publisher = connected_pair(repeat_s=0.05)
    try:
        assert publisher.offer(0, 0, FIGURES) is not None
        assert publisher.offer(0, 1, FIGURES) is None
        time.sleep(0.1)  # past repeat_s: the unchanged figures are due again
        assert publisher.offer(0, 2, FIGURES) is not None
        publisher.repeat_s = 0.0
        assert publisher.offer(0, 3, FIGURES) is not None and publisher.offer(0, 4, FIGURES) is not None
        publisher.send(0, {**FIGURES, "num_running": -1})
        got = received(sub)
    finally:
        publisher.close()
        sub.close()
        context.term()
    assert [m["step"] for m in got] == [0, 2, 3, 4]


def test_the_repeat_setting_is_seconds_at_least_zero_and_defaults_when_unset() -> None:
    assert repeat_seconds("") == repeat_seconds("  ") == REPEAT_S
    assert repeat_seconds("0") == 0.0 and repeat_seconds("2.5") == 2.5
    for bad in ("-1", "nan", "soon"):
        with pytest.raises(ValueError, match=rf"DYNAMO_LOAD_METRICS_REPEAT_S='{bad}': expected seconds >= 0"):
            repeat_seconds(bad)
