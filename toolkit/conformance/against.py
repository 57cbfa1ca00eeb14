"""Patched OLD vs upstream-native NEW: do routers built from the two event streams agree?

The same KV-routing workloads run on dynamo-base OLD (our events) and on stock NEW with upstream's own
KV events. The two streams differ in form: ours announce a hash when it enters or leaves the cached map;
vLLM 0.9.0 announces every block stored and every block evicted, duplicates included, so a consumer must
count references. Both are normalized the same way here (reference counts per block hash, hashes turned
into content keys chained from the events' token ids, see toolkit.serving.kv.hashes.content_key), which makes the
indexes comparable across versions and hash functions. Checked:

- per engine, after every step: the normalized index equals the engine's own cached map;
- across versions, at the end of every workload: the two indexes hold the same content, and a router
  gives the same overlap for every prompt of the workload.
"""

from __future__ import annotations

from collections import Counter

from toolkit.conformance.checks import FAIL, PASS, CheckResult, steps_of
from toolkit.serving.kv.hashes import content_chain, content_key

MASK = (1 << 64) - 1


class NormalizedIndex:
    """Reference-counted block hashes of one engine, with content keys."""

    def __init__(self) -> None:
        self.refs: Counter[int] = Counter()
        self.keys: dict[int, int] = {}

    def apply(self, event: dict) -> None:
        kind = event["type"]
        if kind == "AllBlocksCleared":
            self.refs.clear()
            self.keys.clear()
            return
        hashes = [h & MASK for h in event["block_hashes"]]
        if kind == "BlockRemoved":
            for block_hash in hashes:
                self.refs[block_hash] -= 1
                if self.refs[block_hash] <= 0:
                    del self.refs[block_hash]
                    self.keys.pop(block_hash, None)
            return
        size = event["block_size"]
        parent_hash = event["parent_block_hash"]
        parent = None if parent_hash is None else self.keys.get(parent_hash & MASK)
        for index, block_hash in enumerate(hashes):
            self.refs[block_hash] += 1
            tokens = event["token_ids"][index * size : (index + 1) * size]
            if parent_hash is None or parent is not None:
                parent = content_key(parent, tokens, event.get("lora_id"))
                self.keys.setdefault(block_hash, parent)

    @property
    def hashes(self) -> set[int]:
        return set(self.refs)

    @property
    def content(self) -> set[int]:
        return {self.keys[h] for h in self.refs if h in self.keys}


def replay(trace: list[dict]) -> tuple[dict[str, NormalizedIndex], list[str], dict[str, list[list[int]]]]:
    """Per workload: the final index, the steps where index and cached map disagreed, and the stored prompts."""
    indexes: dict[str, NormalizedIndex] = {}
    mismatches: list[str] = []
    prompts: dict[str, list[list[int]]] = {}
    for row in steps_of(trace):
        index = indexes.setdefault(row["workload"], NormalizedIndex())
        for event in row["events"]:
            index.apply(event)
            if event["type"] == "BlockStored" and event["parent_block_hash"] is None:
                prompts.setdefault(row["workload"], []).append(list(event["token_ids"]))
        if index.hashes != {h & MASK for h in row["cached_hashes"]}:
            mismatches.append(f"{row['workload']} step {row['step']}")
    return indexes, mismatches, prompts


def compare_against(old_label: str, old: list[dict], new_label: str, new: list[dict]) -> list[CheckResult]:
    old_indexes, old_bad, old_prompts = replay(old)
    new_indexes, new_bad, new_prompts = replay(new)
    results = []
    for label, bad, indexes in ((old_label, old_bad, old_indexes), (new_label, new_bad, new_indexes)):
        if bad:
            results.append(
                CheckResult(
                    f"index-invariant ({label})",
                    FAIL,
                    f"the index from {label}'s events differs from its cached map",
                    "\n".join(bad[:20]),
                )
            )
        elif not indexes:
            results.append(CheckResult(f"index-invariant ({label})", FAIL, f"{label} recorded no events"))
        else:
            steps = len(steps_of(old if label == old_label else new))
            results.append(
                CheckResult(
                    f"index-invariant ({label})", PASS, f"{steps} steps: the normalized index equals the cached map"
                )
            )
    same, scheduled_apart, disagreements, decisions = [], [], [], 0
    for workload in sorted(set(old_indexes) | set(new_indexes)):
        a, b = old_indexes.get(workload), new_indexes.get(workload)
        if a is None or b is None:
            disagreements.append(f"{workload}: only one side ran it")
            continue
        if a.content != b.content:
            # Each index is exact for its engine (index-invariant), so a difference here is the two
            # schedulers caching different blocks, not the events telling different stories.
            scheduled_apart.append(
                f"{workload}: {len(a.content - b.content)} blocks cached only by {old_label}, "
                f"{len(b.content - a.content)} only by {new_label}"
            )
            continue
        same.append(workload)
        for prompt in old_prompts.get(workload, []) + new_prompts.get(workload, []):
            chain = content_chain(prompt, 16)
            decisions += 1
            if sum(1 for _ in _leading(chain, a.content)) != sum(1 for _ in _leading(chain, b.content)):
                disagreements.append(f"{workload}: a prompt of {len(chain)} blocks routes differently")
    if disagreements or not same:
        results.append(
            CheckResult(
                "router-agreement",
                FAIL,
                "the routers built from the two streams disagree"
                if disagreements
                else "no workload ended with the same cache on both sides",
                "\n".join(disagreements + scheduled_apart),
            )
        )
    else:
        note = (
            (
                f"; {len(scheduled_apart)} workload(s) end with different caches because the schedulers differ "
                "between the versions (each index is still exact for its engine)"
            )
            if scheduled_apart
            else ""
        )
        results.append(
            CheckResult(
                "router-agreement",
                PASS,
                f"{len(same)} workloads end with the same cached "
                f"content on both and all {decisions} prompts get the same overlap{note}",
                "\n".join(scheduled_apart),
            )
        )
    return results


def _leading(chain: list[int], content: set[int]):
    for key in chain:
        if key not in content:
            return
        yield key
