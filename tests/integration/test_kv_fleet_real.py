"""A mixed fleet on real vLLM code: a dynamo-base 0.8.4 engine and a stock vLLM 0.9.0 engine (each its own
process, vLLM's real scheduler, block pool and ZMQ publisher) followed by one Subscriber set on one index.

The stock engine's endpoint is `tcp://127.0.0.1:P`, for which 0.9.0 connects its PUB socket instead of binding
it, so its Subscriber binds (what `vpatch kv-watch --bind` does)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.harness import stock_env_of
from toolkit.conformance.envs import read_trace, run_runner
from toolkit.serving.kv.index import KVIndex
from toolkit.serving.kv.subscriber import Subscriber
from toolkit.serving.kv.wire import DYNAMO_MAPS, UPSTREAM_ARRAYS

pytestmark = pytest.mark.real
WORKLOAD = "preemption"


@pytest.fixture(scope="module")
def stock_env_090(repo_project) -> Path:
    return stock_env_of(repo_project, "0.9.0")


def _finished(trace: Path) -> bool:
    try:
        return trace.exists() and any(r.get("summary") for r in read_trace(trace))
    except ValueError:  # a line is still being written
        return False


def test_dynamo_base_and_stock_090_workers_at_once(patched_env_084, stock_env_090, tmp_path, free_ports) -> None:
    dyn_pub, dyn_replay, stock_pub = (f"tcp://127.0.0.1:{p}" for p in free_ports(3))
    sentinel = tmp_path / "done"
    traces = {"dynamo": tmp_path / "dynamo.jsonl", "stock": tmp_path / "stock.jsonl"}
    index = KVIndex()
    subs = {
        "dynamo": Subscriber(dyn_pub, dyn_replay, worker="dynamo", index=index),
        "stock": Subscriber(stock_pub, worker="stock", index=index, bind=True),
    }
    configs = {
        "dynamo": {"enable_kv_cache_events": True, "endpoint": dyn_pub, "replay_endpoint": dyn_replay},
        "stock": {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": stock_pub},
    }
    envs = {"dynamo": patched_env_084, "stock": stock_env_090}
    # 0.9.0 cannot publish sha256 hashes at all (OverflowError in its publisher thread, docs/kv-events.md)
    algos = {"dynamo": "sha256", "stock": "builtin"}
    procs = {
        w: run_runner(
            envs[w],
            traces[w],
            workloads=[WORKLOAD],
            kv_events=configs[w],
            hash_algo=algos[w],
            wait_for=sentinel,
            start_delay=2.0,
            background=True,
        )
        for w in subs
    }
    try:
        deadline = time.monotonic() + 600
        while not all(_finished(t) for t in traces.values()) and time.monotonic() < deadline:
            for worker, proc in procs.items():
                if proc.poll() is not None and not _finished(traces[worker]):
                    raise AssertionError(f"{worker} runner exited early: {proc.stderr.read() if proc.stderr else ''}")
            for sub in subs.values():
                sub.poll(25)
        settle = time.monotonic() + 3
        while time.monotonic() < settle:
            for sub in subs.values():
                sub.poll(25)
    finally:
        sentinel.touch()
        for proc in procs.values():
            proc.wait(timeout=120)
    for worker, sub in subs.items():
        rows = [r for r in read_trace(traces[worker]) if not r.get("summary")]
        summary = sub.summary()
        assert summary["decode_errors"] == 0 and not summary["stale"], summary
        assert sorted(index.hashes(worker)) == rows[-1]["cached_hashes"], worker
        sub.close()
    assert index.encoding("dynamo") == DYNAMO_MAPS and index.encoding("stock") == UPSTREAM_ARRAYS
    assert index.metrics("dynamo") is not None and index.metrics("stock") is None
