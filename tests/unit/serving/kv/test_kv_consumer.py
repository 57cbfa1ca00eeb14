"""The reference consumer cannot be wedged (issue 21 item 4), reads a mixed fleet (item 3), and kv-watch
follows engines that bind or connect: every publisher is a separate process on real ZMQ sockets
(tests/harness/kv_stream_peer.py), replaying real captures from tests/fixtures/kv-streams/ or frames a test writes."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from tests.harness.paths import TESTS_DIR
from toolkit.cli import main as vpatch_main
from toolkit.serving.kv.index import KVIndex
from toolkit.serving.kv.subscriber import Subscriber
from toolkit.serving.kv.wire import (
    DYNAMO_MAPS,
    UPSTREAM_ARRAYS,
    UPSTREAM_MAPS,
    BlockStored,
    EventBatch,
    Removed,
    Stored,
    WireError,
    canonical_hash,
    decode,
    encode_batch,
    encode_upstream,
)

PEER = TESTS_DIR / "harness" / "kv_stream_peer.py"
FIXTURES = TESTS_DIR / "fixtures" / "kv-streams"
DEEP = b"\x92\xcb" + b"\0" * 8 + b"\x91" * 200_000 + b"\x90"  # [ts, [[[[...]]]]]


class Peer:
    def __init__(self, proc: subprocess.Popen, pub: str, replay: str | None) -> None:
        self.proc, self.pub, self.replay = proc, pub, replay

    def wait_published(self, timeout: float = 20) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.stdout.readline().strip() == "PUBLISHED":
                return
        raise AssertionError("peer did not finish publishing")


@pytest.fixture
def peers() -> Iterator:
    started: list[subprocess.Popen] = []

    def start(frames: Path, *args: str, replay: bool = True) -> Peer:
        argv = [sys.executable, str(PEER), str(frames), *args]
        if replay:
            argv += ["--replay", "tcp://127.0.0.1:*"]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line and line[0] == "READY", line
        return Peer(proc, line[1], None if line[2] == "-" else line[2])

    yield start
    for proc in started:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=10)


def write_frames(path: Path, frames: list[tuple[int, bytes]]) -> Path:
    lines = [json.dumps({"topic": "", "seq": seq, "payload": base64.b64encode(p).decode()}) for seq, p in frames]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def dynamo(seq: int, *hashes: int) -> bytes:
    events = [BlockStored(block_hashes=list(hashes), parent_block_hash=None, token_ids=[], block_size=4)]
    return encode_batch(EventBatch(ts=float(seq), seq=seq, events=events))


def expected(name: str) -> set[int]:
    return set(json.loads((FIXTURES / f"{name}.expected.json").read_text(encoding="utf-8"))["final_cached"])


def until(subscriber: Subscriber, done, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        subscriber.poll(50, deadline=deadline)
    assert done(), json.dumps(subscriber.summary(), default=str)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------------------------- decoding


def test_every_hash_form_of_one_block_is_one_key() -> None:
    value = -6805300440591275589  # a builtin hash as 0.9.0 sends it
    digest = b"\x07" * 24 + (value & (2**64 - 1)).to_bytes(8, "big")
    assert canonical_hash(value) == canonical_hash(value & (2**64 - 1)) == canonical_hash(digest) == value % 2**64
    arrays = decode(encode_upstream([Stored((value,), None, (), 0)], ts=1.0, arrays=True))
    maps = decode(encode_upstream([Stored((digest,), None, (), 0)], ts=1.0, arrays=False))  # type: ignore[arg-type]
    assert arrays.events == maps.events and (arrays.encoding, maps.encoding) == (UPSTREAM_ARRAYS, UPSTREAM_MAPS)


def test_added_and_unknown_fields_are_tolerated_in_every_encoding() -> None:
    later = {"BlockStored": {"medium": "GPU", "lora_name": "x", "extra_keys": [[1, [2, [3]]]], "group_idx": 2}}
    for arrays in (True, False):
        payload = encode_upstream(
            [Stored((5, 6), 4, tuple(range(8)), 4), Removed((4,))], ts=2.0, arrays=arrays, extra=later
        )
        batch = decode(payload)
        assert batch.events == (Stored((5, 6), 4, tuple(range(8)), 4), Removed((4,)))
    mapped = msgspec.msgpack.encode({"ts": 1.0, "seq": 3, "events": [], "metrics": None, "future": {"a": [1]}})
    assert decode(mapped).encoding == DYNAMO_MAPS and decode(mapped).seq == 3


@pytest.mark.parametrize(
    "payload",
    [
        DEEP,
        msgspec.msgpack.encode({"ts": 1.0, "seq": 0, "events": [[1]]})[:-3],
        b"",
        b"\xc1",
        msgspec.msgpack.encode([1.0, [["[/yellow]", [1]]]]),
        # {"ts": 1.0, "events": [{"type": "BlockStored", "block_hashes": [<a 9-byte int>]}]}: not msgpack
        msgspec.msgpack.encode({"ts": 1.0, "events": [{"type": "BlockStored", "block_hashes": [2**64 - 1]}]}).replace(
            b"\xcf" + b"\xff" * 8, b"\xd4\xff\xff"
        ),
    ],
    ids=["deep-nesting", "truncated", "empty", "reserved-byte", "unknown-event-type", "extension-type-hash"],
)
def test_malformed_payloads_are_decode_errors_never_crashes(payload: bytes) -> None:
    with pytest.raises(WireError):
        decode(payload)


def test_deep_nesting_under_an_unknown_map_key_is_a_decode_error() -> None:
    payload = b"\x83\xa2ts\xcb" + b"\0" * 8 + b"\xa6events\x90\xa1z" + b"\x91" * 200_000 + b"\x90"
    with pytest.raises(WireError, match="nesting"):
        decode(payload)


# --------------------------------------------------------------------------------------------- wedges


def test_undecodable_stream_is_counted_and_kv_watch_exits_non_zero(peers, tmp_path, capsys) -> None:
    """Deep nesting and an event type that is rich markup: counted as decode errors, shown as text."""
    bad = msgspec.msgpack.encode([1.0, [["[/yellow]", [1]]]])
    peer = peers(write_frames(tmp_path / "f.jsonl", [(0, DEEP), (1, bad)]), "--delay", "0.7", replay=False)
    code = vpatch_main(["kv-watch", peer.pub, "--seconds", "2"])
    out = capsys.readouterr()
    assert code == 1
    assert "[/yellow]" in out.out  # escaped: printed as text, not parsed as a closing tag
    assert "decoded none" in out.err


def test_kv_watch_reports_no_messages_received(peers, tmp_path, capsys) -> None:
    peer = peers(write_frames(tmp_path / "f.jsonl", []), replay=False)
    assert vpatch_main(["kv-watch", peer.pub, "--seconds", "0.5", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["received"] == 0 and summary["joined_late"] is None
    assert summary["problems"] == [f"w0: no messages received from {peer.pub}"]


def test_replay_that_never_ends_is_bounded_by_the_deadline(peers, tmp_path, capsys) -> None:
    frames = write_frames(tmp_path / "f.jsonl", [(0, dynamo(0, 1)), (1, dynamo(1, 2))])
    peer = peers(frames, "--replay-never-ends")
    peer.wait_published()  # kv-watch joins late, so it asks replay, which trickles forever
    code = vpatch_main(["kv-watch", peer.pub, "--replay", peer.replay, "--seconds", "1", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["seconds"] < 1.9, summary
    assert any("no end marker" in error for error in summary["errors"])


def test_engine_restart_resets_the_workers_index(peers, tmp_path) -> None:
    frames = [(0, dynamo(0, 1)), (1, dynamo(1, 2)), (1, dynamo(1, 2)), (2, dynamo(2, 3))]
    frames += [(0, dynamo(0, 7)), (1, dynamo(1, 8))]  # the engine restarted: seq back to 0, new content
    peer = peers(write_frames(tmp_path / "f.jsonl", frames), "--delay", "0.7", replay=False)
    with Subscriber(peer.pub) as sub:
        until(sub, lambda: sub.restarts == 1 and sub.seq == 1)
        assert sub.index.hashes("w0") == {7, 8}
        assert sub.duplicates == 1  # the repeated seq 1 with the same payload is a duplicate, not a restart
        assert any("engine restarted" in error for error in sub.errors)
        assert not sub.stale and sub.index.state("w0").resets == 1


def test_implausible_seq_is_held_back_then_dropped_or_accepted(peers, tmp_path) -> None:
    big = 2**63
    dropped = [(0, dynamo(0, 1)), (1, dynamo(1, 2)), (big, dynamo(big, 99)), (2, dynamo(2, 3)), (3, dynamo(3, 4))]
    peer = peers(write_frames(tmp_path / "a.jsonl", dropped), "--delay", "0.7", replay=False)
    with Subscriber(peer.pub) as sub:
        until(sub, lambda: sub.seq == 3)
        assert sub.index.hashes("w0") == {1, 2, 3, 4} and sub.implausible == 1 and not sub.stale
    continued = [(0, dynamo(0, 1)), (big, dynamo(big, 98)), (big + 1, dynamo(big + 1, 99))]
    peer = peers(write_frames(tmp_path / "b.jsonl", continued), "--delay", "0.7", replay=False)
    with Subscriber(peer.pub) as sub:
        until(sub, lambda: sub.seq == big + 1)
        assert sub.index.hashes("w0") == {98, 99} and sub.restarts == 1


def test_subscriber_learns_it_joined_late_without_catch_up(peers) -> None:
    name = "dynamo-0.8.4-sha256-mixed"
    peer = peers(FIXTURES / f"{name}.frames.jsonl")
    peer.wait_published()
    with Subscriber(peer.pub, peer.replay) as sub:
        until(sub, lambda: sub.joined_late is not None)
        assert sub.joined_late is True and sub.index.hashes("w0") == expected(name)
        assert sub.replayed == sub.batches == 19 and not sub.stale


# --------------------------------------------------------------------------------------------- a mixed fleet


def test_a_dynamo_base_and_a_stock_worker_at_once(peers, capsys) -> None:
    names = {"dynamo": "dynamo-0.8.4-sha256-mixed", "stock": "vllm-0.9.0-builtin-preemption"}
    running = {w: peers(FIXTURES / f"{n}.frames.jsonl", "--delay", "1.0") for w, n in names.items()}
    index = KVIndex()
    subs = {w: Subscriber(p.pub, p.replay, worker=w, index=index) for w, p in running.items()}
    try:
        for worker, sub in subs.items():
            count = len((FIXTURES / f"{names[worker]}.frames.jsonl").read_text().splitlines())
            until(sub, lambda sub=sub, count=count: sub.batches == count)
        for worker, name in names.items():
            assert index.hashes(worker) == expected(name), worker
        assert index.encoding("dynamo") == DYNAMO_MAPS and index.encoding("stock") == UPSTREAM_ARRAYS
        assert index.metrics("dynamo") is not None and index.metrics("stock") is None
    finally:
        for sub in subs.values():
            sub.close()
    # and kv-watch, joining both after they finished: everything comes from replay
    argv = ["kv-watch", running["dynamo"].pub, running["stock"].pub, "--replay", running["dynamo"].replay]
    argv += ["--replay", running["stock"].replay, "--worker", "dynamo", "--worker", "stock", "--seconds", "1.5"]
    assert vpatch_main([*argv, "--json"]) == 0
    workers = {w["worker"]: w for w in json.loads(capsys.readouterr().out)["workers"]}
    for worker, name in names.items():
        assert workers[worker]["hashes_cached"] == len(expected(name)) and workers[worker]["joined_late"] is True
    assert workers["dynamo"]["encoding"] == DYNAMO_MAPS and workers["stock"]["encoding"] == UPSTREAM_ARRAYS


def test_kv_watch_binds_for_a_publisher_that_connects(peers, capsys) -> None:
    """Stock vLLM 0.9.0 connects its PUB socket for tcp://127.0.0.1:P: kv-watch --bind follows it."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    name = "vllm-0.9.0-builtin-mixed"
    peers(FIXTURES / f"{name}.frames.jsonl", "--pub", endpoint, "--connect", "--delay", "1.0", replay=False)
    assert vpatch_main(["kv-watch", endpoint, "--bind", "--seconds", "2.5", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["bind"] is True and summary["encoding"] == UPSTREAM_ARRAYS
    assert summary["batches"] == 8 and summary["hashes_cached"] == len(expected(name))


def test_kv_watch_records_one_observation_per_batch_and_stops_on_until(peers, tmp_path, capsys) -> None:
    """The contract's consumer: `--record` writes what the index and the router hold after every batch."""
    from toolkit.records.contract import decode_observations

    name = "vllm-0.9.0-builtin-mixed"
    frames = FIXTURES / f"{name}.frames.jsonl"
    peer = peers(frames, "--delay", "3.0")
    first = json.loads(frames.read_text().splitlines()[0])
    batch = decode(base64.b64decode(first["payload"]))
    stored = next(e for e in batch.events if isinstance(e, Stored))
    probes = tmp_path / "probes.json"
    probes.write_text(json.dumps({"first": list(stored.token_ids)}))
    record, stop = tmp_path / "record.jsonl", tmp_path / "stop"
    argv = ["kv-watch", peer.pub, "--replay", peer.replay, "--record", str(record), "--probes", str(probes)]
    import threading

    # the engine is done once the peer has published everything: then kv-watch drains and stops
    done = threading.Thread(target=lambda: (peer.wait_published(), stop.touch()))
    done.start()
    assert vpatch_main([*argv, "--until", str(stop), "--seconds", "120", "--json"]) == 0
    done.join()
    summary = json.loads(capsys.readouterr().out)
    observations = decode_observations(record.read_bytes())
    assert len(observations) == summary["batches"] == 8
    assert [o.seq for o in observations] == list(range(8)) and observations[-1].metrics is None
    assert {o.encoding for o in observations} == {UPSTREAM_ARRAYS}
    assert set(observations[-1].hashes) == expected(name)
    assert observations[0].overlaps["first"] == len(stored.block_hashes)  # the router matched what was stored
