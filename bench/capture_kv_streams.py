"""Capture real KV-event streams from real vLLM code into tests/fixtures/kv-streams/.

How to regenerate (from the repo root, with the project's venv):

    .venv/bin/python bench/capture_kv_streams.py --stock 0.9.0 --patched 0.8.4 --patched 0.8.5 \
        --synthetic vllm-0.9.0-builtin-preemption --structs 0.24.0

Each engine is vLLM's real V1 scheduler, KV-cache manager, block pool and ZMQ publisher
(toolkit/serving/drivers/runner.py, run inside a venv holding that vLLM build: stock wheels from the pins,
dynamo-base overlay wheels built from patches/vllm-X/). The engine binds its PUB socket at `tcp://*:P`;
this process connects a SUB socket and records every frame it receives as one JSON line
`{"topic": b64, "seq": int, "payload": b64}` in `<name>.frames.jsonl`. Beside it, `<name>.expected.json`
holds what the engine's block pool really cached (from the runner's trace): the final set of cached
block hashes as canonical keys (`hash_value & (2**64 - 1)`) and, per seq, the sha256 of the sorted set
after that batch (see `cached_digest`). Unit tests decode every fixture and check the index against it.

Stock 0.9.0 publishes one batch per step that has events (`seq` counts publish calls); dynamo-base
publishes one per step. `--venv NAME=PATH` uses an existing venv instead of resolving one.

`--synthetic CAPTURE` re-encodes a real capture in the format of later releases that were not run here
(array events with every field appended up to 0.23, from the format documented in
../shared/notes/vllm-facts.md; `synthetic` in the name). `--structs 0.24.0` re-encodes it with that
release's own msgspec structs, taken from its sdist on PyPI (sha256-checked): tagged-map events in an
array batch (`vllm-0.24.0-structs-...`).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "fixtures" / "kv-streams"
WORKLOADS = ("mixed", "preemption", "prefix-reset")  # dynamo-base publishes every step: its streams are larger
STOCK_WORKLOADS = (*WORKLOADS, "shared-prefix", "chunked-prefill", "aborts")


NOTHING_SENT = (
    "the engine sent nothing: vLLM 0.9.0 publishes sha256 block hashes unreduced, msgspec raises OverflowError "
    "(can't serialize ints > 2**64 - 1) in the publisher thread for every batch, which logs it and drops the batch "
    "after taking its seq"
)


def cached_digest(hashes: list[int]) -> str:
    """sha256 of a sorted set of canonical keys, one decimal per line: compact and exact."""
    return hashlib.sha256("".join(f"{h}\n" for h in sorted(hashes)).encode()).hexdigest()


def stock_env(version: str) -> Path:
    sys.path.insert(0, str(REPO))  # the test harness resolves pinned wheels into cached venvs
    from tests.harness import stock_env_of
    from toolkit.options import load_options
    from toolkit.project import Project

    return stock_env_of(Project.load(load_options({"root": str(REPO)})), version)


def patched_env(version: str, work: Path) -> Path:
    sys.path.insert(0, str(REPO))
    from tests.harness import patched_wheel_of
    from toolkit.conformance.envs import vllm_env
    from toolkit.options import load_options
    from toolkit.project import Project

    project = Project.load(load_options({"root": str(REPO)}))
    return vllm_env(project.options.cache_dir, patched_wheel_of(project, version, work))


def capture(venv: Path, name: str, *, workload: str, hash_algo: str, patched: bool) -> None:
    from toolkit.conformance.envs import free_port, read_trace, run_runner

    port = free_port()
    kv_events: dict = {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": f"tcp://*:{port}"}
    ctx: zmq.Context = zmq.Context.instance()
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
        assert isinstance(proc, subprocess.Popen)
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
    expected: dict[str, Any] = {
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


def synthesize(source: str, name: str, extra: dict[str, dict[str, Any]]) -> None:
    """A later release's array encoding rebuilt from a real capture (same events, same expected cache) with the
    fields those releases append (`extra`), for releases not run here: the name says `synthetic`."""
    sys.path.insert(0, str(REPO))
    from toolkit.serving.kv.wire import decode, encode_upstream

    lines = []
    for line in (OUT / f"{source}.frames.jsonl").read_text().splitlines():
        frame = json.loads(line)
        batch = decode(base64.b64decode(frame["payload"]))
        payload = encode_upstream(list(batch.events), ts=batch.ts, arrays=True, extra=extra)
        lines.append(json.dumps({**frame, "payload": base64.b64encode(payload).decode()}, sort_keys=True) + "\n")
    expected = json.loads((OUT / f"{source}.expected.json").read_text())
    expected["source"] = f"synthetic: {source} re-encoded as {name} (documented format, see capture_kv_streams.py)"
    (OUT / f"{name}.frames.jsonl").write_text("".join(lines))
    (OUT / f"{name}.expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print(f"{name}: {len(lines)} frames (synthetic, from {source})")


# 0.14-0.23: array events with the fields appended over 0.9.1 (data_parallel_rank, on the batch), 0.10.2
# (medium), 0.14 (lora_name), 0.17 (extra_keys), 0.20 (group_idx)
SYNTHETIC: dict[str, dict[str, dict[str, Any]]] = {
    "vllm-0.23-synthetic-arrays": {
        "BlockStored": {"medium": "GPU", "lora_name": None, "extra_keys": [["mm", 3]], "group_idx": 0},
        "BlockRemoved": {"medium": "GPU"},
        "batch": {"data_parallel_rank": 0},
    },
}


STRUCT_NAMES = ("EventBatch", "KVCacheEvent", "BlockStored", "BlockRemoved", "AllBlocksCleared", "KVEventBatch")


def upstream_structs(version: str) -> tuple[dict, str]:
    """The msgspec structs of `vllm/distributed/kv_events.py` from vLLM `version`'s sdist on PyPI (downloaded
    through the project's index client, sha256-checked against the index): the class definitions only, run
    without vLLM (`ExternalBlockHash` is `bytes | int` there)."""
    import ast
    import tarfile

    import msgspec
    from packaging.version import Version

    sys.path.insert(0, str(REPO))
    from toolkit.index import fetch_artifact, list_release_files
    from toolkit.model import Artifact
    from toolkit.options import load_options

    options = load_options({"root": str(REPO)})
    sdist = next(
        f for f in list_release_files(options.index_url, "vllm", Version(version)) if f.filename.endswith(".tar.gz")
    )
    path = fetch_artifact(options.cache_dir, Artifact(sdist.filename, sdist.sha256, sdist.url), quiet=True)
    with tarfile.open(path) as archive:
        member = archive.extractfile(f"vllm-{version}/vllm/distributed/kv_events.py")
        assert member is not None
        source = member.read().decode()
    tree = ast.parse(source)
    keep: list[ast.stmt] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in STRUCT_NAMES]
    keep += [
        n
        for n in tree.body
        if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "MEDIUM_GPU" for t in n.targets)
    ]
    keep.sort(key=lambda n: n.lineno)
    namespace: dict = {"msgspec": msgspec, "Any": Any, "ExternalBlockHash": bytes | int}
    exec(compile(ast.Module(body=keep, type_ignores=[]), f"vllm-{version}/kv_events.py", "exec"), namespace)
    return namespace, f"{sdist.filename} sha256 {sdist.sha256}"


def restructure(source: str, version: str) -> None:
    """A real capture re-encoded with vLLM `version`'s own structs and encoder (same events, same cache)."""
    import msgspec

    from toolkit.serving.kv.wire import WIRE_MASK, Removed, Stored, decode

    structs, origin = upstream_structs(version)
    encoder = msgspec.msgpack.Encoder()
    name = f"vllm-{version}-structs-{source.removeprefix('vllm-')}"
    lines = []
    for line in (OUT / f"{source}.frames.jsonl").read_text().splitlines():
        frame = json.loads(line)
        events = []
        for event in decode(base64.b64decode(frame["payload"])).events:
            if isinstance(event, Stored):  # 0.24 sends u64 ints by default (VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES)
                parent = None if event.parent_block_hash is None else event.parent_block_hash & WIRE_MASK
                events.append(
                    structs["BlockStored"](
                        block_hashes=[h & WIRE_MASK for h in event.block_hashes],
                        parent_block_hash=parent,
                        token_ids=list(event.token_ids),
                        block_size=event.block_size,
                        lora_id=event.lora_id,
                        medium=structs["MEDIUM_GPU"],
                        lora_name=None,
                        group_idx=0,
                    )
                )
            elif isinstance(event, Removed):
                events.append(
                    structs["BlockRemoved"](block_hashes=list(event.block_hashes), medium=structs["MEDIUM_GPU"])
                )
            else:
                events.append(structs["AllBlocksCleared"]())
        batch = structs["KVEventBatch"](
            ts=decode(base64.b64decode(frame["payload"])).ts, events=events, data_parallel_rank=0
        )
        lines.append(
            json.dumps({**frame, "payload": base64.b64encode(encoder.encode(batch)).decode()}, sort_keys=True) + "\n"
        )
    expected = json.loads((OUT / f"{source}.expected.json").read_text())
    expected["source"] = f"{source} re-encoded with the structs of {origin} (not a {version} engine run)"
    (OUT / f"{name}.frames.jsonl").write_text("".join(lines))
    (OUT / f"{name}.expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print(f"{name}: {len(lines)} frames (from {source}, {origin})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stock", action="append", default=[], help="stock vLLM version (pinned)")
    parser.add_argument("--patched", action="append", default=[], help="dynamo-base version (committed series)")
    parser.add_argument("--workloads", help="runner workloads to capture (default: see WORKLOADS, STOCK_WORKLOADS)")
    parser.add_argument(
        "--synthetic", metavar="CAPTURE", help="re-encode this capture in later releases' formats (see SYNTHETIC)"
    )
    parser.add_argument(
        "--structs", metavar="VERSION", help="re-encode --synthetic's capture with this release's structs"
    )
    parser.add_argument("--venv", action="append", default=[], help="NAME=PATH: use this venv for NAME")
    args = parser.parse_args()
    given = dict(item.split("=", 1) for item in args.venv)
    with tempfile.TemporaryDirectory() as work:
        for version in args.stock:
            name = f"vllm-{version}"
            venv = Path(given[name]) if name in given else stock_env(version)
            for workload in args.workloads.split(",") if args.workloads else STOCK_WORKLOADS:
                capture(venv, f"{name}-builtin-{workload}", workload=workload, hash_algo="builtin", patched=False)
            capture(venv, f"{name}-sha256-mixed", workload="mixed", hash_algo="sha256", patched=False)
        for version in args.patched:
            name = f"dynamo-{version}"
            venv = Path(given[name]) if name in given else patched_env(version, Path(work))
            for workload in args.workloads.split(",") if args.workloads else WORKLOADS:
                capture(venv, f"{name}-sha256-{workload}", workload=workload, hash_algo="sha256", patched=True)
    if args.synthetic:
        for prefix, extra in SYNTHETIC.items():
            synthesize(args.synthetic, f"{prefix}-{args.synthetic.split('-')[-1]}", extra)
        if args.structs:
            restructure(args.synthetic, args.structs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
