"""Stock vLLM 0.9.0 + the dynamo-base plugin, end to end: the plugin wheel built by vpatch and pip-installed
into a real venv beside stock vLLM; the engine (vLLM's real scheduler, block pool and KV-event publisher,
the fake-model runner) in its own process, loading the plugin through vLLM's general-plugin entry point and
feeding its stat loggers as AsyncLLM does; the project's consumer in this process, over real ZMQ sockets,
with the KV events and the load of one worker in one index. Every load figure that arrives must equal the
engine's own scheduler stats of that step (the trace)."""

from __future__ import annotations

import time
from bisect import bisect_right
from pathlib import Path

import pytest

from tests.harness import stock_env_of
from toolkit.conformance.envs import read_trace, run_runner
from toolkit.envs import create_venv, install, layer_on, runtime_env
from toolkit.plugin.build import build_plugin
from toolkit.serving.kv.index import KVIndex
from toolkit.serving.kv.load import PLUGIN_LOAD, LoadReport
from toolkit.serving.kv.router import Router
from toolkit.serving.kv.subscriber import Subscriber
from toolkit.serving.kv.wire import UPSTREAM_ARRAYS

pytestmark = pytest.mark.real
WORKLOAD = "preemption"  # waiting requests, preemptions, a shared prefix: every figure moves


def _finished(trace: Path) -> bool:
    try:
        return trace.exists() and any(r.get("summary") for r in read_trace(trace))
    except ValueError:  # a line is still being written
        return False


def test_stock_090_with_the_plugin_publishes_the_engines_own_load(repo_project, tmp_path, free_ports) -> None:
    cache = repo_project.options.cache_dir
    wheel = build_plugin(repo_project, "0.9.0", tmp_path / "dist").path
    venv = create_venv(tmp_path / "stock-plugin")
    layer_on(venv, stock_env_of(repo_project, "0.9.0"), runtime_env(cache))  # stock vLLM 0.9.0 and its runtime
    install(venv, [str(wheel)], installer="pip")  # its Requires-Dist resolve to what is there: nothing fetched

    kv_pub, load_pub = (f"tcp://127.0.0.1:{p}" for p in free_ports(2))
    trace, sentinel = tmp_path / "trace.jsonl", tmp_path / "done"
    index = KVIndex()
    reports: list[LoadReport] = []
    # 0.9.0 connects its PUB socket to a tcp://127.0.0.1 endpoint, so the KV-event side binds; the plugin binds.
    sub = Subscriber(kv_pub, worker="stock", index=index, bind=True, metrics_endpoint=load_pub)
    assert sub.load is not None
    sub.load.on_report = reports.append
    proc = run_runner(
        venv,
        trace,
        workloads=[WORKLOAD],
        kv_events={"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": kv_pub},
        hash_algo="builtin",  # 0.9.0 cannot publish sha256 hashes (docs/kv-events.md)
        wait_for=sentinel,
        start_delay=2.0,
        background=True,
        stat_loggers=True,
        extra_env={"DYNAMO_LOAD_METRICS_ENDPOINT": load_pub},
    )
    try:
        deadline = time.monotonic() + 300
        while not _finished(trace) and time.monotonic() < deadline:
            if proc.poll() is not None and not _finished(trace):
                raise AssertionError(f"runner exited early: {proc.stderr.read() if proc.stderr else ''}")
            sub.poll(25)
        settle = time.monotonic() + 1.5
        while time.monotonic() < settle:
            sub.poll(25)
    finally:
        sentinel.touch()
        proc.wait(timeout=120)
        sub.close()

    steps = [r for r in read_trace(trace) if not r.get("summary")]
    assert steps and all(r["scheduler_stats"] is not None for r in steps)
    # one message per step that changed the figures, none lost, in order; after every step the newest one
    # (the greatest `step` up to it) holds that step's figures
    assert [r.seq for r in reports] == list(range(len(reports))) and reports, sub.load.summary()
    carried = [r.step for r in reports]
    assert carried[0] == 0 and carried == sorted(set(carried)) and carried[-1] < len(steps)
    queries = hits = 0
    for number, step in enumerate(steps):
        report = reports[bisect_right(carried, number) - 1]
        stats = step["scheduler_stats"]
        queries += stats["prefix_queries"]
        hits += stats["prefix_hits"]
        got = report.metrics
        assert (got.num_running, got.num_waiting, got.kv_cache_usage) == (
            stats["num_running_reqs"],
            stats["num_waiting_reqs"],
            stats["gpu_cache_usage"],
        ), f"step {step['step']}"
        assert (got.prefix_cache_queries, got.prefix_cache_hits) == (queries, hits), f"step {step['step']}"
        assert got.prefix_cache_hit_rate == (hits / queries if queries else 0.0)
        assert report.unit == "tokens" and report.source == "dynamo-base-plugin"
    # the workload really loads the engine: requests wait, the cache fills, the shared prefix hits
    assert max(r.metrics.num_waiting for r in reports) > 0
    assert max(r.metrics.kv_cache_usage for r in reports) > 0.5
    assert reports[-1].metrics.prefix_cache_hits > 0

    # one worker, both halves: stock vLLM's own events and the plugin's load, as the router weighs them
    state = index.state("stock")
    assert state.encodings.get(UPSTREAM_ARRAYS, 0) > 0 and state.metrics_source == PLUGIN_LOAD
    assert state.metrics == reports[-1].metrics
    ranking = Router(index).route(list(range(64))).ranking
    assert [(s.worker, s.kv_cache_usage, s.num_waiting) for s in ranking] == [
        ("stock", reports[-1].metrics.kv_cache_usage, reports[-1].metrics.num_waiting)
    ]
