"""Normalizing two KV event dialects (hash-level vs block-level) into comparable router indexes."""

from __future__ import annotations

from toolkit.conformance.against import NormalizedIndex, compare_against

TOKENS = list(range(100, 148))  # three blocks of 16


def stored(hashes, parent, tokens):
    return {
        "type": "BlockStored",
        "block_hashes": hashes,
        "parent_block_hash": parent,
        "token_ids": tokens,
        "block_size": 16,
        "lora_id": None,
    }


def row(workload, step, events, cached):
    return {"workload": workload, "step": step, "events": events, "cached_hashes": cached}


def test_block_level_events_need_reference_counts():
    index = NormalizedIndex()
    # upstream style: two blocks with the same hash are both announced, and evicted one at a time
    index.apply(stored([11, 12], None, TOKENS[:32]))
    index.apply(stored([12], 11, TOKENS[16:32]))
    index.apply({"type": "BlockRemoved", "block_hashes": [12]})
    assert index.hashes == {11, 12}  # a set-based consumer would have dropped 12 here
    index.apply({"type": "BlockRemoved", "block_hashes": [12]})
    assert index.hashes == {11}
    index.apply({"type": "AllBlocksCleared"})
    assert index.hashes == set() and index.content == set()


def test_two_dialects_with_different_hash_functions_give_the_same_router():
    # ours: hash-level, hashes reduced mod 2**64; theirs: block-level, other (big) hash values
    ours = [
        row("w", 0, [stored([1, 2, 3], None, TOKENS)], [1, 2, 3]),
        row("w", 1, [{"type": "BlockRemoved", "block_hashes": [3]}], [1, 2]),
    ]
    big = 2**200
    theirs = [
        row(
            "w",
            0,
            [stored([big + 1, big + 2], None, TOKENS[:32]), stored([big + 3], big + 2, TOKENS[32:])],
            [(big + 1) % 2**64, (big + 2) % 2**64, (big + 3) % 2**64],
        ),
        row("w", 1, [{"type": "BlockRemoved", "block_hashes": [big + 3]}], [(big + 1) % 2**64, (big + 2) % 2**64]),
    ]
    results = {r.name: r for r in compare_against("old", ours, "new", theirs)}
    assert results["index-invariant (old)"].status == "pass"
    assert results["index-invariant (new)"].status == "pass"
    assert results["router-agreement"].status == "pass"
    assert "1 workloads end with the same cached content" in results["router-agreement"].detail


def test_an_index_that_misses_a_removal_fails_the_invariant():
    ours = [row("w", 0, [stored([1, 2, 3], None, TOKENS)], [1, 2, 3]), row("w", 1, [], [1, 2])]
    theirs = [row("w", 0, [stored([1, 2, 3], None, TOKENS)], [1, 2, 3]), row("w", 1, [], [1, 2, 3])]
    results = {r.name: r for r in compare_against("old", ours, "new", theirs)}
    assert results["index-invariant (old)"].status == "fail" and "w step 1" in results["index-invariant (old)"].diff
    assert results["index-invariant (new)"].status == "pass"
    # both event streams tell the same story (neither removed block 3): the routers agree; it is the
    # invariant that shows old's story is not its cache's
    assert results["router-agreement"].status == "pass"
