"""The consumer's side of the plugin's load metrics (toolkit/serving/kv/load.py): messages made by the plugin's
own encoder (toolkit/serving/plugin/dynamo_base_plugin/publisher.py, which needs no vLLM), sent from a peer
process over real ZMQ, followed by kv-watch and the Router together with a stock worker's KV events."""

from __future__ import annotations

import json

import msgspec
import pytest

from tests.unit.serving.kv.test_kv_consumer import DEEP, FIXTURES, dynamo, expected, peers, write_frames  # noqa: F401 (fixture)
from toolkit.cli import main as vpatch_main
from toolkit.serving.kv.index import KVIndex
from toolkit.serving.kv.load import PLUGIN_LOAD, decode_load
from toolkit.serving.kv.router import Router
from toolkit.serving.kv.wire import UPSTREAM_ARRAYS, Metrics, WireError, decode
from toolkit.serving.plugin.dynamo_base_plugin.publisher import encode_message, endpoint_for_engine


def figures(running: int, waiting: int, usage: float, queries: int = 0, hits: int = 0) -> dict:
    return {
        "num_running": running,
        "num_waiting": waiting,
        "kv_cache_usage": usage,
        "prefix_cache_queries": queries,
        "prefix_cache_hits": hits,
        "prefix_cache_hit_rate": hits / queries if queries else 0.0,
        "prefix_cache_unit": "tokens",
    }


def test_the_plugins_message_decodes_and_is_never_taken_for_a_kv_batch() -> None:
    payload = encode_message(7, 1, figures(3, 2, 0.5, 100, 40), ts=12.5)
    report = decode_load(payload)
    assert (report.seq, report.engine_index, report.ts, report.unit, report.source) == (
        7,
        1,
        12.5,
        "tokens",
        "dynamo-base-plugin",
    )
    assert report.metrics == Metrics(3, 2, 0.5, 100, 40, 0.4)
    later = msgspec.msgpack.encode({**msgspec.msgpack.decode(payload), "num_preempted": 4})  # a field added later
    assert decode_load(later).metrics == report.metrics
    assert report.step == 7  # sent with every step: the step is the seq
    assert decode_load(encode_message(8, 1, figures(3, 2, 0.5, 100, 40), step=30, ts=13.0)).step == 30
    without = msgspec.msgpack.decode(payload)
    del without["step"]  # a plugin from before `step`: one message per step, so the seq is the step
    assert decode_load(msgspec.msgpack.encode(without)).step == 7
    with pytest.raises(WireError):
        decode(payload)  # a KV-event subscriber pointed at the load endpoint reports decode errors, no more
    for wrong in (dynamo(0, 1), b"\x93\x01\x02\x03", DEEP, b""):
        with pytest.raises(WireError):
            decode_load(wrong)


def test_data_parallel_engines_get_their_own_port() -> None:
    assert endpoint_for_engine("tcp://*:5559", 0) == "tcp://*:5559"
    assert endpoint_for_engine("tcp://*:5559", 2) == "tcp://*:5561"
    assert endpoint_for_engine("ipc:///tmp/load", 1) == "ipc:///tmp/load-1"
    with pytest.raises(ValueError, match="has no port"):
        endpoint_for_engine("tcp://host", 1)


def test_the_router_weighs_plugin_load_like_dynamo_base_metrics() -> None:
    index = KVIndex()
    index.set_metrics("busy", Metrics(8, 5, 0.9, 0, 0, 0.0), 1.0, unit="tokens", source=PLUGIN_LOAD)
    index.set_metrics("idle", Metrics(1, 0, 0.1, 0, 0, 0.0), 1.0, unit="tokens", source=PLUGIN_LOAD)
    decision = Router(index).route(list(range(64)))
    assert decision.worker == "idle" and [s.num_waiting for s in decision.ranking] == [0, 5]


def test_kv_watch_follows_a_stock_worker_and_its_plugin_endpoint(peers, tmp_path, capsys) -> None:  # noqa: F811
    name = "vllm-0.9.0-builtin-preemption"
    kv = peers(FIXTURES / f"{name}.frames.jsonl", "--delay", "1.0")
    frames = [(s, encode_message(s, 0, figures(s, 4 - s, s / 10, 32 * s, 16 * s))) for s in range(4)]
    frames += [(4, b"\xc1 not msgpack"), (0, encode_message(0, 0, figures(1, 1, 0.05, 32, 0)))]  # bad, restart
    load = peers(write_frames(tmp_path / "load.jsonl", frames), "--delay", "1.0", replay=False)
    argv = ["kv-watch", kv.pub, "--replay", kv.replay, "--metrics", load.pub, "--worker", "stock"]
    assert vpatch_main([*argv, "--seconds", "2.5", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["encoding"] == UPSTREAM_ARRAYS and summary["hashes_cached"] == len(expected(name))
    assert summary["metrics"] == msgspec.to_builtins(Metrics(1, 1, 0.05, 32, 0, 0.0))  # the newest message
    assert (summary["metrics_unit"], summary["metrics_source"]) == ("tokens", PLUGIN_LOAD)
    load_summary = summary["load"]
    assert (load_summary["applied"], load_summary["decode_errors"], load_summary["restarts"]) == (5, 1, 1)
    assert summary["problems"] == []


def test_kv_watch_says_when_the_plugin_endpoint_is_silent(peers, tmp_path, capsys) -> None:  # noqa: F811
    kv = peers(FIXTURES / "vllm-0.9.0-builtin-mixed.frames.jsonl", "--delay", "0.5")
    silent = peers(write_frames(tmp_path / "none.jsonl", []), replay=False)
    assert (
        vpatch_main(["kv-watch", kv.pub, "--replay", kv.replay, "--metrics", silent.pub, "--seconds", "1.5", "--json"])
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["metrics"] is None
    assert summary["problems"] == [f"w0: no load messages received from {silent.pub}"]
