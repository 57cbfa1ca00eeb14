"""How fast the reference consumer decodes and applies KV-event batches, per encoding.

    .venv/bin/python bench/kv_decode.py [--rounds N]

Replays the captured streams in tests/fixtures/kv-streams/ through `wire.decode` + `KVIndex.apply` and
prints block hashes per second (batches differ in size between builds), with the ratio against the
baseline measured in the same run: the strict dynamo-base decoder the consumer had before
(`wire.decode_batch` + apply of its structs) on the dynamo-base captures.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from toolkit.serving.kv.index import KVIndex  # noqa: E402
from toolkit.serving.kv.wire import decode, decode_batch  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures" / "kv-streams"


def payloads(prefix: str) -> list[bytes]:
    out = []
    for path in sorted(FIXTURES.glob(f"{prefix}*.frames.jsonl")):
        out += [base64.b64decode(json.loads(line)["payload"]) for line in path.read_text().splitlines()]
    return out


def hashes_in(batches: list[bytes]) -> int:
    return sum(len(getattr(e, "block_hashes", ())) for p in batches for e in decode(p).events)


def rate(batches: list[bytes], rounds: int, strict: bool) -> float:
    """Block hashes decoded and applied per second (batches differ in size between builds)."""
    start = time.perf_counter()
    for _ in range(rounds):
        index = KVIndex()
        for payload in batches:
            index.apply("w", decode_batch(payload) if strict else decode(payload))
    return hashes_in(batches) * rounds / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    dynamo = payloads("dynamo-")
    baseline = rate(dynamo, args.rounds, strict=True)
    print(f"baseline (strict dynamo-base decoder): {baseline:,.0f} hashes/s")
    for label, prefix in (
        ("dynamo-maps", "dynamo-"),
        ("upstream-arrays 0.9.0", "vllm-0.9.0-"),
        ("upstream-arrays later", "vllm-0.23-"),
        ("upstream-maps", "vllm-0.24-"),
    ):
        measured = rate(payloads(prefix), args.rounds, strict=False)
        print(f"{label:24} {measured:>10,.0f} hashes/s  {measured / baseline:5.2f}x baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
