"""toolkit.serving.kv against a fake engine that speaks the docs/kv-events.md wire contract over real ZMQ sockets."""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator

import msgspec
import pytest
import zmq

from toolkit.cli import main as vpatch_main
from toolkit.serving.kv.hashes import VLLM_084_NONE_HASH, Vllm084BlockHasher, pickle_sha256
from toolkit.serving.kv.index import KVIndex
from toolkit.serving.kv.router import Router
from toolkit.serving.kv.subscriber import Subscriber
from toolkit.serving.kv.wire import (
    END_OF_REPLAY,
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EventBatch,
    Metrics,
    decode_batch,
    encode_batch,
    pack_seq,
    unpack_seq,
)

TIMEOUT = 5.0
BLOCK = 4
_names = itertools.count()


class FakeEngine:
    """Plays the patched engine's part of the contract.

    - stream: `[topic, seq (8-byte big-endian), EventBatch]` on a socket bound at `endpoint`; seq starts at 0
      and grows by one per step, whether the batch is sent or not;
    - replay: a ROUTER at `replay_endpoint` answers `[b"", start]` with `[b"", seq, batch]` for every buffered
      batch with seq >= start, in order, then `[b"", b"\\xff" * 8, b""]`; the buffer keeps `buffer_steps`.

    The stream socket is an XPUB, which sends exactly what a PUB sends but also reports subscriptions, so tests
    can wait for a subscriber instead of sleeping. One background thread owns the sockets (as in the engine);
    the test thread talks to it over an inproc PAIR.
    """

    def __init__(self, *, topic: bytes = b"", buffer_steps: int = 100, replay: bool = True) -> None:
        self.topic = topic
        self.seq = 0
        self.buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer_steps)
        self.subscriptions = 0
        self._cond = threading.Condition()
        ctx = zmq.Context.instance()
        self.pub = ctx.socket(zmq.XPUB)
        self.pub.linger = 0
        self.pub.bind("tcp://127.0.0.1:*")
        self.endpoint = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.router = None
        self.replay_endpoint = None
        if replay:
            self.router = ctx.socket(zmq.ROUTER)
            self.router.linger = 0
            self.router.bind("tcp://127.0.0.1:*")
            self.replay_endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        address = f"inproc://fake-engine-{next(_names)}"
        self._worker_end = ctx.socket(zmq.PAIR)
        self._worker_end.bind(address)
        self._control = ctx.socket(zmq.PAIR)
        self._control.linger = 0
        self._control.connect(address)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    # -- test side

    def step(self, events: list, metrics: Metrics | None = None, *, send: bool = True, keep: bool = True) -> int:
        """One engine step: assign the next seq; `send=False` loses it on the stream, `keep=False` keeps it out
        of the replay buffer (both false: dropped because the queue was full)."""
        seq = self.seq
        self.seq += 1
        payload = encode_batch(EventBatch(ts=time.time(), seq=seq, events=events, metrics=metrics))
        flags = (b"1" if send else b"0") + (b"1" if keep else b"0")
        self._control.send_multipart([b"step", pack_seq(seq), payload, flags])
        return seq

    def send_raw(self, frames: list[bytes]) -> None:
        """Put arbitrary frames on the stream socket (another publisher's message, say)."""
        self._control.send_multipart([b"raw", *frames])

    def resend(self, seq: int) -> None:
        """Send an already buffered batch on the stream again (a duplicate)."""
        self._control.send_multipart([b"resend", pack_seq(seq)])

    def sync(self) -> None:
        """Wait until the sender thread has handled every command sent so far."""
        self._control.send_multipart([b"sync"])
        assert self._control.poll(TIMEOUT * 1000), "fake engine thread did not answer"
        assert self._control.recv() == b"ok"

    def wait_subscribed(self, count: int = 1) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.subscriptions >= count, TIMEOUT), "no subscriber attached"

    def close(self) -> None:
        self._control.send_multipart([b"stop"])
        self._thread.join(TIMEOUT)
        for sock in (self._control, self._worker_end, self.pub, self.router):
            if sock is not None:
                sock.close(linger=0)

    # -- engine thread

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._worker_end, zmq.POLLIN)
        poller.register(self.pub, zmq.POLLIN)
        if self.router is not None:
            poller.register(self.router, zmq.POLLIN)
        while True:
            ready = dict(poller.poll(int(TIMEOUT * 1000)))
            if self.pub in ready:
                message = self.pub.recv()
                if message[:1] == b"\x01":
                    with self._cond:
                        self.subscriptions += 1
                        self._cond.notify_all()
            if self.router is not None and self.router in ready:
                identity, empty, start = self.router.recv_multipart()
                assert empty == b""
                first = unpack_seq(start)
                for seq, payload in list(self.buffer):
                    if seq >= first:
                        self.router.send_multipart([identity, b"", pack_seq(seq), payload])
                self.router.send_multipart([identity, b"", END_OF_REPLAY, b""])
            if self._worker_end in ready:
                command = self._worker_end.recv_multipart()
                if command[0] == b"stop":
                    return
                if command[0] == b"sync":
                    self._worker_end.send(b"ok")
                elif command[0] == b"step":
                    _, seq_frame, payload, flags = command
                    if flags[1:2] == b"1":
                        self.buffer.append((unpack_seq(seq_frame), payload))
                    if flags[:1] == b"1":
                        self.pub.send_multipart([self.topic, seq_frame, payload])
                elif command[0] == b"raw":
                    self.pub.send_multipart(command[1:])
                elif command[0] == b"resend":
                    wanted = unpack_seq(command[1])
                    payload = next(p for s, p in self.buffer if s == wanted)
                    self.pub.send_multipart([self.topic, command[1], payload])


@pytest.fixture
def engines() -> Iterator[list[FakeEngine]]:
    started: list[FakeEngine] = []
    yield started
    for engine in started:
        engine.close()


def start(engines: list[FakeEngine], **kwargs) -> FakeEngine:
    engine = FakeEngine(**kwargs)
    engines.append(engine)
    return engine


def tokens_of(block_hash: int) -> list[int]:
    return [block_hash * 10 + i for i in range(BLOCK)]


def stored(*hashes: int, parent: int | None = None) -> BlockStored:
    token_ids = [t for h in hashes for t in tokens_of(h)]
    return BlockStored(block_hashes=list(hashes), parent_block_hash=parent, token_ids=token_ids, block_size=BLOCK)


def removed(*hashes: int) -> BlockRemoved:
    return BlockRemoved(block_hashes=list(hashes))


def metrics(usage: float = 0.0, waiting: int = 0, running: int = 0) -> Metrics:
    return Metrics(
        num_running=running,
        num_waiting=waiting,
        kv_cache_usage=usage,
        prefix_cache_queries=10,
        prefix_cache_hits=4,
        prefix_cache_hit_rate=0.4,
    )


def subscribe(engine: FakeEngine, **kwargs) -> Subscriber:
    kwargs.setdefault("replay_endpoint", engine.replay_endpoint)
    kwargs.setdefault("topic", engine.topic)
    subscriber = Subscriber(engine.endpoint, **kwargs)
    engine.wait_subscribed()
    return subscriber


# --------------------------------------------------------------------------------------------- wire format


def test_wire_format_is_msgpack_maps_tagged_by_type() -> None:
    top = 2**64 - 1
    raw = msgspec.msgpack.encode(
        {
            "ts": 1700000000.5,
            "seq": 7,
            "events": [
                {
                    "type": "BlockStored",
                    "block_hashes": [top, 5],
                    "parent_block_hash": None,
                    "token_ids": list(range(8)),
                    "block_size": 4,
                    "lora_id": None,
                },
                {"type": "BlockRemoved", "block_hashes": [3]},
                {"type": "AllBlocksCleared"},
            ],
            "metrics": {
                "num_running": 2,
                "num_waiting": 1,
                "kv_cache_usage": 0.25,
                "prefix_cache_queries": 8,
                "prefix_cache_hits": 2,
                "prefix_cache_hit_rate": 0.25,
            },
        }
    )
    batch = decode_batch(raw)
    assert batch.seq == 7
    assert [type(e) for e in batch.events] == [BlockStored, BlockRemoved, AllBlocksCleared]
    assert batch.events[0].block_hashes == [top, 5]
    assert batch.metrics is not None and batch.metrics.kv_cache_usage == 0.25
    # and what encode_batch produces is that same plain structure
    plain = msgspec.msgpack.decode(encode_batch(batch))
    assert plain["events"][0]["type"] == "BlockStored"
    assert plain["events"][2] == {"type": "AllBlocksCleared"}
    assert plain["metrics"]["num_waiting"] == 1
    assert decode_batch(encode_batch(EventBatch(ts=1.0, seq=0, events=[], metrics=None))).metrics is None
    # an engine that forgot to reduce a (negative) builtin hash mod 2**64 is caught
    bad = msgspec.msgpack.encode({"ts": 1.0, "seq": 0, "events": [{"type": "BlockRemoved", "block_hashes": [-1]}]})
    with pytest.raises(msgspec.ValidationError):
        decode_batch(bad)
    with pytest.raises(msgspec.ValidationError):
        decode_batch(msgspec.msgpack.encode({"ts": 1.0, "seq": 0, "events": [{"type": "BlockEvicted"}]}))


# --------------------------------------------------------------------------------------------- subscriber


def test_in_order_stream_builds_the_index(engines: list[FakeEngine]) -> None:
    engine = start(engines)
    with subscribe(engine) as sub:
        engine.step([stored(1, 2, 3)], metrics(usage=0.1))
        engine.step([stored(4, parent=3), removed(2)], None)
        engine.step([removed(1)], metrics(usage=0.3, waiting=3))
        assert sub.drain(2, TIMEOUT)
        assert sub.index.hashes("w0") == {3, 4}
        assert sub.index.tokens("w0", 4) == tuple(tokens_of(4))
        assert sub.index.tokens("w0", 2) is None
        assert sub.index.metrics("w0") == metrics(usage=0.3, waiting=3)
        assert (sub.seq, sub.batches, sub.replay_requests, sub.duplicates) == (2, 3, 0, 0)
        assert sub.unrecoverable == [] and not sub.stale
        assert sub.index.state("w0").events == {"BlockStored": 2, "BlockRemoved": 2, "AllBlocksCleared": 0}


def test_only_the_exact_topic_is_used(engines: list[FakeEngine]) -> None:
    engine = start(engines, topic=b"kv")
    with subscribe(engine) as sub:
        engine.step([stored(1)])
        # another stream whose topic starts with b"kv": ZMQ delivers it (prefix match), its seq 5 is no gap here
        other = encode_batch(EventBatch(ts=0.0, seq=5, events=[stored(2)]))
        engine.send_raw([b"kv-other", pack_seq(5), other])
        engine.step([stored(3)])
        assert sub.drain(1, TIMEOUT)
        assert sub.other_topics == 1
        assert sub.index.hashes("w0") == {1, 3}
        assert sub.replay_requests == 0 and sub.unrecoverable == []


def test_dropped_message_is_filled_from_replay(engines: list[FakeEngine]) -> None:
    engine = start(engines)
    with subscribe(engine) as sub:
        engine.step([stored(1, 2)])
        engine.step([removed(1), stored(5)], send=False)  # lost on the stream, still in the replay buffer
        engine.step([stored(6, parent=5)])
        assert sub.drain(2, TIMEOUT)
        assert sub.index.hashes("w0") == {2, 5, 6}
        assert sub.replay_requests == 1 and sub.replayed >= 1
        assert sub.batches == 3  # seq 2 arrived by replay and on the stream, applied once
        assert sub.unrecoverable == [] and not sub.stale
        engine.step([stored(7)])
        assert sub.drain(3, TIMEOUT)
        assert sub.index.hashes("w0") == {2, 5, 6, 7}
        assert sub.replay_requests == 1


def test_late_joiner_catches_up_from_seq_0(engines: list[FakeEngine]) -> None:
    engine = start(engines)
    for h in range(4):
        engine.step([stored(10 + h)])  # nobody listens yet: gone from the stream, kept for replay
    engine.sync()
    with subscribe(engine) as sub:
        engine.step([removed(10)])
        assert sub.drain(4, TIMEOUT)
        assert sub.first_seen_seq == 4
        assert sub.index.hashes("w0") == {11, 12, 13}
        assert sub.unrecoverable == [] and not sub.stale
        assert sub.replay_requests == 1 and sub.batches == 5


def test_late_joiner_without_replay_is_stale(engines: list[FakeEngine]) -> None:
    engine = start(engines, replay=False)
    for h in range(4):
        engine.step([stored(10 + h)])
    engine.sync()
    with subscribe(engine) as sub:
        engine.step([stored(20)])
        assert sub.drain(4, TIMEOUT)
        assert sub.unrecoverable == [(0, 3)]
        assert sub.stale
        assert sub.index.hashes("w0") == {20}


def test_replay_buffer_too_small_records_an_unrecoverable_gap(engines: list[FakeEngine]) -> None:
    engine = start(engines, buffer_steps=2)
    with subscribe(engine) as sub:
        engine.step([stored(1)])
        engine.step([stored(2)], send=False)
        engine.step([stored(3)], send=False)
        engine.step([stored(4)], send=False)  # the buffer now holds seqs 3 and 4 only
        engine.step([stored(5)])
        assert sub.drain(4, TIMEOUT)
        assert sub.unrecoverable == [(1, 2)]
        assert sub.stale and sub.index.is_stale("w0")
        assert sub.index.hashes("w0") == {1, 4, 5}
        # a cache reset makes the set exact again
        engine.step([AllBlocksCleared(), stored(9)])
        assert sub.drain(5, TIMEOUT)
        assert sub.index.hashes("w0") == {9}
        assert not sub.stale


def test_batch_dropped_from_the_engine_queue_is_unrecoverable(engines: list[FakeEngine]) -> None:
    engine = start(engines)
    with subscribe(engine) as sub:
        engine.step([stored(1)])
        engine.step([stored(2)], send=False, keep=False)  # queue full: never sent, never buffered
        engine.step([stored(3)])
        assert sub.drain(2, TIMEOUT)
        assert sub.unrecoverable == [(1, 1)]
        assert sub.stale
        assert sub.index.hashes("w0") == {1, 3}


def test_replay_endpoint_that_never_answers(engines: list[FakeEngine]) -> None:
    engine = start(engines, replay=False)
    silent = zmq.Context.instance().socket(zmq.ROUTER)
    silent.linger = 0
    silent.bind("tcp://127.0.0.1:*")
    try:
        endpoint = silent.getsockopt_string(zmq.LAST_ENDPOINT)
        with subscribe(engine, replay_endpoint=endpoint, replay_timeout_ms=200) as sub:
            engine.step([stored(1)])
            engine.step([stored(2)], send=False)
            engine.step([stored(3)])
            assert sub.drain(2, TIMEOUT)
            assert sub.unrecoverable == [(1, 1)]
            assert any("no answer" in error for error in sub.errors)
            assert sub.index.hashes("w0") == {1, 3}
    finally:
        silent.close(linger=0)


def test_all_blocks_cleared_empties_the_index(engines: list[FakeEngine]) -> None:
    engine = start(engines)
    with subscribe(engine) as sub:
        engine.step([stored(1, 2, 3)])
        engine.step([AllBlocksCleared()])
        assert sub.drain(1, TIMEOUT)
        assert sub.index.hashes("w0") == frozenset()
        assert sub.index.tokens("w0", 1) is None
        engine.step([stored(4)])
        assert sub.drain(2, TIMEOUT)
        assert sub.index.hashes("w0") == {4}


def test_duplicate_batches_are_ignored(engines: list[FakeEngine]) -> None:
    engine = start(engines)
    with subscribe(engine) as sub:
        engine.step([stored(1)])
        engine.step([removed(1)])
        engine.resend(0)  # applying it again would bring hash 1 back
        engine.step([stored(2)])
        assert sub.drain(2, TIMEOUT)
        assert sub.index.hashes("w0") == {2}
        assert sub.duplicates == 1
        assert sub.batches == 3 and sub.replay_requests == 0


# --------------------------------------------------------------------------------------------- router


def index_with(blocks: dict[str, list[int]], loads: dict[str, Metrics] | None = None) -> KVIndex:
    index = KVIndex()
    for worker, hashes in blocks.items():
        events = [stored(*hashes)] if hashes else []
        index.apply(worker, EventBatch(ts=0.0, seq=0, events=events, metrics=(loads or {}).get(worker)))
    return index


def test_router_picks_the_longest_cached_prefix() -> None:
    hasher = Vllm084BlockHasher(BLOCK)
    request = list(range(18))  # four full blocks and two tokens
    h = hasher(request)
    assert len(h) == 4
    index = index_with({"w0": h[:3], "w1": h[:1], "w2": h[1:], "w3": []})
    decision = Router(index, hasher).route(request)
    assert decision.worker == "w0"
    assert decision.total_blocks == 4
    assert decision.overlaps == {"w0": 3, "w1": 1, "w2": 0, "w3": 0}  # w2 holds blocks, but not the leading one
    assert [s.worker for s in decision.ranking] == ["w0", "w1", "w2", "w3"]


def test_router_uses_load_to_break_ties_and_weigh_overlap() -> None:
    hasher = Vllm084BlockHasher(BLOCK)
    request = list(range(16))
    h = hasher(request)
    # same overlap: the emptier KV cache wins
    index = index_with({"a": h[:2], "b": h[:2]}, {"a": metrics(usage=0.5), "b": metrics(usage=0.1)})
    assert Router(index, hasher).route(request).worker == "b"
    # same overlap and usage: fewer waiting requests, then the name
    index = index_with({"a": h[:2], "b": h[:2]}, {"a": metrics(0.2, waiting=5), "b": metrics(0.2, waiting=1)})
    assert Router(index, hasher).route(request).worker == "b"
    index = index_with({"b": h[:2], "a": h[:2]}, {"a": metrics(0.2, waiting=1), "b": metrics(0.2, waiting=1)})
    assert Router(index, hasher).route(request).worker == "a"
    # a full cache costs as much as the whole request: overlap 3 of 4 at usage 1.0 scores 3 - 4 = -1 < 0
    index = index_with({"busy": h[:3], "idle": []}, {"busy": metrics(usage=1.0), "idle": metrics(usage=0.0)})
    decision = Router(index, hasher).route(request)
    assert decision.worker == "idle"
    assert {s.worker: s.score for s in decision.ranking} == {"busy": -1.0, "idle": 0.0}
    assert Router(index, hasher, load_weight=0.0).route(request).worker == "busy"


# --------------------------------------------------------------------------------------------- block hasher

# Computed with vLLM 0.8.4's own hash_block_tokens, vllm.utils.sha256 and NONE_HASH (PYTHONHASHSEED unset),
# for tokens 100..136 and block size 16 (two full blocks).
TOKENS_100 = list(range(100, 137))
VLLM_084_NONE_HASH_VALUE = 48866375075668575887601127642060975729562026798662730487875217332831182477322
VLLM_084_SHA256 = [3273953324517220050, 8729134218675714057]
VLLM_084_BUILTIN_LORA_7 = [8502015517378720898, 13978988460088489823]  # extra_keys (7,)
VLLM_084_BUILTIN_PY312 = [13237209945735705350, 7648211112044334720]  # extra_keys None: needs hash(None) fixed


def test_hasher_matches_vllm_084_values() -> None:
    assert Vllm084BlockHasher(16, hash_fn=pickle_sha256)(TOKENS_100) == VLLM_084_SHA256
    assert Vllm084BlockHasher(16, extra_keys=(7,))(TOKENS_100) == VLLM_084_BUILTIN_LORA_7
    assert VLLM_084_NONE_HASH == VLLM_084_NONE_HASH_VALUE


@pytest.mark.skipif(sys.version_info < (3, 12), reason="hash(None) is address-based before CPython 3.12")
def test_hasher_matches_vllm_084_builtin_values_without_extra_keys() -> None:
    assert Vllm084BlockHasher(16)(TOKENS_100) == VLLM_084_BUILTIN_PY312


def test_hasher_chains_blocks() -> None:
    tokens = [7, 3, 9, 1, 4, 4, 2, 8, 6, 5, 0, 2, 11]  # three full blocks of 4 and one token
    hasher = Vllm084BlockHasher(BLOCK)
    # by hand, straight from the formula
    parent, expected = None, []
    for start in range(0, 12, BLOCK):
        parent = hash((parent or VLLM_084_NONE_HASH, tuple(tokens[start : start + BLOCK]), None))
        expected.append(parent)
    assert hasher.chain(tokens) == expected
    assert hasher(tokens) == [value % 2**64 for value in expected]
    assert all(0 <= value < 2**64 for value in hasher(tokens))
    # block by block, and prefix by prefix: a prefix's hashes are a prefix of the full sequence's
    one = hasher.hash_block(None, tokens[0:4])
    two = hasher.hash_block(one, tokens[4:8])
    assert [one, two] == expected[:2]
    assert hasher(tokens[:8]) == hasher(tokens)[:2]
    assert hasher(tokens[:11]) == hasher(tokens)[:2]  # the partial block has no hash
    # the same block after a different parent hashes differently
    assert hasher([1, 2, 3, 4, 5, 6, 7, 8])[1] != hasher([0, 2, 3, 4, 5, 6, 7, 8])[1]
    # a parent of 0 is replaced by NONE_HASH, as `if not parent_block_hash` does in vLLM
    assert hasher.hash_block(0, tokens[:4]) == hasher.hash_block(None, tokens[:4])
    # callers with vLLM pass its values in
    other = Vllm084BlockHasher(BLOCK, none_hash=12345)
    assert other(tokens)[0] == hash((12345, tuple(tokens[:4]), None)) % 2**64 != hasher(tokens)[0]


def test_hasher_sha256_chains_on_full_values_and_extra_keys() -> None:
    tokens = list(range(12))
    hasher = Vllm084BlockHasher(BLOCK, hash_fn=pickle_sha256, extra_keys=(3,))
    parent, full = None, []
    for start in range(0, 12, BLOCK):
        parent = pickle_sha256((parent or VLLM_084_NONE_HASH, tuple(tokens[start : start + BLOCK]), (3,)))
        full.append(parent)
    assert hasher(tokens) == [value % 2**64 for value in full]
    # reducing before chaining would give other hashes from the second block on
    reduced_parent = pickle_sha256((full[0] % 2**64, tuple(tokens[4:8]), (3,))) % 2**64
    assert hasher(tokens)[1] != reduced_parent
    # extra keys per block range
    seen = []
    ranged = Vllm084BlockHasher(BLOCK, extra_keys=lambda start, end: seen.append((start, end)) or None)
    assert ranged(tokens) == Vllm084BlockHasher(BLOCK)(tokens)
    assert seen == [(0, 4), (4, 8), (8, 12)]


# --------------------------------------------------------------------------------------------- vpatch kv-watch


def test_kv_watch_json_reports_what_it_saw(engines: list[FakeEngine], capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    engine = start(engines)
    engine.step([stored(1, 2)], metrics(usage=0.5, waiting=2, running=1))
    engine.step([removed(1)])
    engine.sync()

    def later() -> None:
        engine.wait_subscribed()
        engine.step([stored(3, parent=2)], metrics(usage=0.75, waiting=0, running=2))
        engine.step([AllBlocksCleared(), stored(4)])

    publisher = threading.Thread(target=later)
    publisher.start()
    code = vpatch_main(["kv-watch", engine.endpoint, "--replay", engine.replay_endpoint, "--seconds", "1", "--json"])
    publisher.join(TIMEOUT)
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["batches"] == 4
    assert summary["last_seq"] == 3
    assert summary["events"] == {"BlockStored": 3, "BlockRemoved": 1, "AllBlocksCleared": 1}
    assert summary["hashes_cached"] == 1
    assert summary["metrics"]["kv_cache_usage"] == 0.75
    assert summary["unrecoverable"] == [] and summary["stale"] is False
    assert 0.9 < summary["seconds"] < 3


def test_kv_watch_live_view_and_bad_arguments(engines: list[FakeEngine], capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    engine = start(engines, replay=False)
    assert vpatch_main(["kv-watch", engine.endpoint, "--seconds", "0.3"]) == 0
    assert "kv-watch" in capsys.readouterr().out
    assert vpatch_main(["kv-watch", engine.endpoint, "--seconds", "0"]) == 1
    assert "--seconds must be positive" in capsys.readouterr().err
    assert vpatch_main(["kv-watch", "not-an-endpoint", "--seconds", "1"]) == 1
    assert "vpatch: error: cannot connect to not-an-endpoint" in capsys.readouterr().err


def test_content_keys_route_without_knowing_the_engines_hash_function():
    """Engine hashes are opaque here (random numbers); routing uses the token ids the events carry."""
    from toolkit.serving.kv.hashes import content_chain

    size = 4
    tokens = list(range(100, 116))  # four blocks
    index = KVIndex()
    index.apply(
        "a",
        EventBatch(
            ts=0.0,
            seq=0,
            events=[
                BlockStored(block_hashes=[901, 902], parent_block_hash=None, token_ids=tokens[:8], block_size=size),
                BlockStored(block_hashes=[903], parent_block_hash=902, token_ids=tokens[8:12], block_size=size),
            ],
        ),
    )
    index.apply(
        "b",
        EventBatch(
            ts=0.0,
            seq=0,
            events=[
                BlockStored(block_hashes=[777], parent_block_hash=None, token_ids=tokens[:4], block_size=size),
                # the parent of this run was stored before the subscriber joined: it cannot be keyed
                BlockStored(block_hashes=[778], parent_block_hash=555, token_ids=tokens[4:8], block_size=size),
            ],
        ),
    )
    chain = content_chain(tokens, size)
    assert len(chain) == 4
    assert index.content_overlap("a", chain) == 3
    assert index.content_overlap("b", chain) == 1
    decision = Router(index, block_size=size).route(tokens)
    assert decision.worker == "a" and decision.overlaps == {"a": 3, "b": 1}
    # a different first block changes every key after it (keys are chained)
    other = [0, *tokens[1:]]
    assert Router(index, block_size=size).route(other).overlaps == {"a": 0, "b": 0}
    index.apply("a", EventBatch(ts=0.0, seq=1, events=[BlockRemoved(block_hashes=[902])]))
    assert index.content_overlap("a", chain) == 1
    index.apply("a", EventBatch(ts=0.0, seq=2, events=[AllBlocksCleared()]))
    assert index.content_overlap("a", chain) == 0
