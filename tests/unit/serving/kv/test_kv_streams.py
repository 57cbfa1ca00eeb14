"""The reference consumer against KV-event streams captured from real vLLM builds (tests/fixtures/kv-streams/,
made by bench/capture_kv_streams.py): every fixture decodes, and the rebuilt index equals what the engine's
block pool cached, after every batch and at the end."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from tests.harness.paths import TESTS_DIR
from toolkit.serving.kv.index import KVIndex
from toolkit.serving.kv.wire import DYNAMO_MAPS, UPSTREAM_ARRAYS, UPSTREAM_MAPS, Batch, Removed, Stored, decode

FIXTURES = TESTS_DIR / "fixtures" / "kv-streams"
STREAMS = sorted(p.name.removesuffix(".frames.jsonl") for p in FIXTURES.glob("*.frames.jsonl"))


def encoding_of(name: str) -> str:
    """dynamo-base publishes maps; stock vLLM array events up to 0.23, tagged-map events from 0.24.0."""
    if name.startswith("dynamo-"):
        return DYNAMO_MAPS
    major, minor = (int(part) for part in name.split("-")[1].split(".")[:2])
    return UPSTREAM_MAPS if (major, minor) >= (0, 24) else UPSTREAM_ARRAYS


def frames_of(name: str) -> list[dict]:
    lines = (FIXTURES / f"{name}.frames.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def digest(hashes: frozenset[int]) -> str:
    return hashlib.sha256("".join(f"{h}\n" for h in sorted(hashes)).encode()).hexdigest()


def test_the_fixtures_cover_every_encoding_and_build() -> None:
    assert {encoding_of(name) for name in STREAMS} == {DYNAMO_MAPS, UPSTREAM_ARRAYS, UPSTREAM_MAPS}
    for prefix in (
        "dynamo-0.8.4-",
        "dynamo-0.8.5-",
        "vllm-0.9.0-builtin-",
        "vllm-0.9.0-sha256-",
        "vllm-0.24.0-structs",
    ):
        assert any(name.startswith(prefix) for name in STREAMS), prefix
    # only fixtures not produced by a real engine say so in their name
    assert all(
        "synthetic" in json.loads((FIXTURES / f"{n}.expected.json").read_text())["source"]
        for n in STREAMS
        if "synthetic" in n
    )


@pytest.mark.parametrize("name", STREAMS)
def test_fixture_rebuilds_the_engines_cached_blocks(name: str) -> None:
    expected = json.loads((FIXTURES / f"{name}.expected.json").read_text(encoding="utf-8"))
    frames = frames_of(name)
    if not frames:  # 0.9.0 with sha256: its publisher cannot encode the hashes and sends nothing
        assert "OverflowError" in expected["note"] and expected["final_cached"]
        return
    index = KVIndex()
    checked = 0
    for frame in frames:
        batch = decode(base64.b64decode(frame["payload"]))
        assert batch.encoding == encoding_of(name)
        assert batch.seq in (None, frame["seq"])
        index.apply("w", batch, seq=frame["seq"])
        want = expected["checkpoints"].get(str(frame["seq"]))
        if want is not None:
            assert digest(index.hashes("w")) == want, f"{name}: index differs from the engine after seq {frame['seq']}"
            checked += 1
    # one checkpoint per engine step that published (dynamo-base's extra batch after a cache reset has none)
    assert checked == len(expected["checkpoints"]) >= len(frames) - 1
    assert sorted(index.hashes("w")) == expected["final_cached"]
    assert not index.is_stale("w") and index.encoding("w") == encoding_of(name)


def test_duplicate_stores_and_per_block_removals_are_reference_counted() -> None:
    """Stock vLLM announces a hash once per block holding it and removes it once per evicted block."""
    index = KVIndex()
    twice = Stored((7, 8), None, tuple(range(8)), 4)
    for seq, events in enumerate([(twice,), (twice,), (Removed((7, 8)),)]):
        index.apply("w", Batch(ts=0.0, events=events, encoding=UPSTREAM_ARRAYS), seq=seq)
    assert index.hashes("w") == {7, 8}  # one block of each is still cached (a set would say empty)
    index.apply("w", Batch(ts=0.0, events=(Removed((7, 8, 9)),), encoding=UPSTREAM_ARRAYS), seq=3)
    assert index.hashes("w") == frozenset() and index.state("w").removed_unknown == 1
    assert index.state("w").content_refs == {}  # content keys go with the last block
    # a removal of a block never seen stored (joined late) cannot push a later store below zero
    index.apply("w", Batch(ts=0.0, events=(Stored((9,), None, (), 0),), encoding=UPSTREAM_ARRAYS), seq=4)
    assert index.hashes("w") == {9}


def test_router_sees_the_prefixes_a_stock_worker_holds_in_a_mixed_fleet() -> None:
    """Issue 21: behind the project's router, a stock 0.9.0 worker showed overlap 0 for a prefix it held."""
    from toolkit.serving.kv.router import Router

    index = KVIndex()
    roots: dict[str, list[Stored]] = {}
    for worker, name in (("dynamo", "dynamo-0.8.4-sha256-preemption"), ("stock", "vllm-0.9.0-builtin-mixed")):
        for frame in frames_of(name):
            batch = decode(base64.b64decode(frame["payload"]))
            index.apply(worker, batch, seq=frame["seq"])
            roots.setdefault(worker, []).extend(
                e for e in batch.events if isinstance(e, Stored) and e.parent_block_hash is None
            )
    held = next(e for e in roots["stock"] if all(h in index.state("stock").blocks for h in e.block_hashes))
    decision = Router(index, block_size=held.block_size).route(list(held.token_ids))
    assert decision.worker == "stock"
    assert decision.overlaps["stock"] == len(held.block_hashes) > decision.overlaps["dynamo"]
