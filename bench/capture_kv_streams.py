"""Capture real KV-event streams from real vLLM code into tests/fixtures/kv-streams/.

How to regenerate (from the repo root, with the project's venv):

    .venv/bin/python bench/capture_kv_streams.py --stock 0.9.0 --patched 0.8.4 --patched 0.8.5 \
        --synthetic vllm-0.9.0-builtin-preemption

Each engine is vLLM's real V1 scheduler, KV-cache manager, block pool and ZMQ publisher
(toolkit/conformance/runner.py, run inside a venv holding that vLLM build: stock wheels from the pins,
dynamo-base overlay wheels built from patches/vllm-X/). The engine binds its PUB socket at `tcp://*:P`;
this process connects a SUB socket and records every frame it receives as one JSON line
`{"topic": b64, "seq": int, "payload": b64}` in `<name>.frames.jsonl`. Beside it, `<name>.expected.json`
holds what the engine's block pool really cached (from the runner's trace): the final set of cached
block hashes as canonical keys (`hash_value & (2**64 - 1)`) and, per seq, the sha256 of the sorted set
after that batch (see `cached_digest`). Unit tests decode every fixture and check the index against it.

Stock 0.9.0 publishes one batch per step that has events (`seq` counts publish calls); dynamo-base
publishes one per step. `--venv NAME=PATH` uses an existing venv instead of resolving one.

`--synthetic CAPTURE` re-encodes a real capture in the formats of later releases that were not run here
(arrays with every field appended up to 0.23; 0.24.0+'s tagged maps with bytes hashes and unknown fields),
from the format documented in ../shared/notes/vllm-facts.md; those fixtures have `synthetic` in their name.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import zmq

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "fixtures" / "kv-streams"
WORKLOADS = ("mixed", "preemption", "prefix-reset")


NOTHING_SENT = (
    "the engine sent nothing: vLLM 0.9.0 publishes sha256 block hashes unreduced, msgspec raises OverflowError "
    "(can't serialize ints > 2**64 - 1) in the publisher thread for every batch, which logs it and drops the batch "
    "after taking its seq"
)


def cached_digest(hashes: list[int]) -> str:
    """sha256 of a sorted set of canonical keys, one decimal per line: compact and exact."""
    return hashlib.sha256("".join(f"{h}\n" for h in sorted(hashes)).encode()).hexdigest()


def stock_env(version: str) -> Path:
    sys.path.insert(0, str(REPO / "tests"))  # the test helpers resolve pinned wheels into cached venvs
    from helpers import stock_env_of

    from toolkit.options import load_options
    from toolkit.project import Project

    return stock_env_of(Project.load(load_options({"root": str(REPO)})), version)


def patched_env(version: str, work: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from helpers import patched_wheel_of

    from toolkit.conformance.envs import vllm_env
    from toolkit.options import load_options
    from toolkit.project import Project

    project = Project.load(load_options({"root": str(REPO)}))
    return vllm_env(project.options.cache_dir, patched_wheel_of(project, version, work))


def capture(venv: Path, name: str, *, workload: str, hash_algo: str, patched: bool) -> None:
    from toolkit.conformance.envs import free_port, read_trace, run_runner

    port = free_port()
    kv_events: dict = {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": f"tcp://*:{port}"}
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.connect(f"tcp://127.0.0.1:{port}")
    frames: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        trace_path, done = Path(tmp) / "trace.jsonl", Path(tmp) / "done"
        proc = run_runner(
            venv,
            trace_path,
            workloads=[workload],
            kv_events=kv_events,
            hash_algo=hash_algo,
            wait_for=done,
            start_delay=1.5,
            background=True,
        )
        assert not isinstance(proc.stdout, type(None))
        try:
            quiet_since = None
            while True:
                if sub.poll(200):
                    topic, seq, payload = sub.recv_multipart()
                    frames.append(
                        {
                            "topic": base64.b64encode(topic).decode(),
                            "seq": int.from_bytes(seq, "big"),
                            "payload": base64.b64encode(payload).decode(),
                        }
                    )
                    quiet_since = None
                elif trace_path.exists() and '"summary": true' in trace_path.read_text():
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since > 1.0:
                        break
                if proc.poll() is not None:
                    break
        finally:
            done.touch()
            _, err = proc.communicate(timeout=120)
        if proc.returncode:
            raise SystemExit(f"{name}: runner failed: {err.strip().splitlines()[-3:]}")
        steps = [r for r in read_trace(trace_path) if not r.get("summary")]
    checkpoints: dict[str, str] = {}
    seq = -1
    for record in steps:
        if patched:
            if record["event_seq"] is None:
                continue
            seq = record["event_seq"]
        elif record["events"]:
            seq += 1  # stock publishes once per step with events, and only then
        else:
            continue
        checkpoints[str(seq)] = cached_digest(record["cached_hashes"])
    expected = {
        "source": f"{name}: vLLM runner workload {workload!r}, --prefix-caching-hash-algo {hash_algo}",
        "workload": workload,
        "hash_algo": hash_algo,
        "steps": len(steps),
        "frames": len(frames),
        "final_cached": sorted(steps[-1]["cached_hashes"]),
        "checkpoints": checkpoints,
    }
    if not frames:
        expected["note"] = NOTHING_SENT
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.frames.jsonl").write_text("".join(json.dumps(f, sort_keys=True) + "\n" for f in frames))
    (OUT / f"{name}.expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print(f"{name}: {len(frames)} frames, {len(steps)} steps, {len(expected['final_cached'])} cached at the end")


def synthesize(source: str, name: str, *, arrays: bool, extra: dict, bytes_hashes: bool) -> None:
    """A later release's encoding rebuilt from a real capture (same events, same expected cache), for releases
    whose own structs were not run here: the name says `synthetic`."""
    sys.path.insert(0, str(REPO))
    from toolkit.serving.kv.wire import Removed, Stored, decode, encode_upstream

    def as_bytes(value: int) -> bytes:  # a 32-byte digest whose int form (last 8 bytes) is the key
        return hashlib.sha256(str(value).encode()).digest()[:24] + value.to_bytes(8, "big")

    lines = []
    for line in (OUT / f"{source}.frames.jsonl").read_text().splitlines():
        frame = json.loads(line)
        batch = decode(base64.b64decode(frame["payload"]))
        events: list = []
        for event in batch.events:
            if bytes_hashes and isinstance(event, Stored):
                event = Stored(
                    tuple(as_bytes(h) for h in event.block_hashes),
                    None if event.parent_block_hash is None else as_bytes(event.parent_block_hash),
                    event.token_ids,
                    event.block_size,
                    event.lora_id,
                )
            elif bytes_hashes and isinstance(event, Removed):
                event = Removed(tuple(as_bytes(h) for h in event.block_hashes))
            events.append(event)
        payload = encode_upstream(events, ts=batch.ts, arrays=arrays, extra=extra)
        lines.append(json.dumps({**frame, "payload": base64.b64encode(payload).decode()}, sort_keys=True) + "\n")
    expected = json.loads((OUT / f"{source}.expected.json").read_text())
    expected["source"] = f"synthetic: {source} re-encoded as {name} (documented format, see capture_kv_streams.py)"
    (OUT / f"{name}.frames.jsonl").write_text("".join(lines))
    (OUT / f"{name}.expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print(f"{name}: {len(lines)} frames (synthetic, from {source})")


LATER_STORED = {"medium": "GPU", "lora_name": None, "extra_keys": [["mm", 3]], "group_idx": 0}
SYNTHETIC = {
    # 0.14-0.23: arrays with fields appended over 0.9.1 (data_parallel_rank), 0.10.2 (medium), 0.14 (lora_name),
    # 0.17 (extra_keys), 0.20 (group_idx)
    "vllm-0.23-synthetic-arrays": dict(
        arrays=True,
        bytes_hashes=False,
        extra={"BlockStored": LATER_STORED, "BlockRemoved": {"medium": "GPU"}, "batch": {"data_parallel_rank": 0}},
    ),
    # 0.24.0+: tagged maps, bytes hashes (0.10.2+ with VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0), unknown fields
    "vllm-0.24-synthetic-maps": dict(
        arrays=False,
        bytes_hashes=True,
        extra={
            "BlockStored": {**LATER_STORED, "kv_cache_spec_kind": "full_attention", "locality": {"zone": [1, [2]]}},
            "BlockRemoved": {"medium": "GPU", "group_idx": 0},
            "batch": {"data_parallel_rank": 1},
        },
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stock", action="append", default=[], help="stock vLLM version (pinned)")
    parser.add_argument("--patched", action="append", default=[], help="dynamo-base version (committed series)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="runner workloads to capture")
    parser.add_argument(
        "--synthetic", metavar="CAPTURE", help="re-encode this capture in later releases' formats (see SYNTHETIC)"
    )
    parser.add_argument("--venv", action="append", default=[], help="NAME=PATH: use this venv for NAME")
    args = parser.parse_args()
    given = dict(item.split("=", 1) for item in args.venv)
    with tempfile.TemporaryDirectory() as work:
        for version in args.stock:
            name = f"vllm-{version}"
            venv = Path(given[name]) if name in given else stock_env(version)
            for workload in args.workloads.split(","):
                capture(venv, f"{name}-builtin-{workload}", workload=workload, hash_algo="builtin", patched=False)
            capture(venv, f"{name}-sha256-mixed", workload="mixed", hash_algo="sha256", patched=False)
        for version in args.patched:
            name = f"dynamo-{version}"
            venv = Path(given[name]) if name in given else patched_env(version, Path(work))
            for workload in args.workloads.split(","):
                capture(venv, f"{name}-sha256-{workload}", workload=workload, hash_algo="sha256", patched=True)
    if args.synthetic:
        for prefix, how in SYNTHETIC.items():
            synthesize(args.synthetic, f"{prefix}-{args.synthetic.split('-')[-1]}", **how)
    return 0


if __name__ == "__main__":
    sys.exit(main())
