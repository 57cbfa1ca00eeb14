"""The kv-routing series on real vLLM 0.8.4 code on CPU, against stock vLLM 0.8.4, over real ZMQ sockets.

The scenario runner (toolkit/serving/drivers/runner.py) drives vLLM's own V1 scheduler, KV-cache
manager and block pool in a venv holding the stock or the dynamo-base wheel, with a deterministic
fake model, over six workloads (shared-prefix chat, chunked prefill, preemption under memory
pressure, aborts, prefix-cache reset, mixed lengths).
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from toolkit.conformance.envs import read_trace, run_runner
from toolkit.conformance.suite import EVENTS_ON_FIELDS
from toolkit.envs import offline_env, venv_python
from toolkit.serving.drivers import driver_command, drivers_pythonpath
from toolkit.serving.kv.hashes import Vllm084BlockHasher, pickle_sha256
from toolkit.serving.kv.index import KVIndex
from toolkit.serving.kv.router import Router
from toolkit.serving.kv.subscriber import Subscriber
from toolkit.serving.kv.wire import EventBatch

pytestmark = [pytest.mark.real, pytest.mark.xdist_group("conform-084")]  # shares conform_084
EVENTS_NULL = {"enable_kv_cache_events": True, "publisher": "null"}
WORKLOADS = ["shared-prefix", "chunked-prefill", "preemption", "aborts", "prefix-reset", "mixed"]


def steps(trace: list[dict]) -> list[dict]:
    return [r for r in trace if not r.get("summary")]


def without_events(trace: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in EVENTS_ON_FIELDS} for r in trace]


# The three traces of the six workloads are the ones `vpatch conform 0.8.4` ran (tests/integration/conftest.py):
# stock, dynamo-base with its features off, and with KV events on (EVENTS_NULL); each is run once per suite.


@pytest.fixture(scope="module")
def stock_trace(conform_084) -> list[dict]:
    return conform_084.trace("stock")


@pytest.fixture(scope="module")
def events_trace(conform_084) -> list[dict]:
    return conform_084.trace("patched-events")


def test_workloads_exercise_what_they_claim(stock_trace):
    rows = steps(stock_trace)
    assert {r["workload"] for r in rows} == set(WORKLOADS)
    assert sum(len(r["preempted"]) for r in rows if r["workload"] == "preemption") > 0
    assert any(r["num_computed_on_admit"] and max(r["num_computed_on_admit"].values()) > 0 for r in rows)
    assert any(any(n < t for n, t in [(v, 192) for v in r["scheduled"].values()]) for r in rows)
    for summary in (r for r in stock_trace if r.get("summary")):
        # every block is back in the free pool at the end (the null block is never free)
        assert summary["num_free_blocks"] == summary["num_blocks"] - 1, summary["workload"]


def test_feature_off_is_stock_step_for_step(stock_trace, conform_084):
    patched = conform_084.trace("patched-off")
    assert len(patched) == len(stock_trace)
    for mine, theirs in zip(patched, stock_trace, strict=True):
        assert mine == theirs, (mine.get("workload"), mine.get("step"))


def test_events_on_do_not_change_scheduling_or_block_ids(stock_trace, events_trace):
    assert without_events(events_trace) == without_events(stock_trace)
    assert sum(len(r["events"]) for r in steps(events_trace)) > 50


def test_index_rebuilt_from_events_equals_the_cached_map_after_every_step(events_trace):
    index = KVIndex()
    kinds: set[str] = set()
    workload = None
    for row in steps(events_trace):
        if row["workload"] != workload:  # every workload starts a fresh engine
            workload, index = row["workload"], KVIndex()
        index.apply("w", _batch(row))
        kinds.update(e["type"] for e in row["events"])
        assert sorted(index.hashes("w")) == row["cached_hashes"], (row["workload"], row["step"])
    assert kinds == {"BlockStored", "BlockRemoved", "AllBlocksCleared"}


def _batch(row: dict) -> EventBatch:
    import msgspec

    return msgspec.convert(
        {"ts": 0.0, "seq": row["event_seq"] or 0, "events": row["events"], "metrics": None}, EventBatch
    )


def test_router_hashes_blocks_as_vllm_does_and_picks_the_worker_holding_the_prefix(events_trace):
    rows = steps(events_trace)
    index = KVIndex()
    for row in rows:
        if row["workload"] == "shared-prefix":
            index.apply("chat-worker", _batch(row))
        elif row["workload"] == "mixed":
            index.apply("other-worker", _batch(row))
    first = next(e for r in rows if r["workload"] == "shared-prefix" for e in r["events"] if e["type"] == "BlockStored")
    assert first["parent_block_hash"] is None
    hasher = Vllm084BlockHasher(16, hash_fn=pickle_sha256, none_hash=_sha256_none_hash())
    prompt = first["token_ids"] + [7, 7, 7]
    assert hasher(prompt)[: len(first["block_hashes"])] == first["block_hashes"]
    decision = Router(index, hasher).route(prompt)
    assert decision.worker == "chat-worker"
    assert decision.overlaps["chat-worker"] >= len(first["block_hashes"]) > 0
    assert decision.overlaps["other-worker"] == 0


def test_router_content_keys_work_with_vllms_default_builtin_hash(patched_env_084, tmp_path):
    """vLLM 0.8.4's default block hash cannot be recomputed outside the engine on Python 3.11 (it hashes
    None, whose hash is address-based); routing by the content keys the index derives from the events'
    token ids does not need it."""
    out = tmp_path / "builtin.jsonl"
    run_runner(patched_env_084, out, workloads=["shared-prefix", "mixed"], kv_events=EVENTS_NULL, hash_algo="builtin")
    rows = steps(read_trace(out))
    index = KVIndex()
    for row in rows:
        index.apply("chat-worker" if row["workload"] == "shared-prefix" else "other-worker", _batch(row))
    first = next(e for r in rows if r["workload"] == "shared-prefix" for e in r["events"] if e["type"] == "BlockStored")
    decision = Router(index).route(first["token_ids"] + [5] * 20)
    assert decision.worker == "chat-worker"
    assert decision.overlaps["chat-worker"] >= len(first["block_hashes"]) > 0
    assert decision.overlaps["other-worker"] == 0


def _sha256_none_hash() -> int:
    from toolkit.serving.kv.hashes import VLLM_084_NONE_HASH

    return VLLM_084_NONE_HASH


def _start_runner(venv: Path, out: Path, workload: str, ports: list[int], sentinel: Path) -> subprocess.Popen:
    config = {
        "enable_kv_cache_events": True,
        "endpoint": f"tcp://127.0.0.1:{ports[0]}",
        "replay_endpoint": f"tcp://127.0.0.1:{ports[1]}",
        "buffer_steps": 10000,
    }
    return run_runner(
        venv, out, workloads=[workload], kv_events=config, wait_for=sentinel, start_delay=1.5, background=True
    )


def _finished(trace: Path) -> bool:
    try:
        return trace.exists() and any(r.get("summary") for r in read_trace(trace))
    except ValueError:  # a line is still being written
        return False


def _per_seq_snapshots(subscriber: Subscriber) -> dict[int, frozenset]:
    snapshots: dict[int, frozenset] = {}
    original = subscriber.index.apply

    def recording(worker, batch, *, seq=None):
        original(worker, batch, seq=seq)
        snapshots[batch.seq if seq is None else seq] = subscriber.index.hashes(worker)

    subscriber.index.apply = recording
    return snapshots


@pytest.mark.parametrize("workload", ["preemption", "prefix-reset"])
def test_zmq_stream_late_joiner_and_dropped_batch_miss_nothing(patched_env_084, tmp_path, free_ports, workload):
    ports = free_ports(2)
    sentinel = tmp_path / "done"
    out = tmp_path / "trace.jsonl"
    endpoint, replay = f"tcp://127.0.0.1:{ports[0]}", f"tcp://127.0.0.1:{ports[1]}"
    proc = _start_runner(patched_env_084, out, workload, ports, sentinel)
    try:
        # One subscriber is there from the start and loses one batch on the way ...
        early = Subscriber(endpoint, replay, worker="early")
        early_snapshots = _per_seq_snapshots(early)
        dropped: list[int] = []
        original_on_stream = early._on_stream

        def lossy(frames):
            if not dropped and int.from_bytes(frames[1], "big") == 3:
                dropped.append(3)
                return 0
            return original_on_stream(frames)

        early._on_stream = lossy
        deadline = time.monotonic() + 300
        while not _finished(out) and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"runner exited early: {proc.stderr.read() if proc.stderr else ''}")
            early.poll(50)
        rows = steps(read_trace(out))
        last_seq = max(r["event_seq"] for r in rows)
        assert early.drain(last_seq, timeout_s=30), json.dumps(early.summary(), default=str)
        # ... and one joins after the engine has published everything.
        late = Subscriber(endpoint, replay, worker="late")
        late_snapshots = _per_seq_snapshots(late)
        late.catch_up()
        assert late.drain(last_seq, timeout_s=30)
    finally:
        sentinel.touch()
        proc.wait(timeout=60)
    assert dropped == [3] and early.replayed > 0
    for subscriber, snapshots in ((early, early_snapshots), (late, late_snapshots)):
        assert subscriber.unrecoverable == [] and not subscriber.stale
        for row in rows:
            assert sorted(snapshots[row["event_seq"]]) == row["cached_hashes"], (subscriber.worker, row["step"])
    early.close()
    late.close()


def _probe(venv: Path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv_python(venv)), "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=drivers_pythonpath(offline_env()),
        timeout=300,
    )


ENGINE_PROBE = """
import json, os, tempfile, threading
import psutil
import fake_engine
fake_engine.use_cpu_platform()
model_dir = tempfile.mkdtemp()
json.dump(fake_engine.MODEL_CONFIG, open(os.path.join(model_dir, "config.json"), "w"))
engine = fake_engine.Engine(num_blocks=16, max_num_seqs=2, max_batched=64, kv_events=KV_EVENTS, model_dir=model_dir,
                       hash_algo="sha256")
listening = sorted(c.laddr.port for c in psutil.Process().net_connections("tcp") if c.status == "LISTEN")
print(json.dumps({"publisher": type(getattr(engine.scheduler, "kv_event_publisher", None)).__name__,
                  "threads": sorted(t.name for t in threading.enumerate()), "listening": listening}))
engine.shutdown()
"""


def test_feature_off_opens_no_sockets_and_starts_no_thread(patched_env_084, free_ports):
    off = _probe(patched_env_084, ENGINE_PROBE.replace("KV_EVENTS", "None"))
    assert off.returncode == 0, off.stderr
    result = json.loads(off.stdout.strip().splitlines()[-1])
    assert result["publisher"] == "NoneType" and result["listening"] == []
    assert "kv-event-publisher" not in result["threads"]
    (port,) = free_ports(1)
    config = {"enable_kv_cache_events": True, "endpoint": f"tcp://127.0.0.1:{port}"}
    on = _probe(patched_env_084, ENGINE_PROBE.replace("KV_EVENTS", repr(config).replace("True", "True")))
    assert on.returncode == 0, on.stderr
    result = json.loads(on.stdout.strip().splitlines()[-1])
    assert result["publisher"] == "ZmqEventPublisher" and port in result["listening"]
    assert "kv-event-publisher" in result["threads"]


BAD_CONFIGS = [
    ('{"enable_kv_cache_events": true, "buffer_steps": -1}', "'buffer_steps' must be a positive integer"),
    ('{"enable_kv_cache_events": true, "endpoint": "http://x"}', "'endpoint' must be a ZMQ endpoint"),
    ('{"enable_kv_cache_events": true, "publishr": "zmq"}', "unknown key(s) publishr"),
    ('{"enable_kv_cache_events": "yes"}', "'enable_kv_cache_events' must be true or false"),
    ("not json", "kv-events-config is not valid JSON"),
]
GOOD_CONFIG = '{"enable_kv_cache_events": true, "topic": "w7"}'
PARSE_PROBE = """
import contextlib, io, json, sys
from vllm.engine.arg_utils import EngineArgs
from vllm.utils import FlexibleArgumentParser
results = {}
for value in VALUES:  # each parsed as `vllm serve --kv-events-config VALUE` parses it
    parser = EngineArgs.add_cli_args(FlexibleArgumentParser())
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parser.parse_args(["--kv-events-config", value])
    except SystemExit as exit:  # argparse's error(): the status the process would exit with, and its message
        results[value] = {"status": exit.code, "stderr": err.getvalue()}
    else:
        results[value] = {"status": 0, "config": str(EngineArgs.from_cli_args(args).kv_events_config)}
print("VPATCH-RESULT " + json.dumps(results))
"""


@pytest.fixture(scope="module")
def parsed_configs(patched_env_084) -> dict[str, dict]:
    """Every config below parsed by vLLM's own argument parser in one dynamo-base 0.8.4 process (one import)."""
    values = [value for value, _ in BAD_CONFIGS] + [GOOD_CONFIG]
    proc = _probe(patched_env_084, PARSE_PROBE.replace("VALUES", repr(values)))
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("VPATCH-RESULT ")), None)
    assert proc.returncode == 0 and line is not None, proc.stderr[-3000:]
    return json.loads(line.removeprefix("VPATCH-RESULT "))


@pytest.mark.parametrize(("value", "message"), BAD_CONFIGS)
def test_bad_kv_events_config_fails_at_start_up(parsed_configs, value, message):
    result = parsed_configs[value]
    assert result["status"] == 2
    assert message in result["stderr"].strip().splitlines()[-1]


def test_good_kv_events_config_reaches_the_engine_config(parsed_configs):
    result = parsed_configs[GOOD_CONFIG]
    assert result["status"] == 0, result
    assert "enable_kv_cache_events=True" in result["config"] and "topic='w7'" in result["config"]


def test_publisher_carries_100k_events_per_second_through_a_real_socket(patched_env_084, free_ports):
    """100 batches/s of 1000 events through the real PUB socket to a subscriber: nothing dropped or lost.

    How long publish() takes inside the step is measured by bench/kv_events_overhead.py, not asserted here.
    """
    (port,) = free_ports(1)
    request = {
        "mode": "throughput",
        "events": 1000,
        "batches": 100,
        "rate": 100_000,
        "endpoint": f"tcp://127.0.0.1:{port}",
    }
    proc = subprocess.run(
        driver_command(venv_python(patched_env_084), "kvload", json.dumps(request)),
        capture_output=True,
        text=True,
        env=offline_env(),
        timeout=300,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("VPATCH-BENCH ")), None)
    assert proc.returncode == 0 and line is not None, proc.stderr[-2000:]
    result = json.loads(line.removeprefix("VPATCH-BENCH "))
    assert result["events_sent"] == 100_000
    assert result["dropped_batches"] == 0
    assert result["received_events"] == result["events_sent"]
