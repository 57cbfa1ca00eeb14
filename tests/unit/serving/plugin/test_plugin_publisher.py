"""The plugin's load-metrics publisher (toolkit/serving/plugin/dynamo_base_plugin/publisher.py) on a real ZMQ PUB
socket, followed by a SUB over TCP loopback: the frames of every message are those of the wire contract
(docs/plugin.md, "The message"), byte for byte what `encode_message` makes, one message per `send`."""

from __future__ import annotations

import msgspec
import zmq

from toolkit.serving.plugin.dynamo_base_plugin.publisher import LoadPublisher, encode_message

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
        assert list(message) == ["type", "ts", "seq", "engine_index", *FIGURES, "source"]
        assert payload == encode_message(seq, 5, {**FIGURES, "num_running": k}, ts=message["ts"])
    assert publisher.socket.closed
