"""The kv-routing contract end to end on real vLLM: dynamo-base 0.8.4 and stock 0.9.0, each engine in its own
process (vLLM's real scheduler, block pool and ZMQ publisher), `vpatch kv-watch --record` in another, judged
against each engine's own ground truth (what `vpatch conform 0.9.0 --against 0.8.4` runs, on one workload)."""

from __future__ import annotations

import pytest

from tests.harness import stock_env_of
from toolkit.contracts.run import run_contracts
from toolkit.contracts.sides import Side, parse_configs
from toolkit.records.conformance import WheelRef
from toolkit.records.contract import BuildSpec, decode_contract, encode_contract
from toolkit.records.status import Status

pytestmark = pytest.mark.real


def test_stock_090_meets_the_index_but_not_the_load_part_of_the_kv_routing_contract(
    repo_project, patched_env_084, tmp_path
) -> None:
    sides = [
        Side("old", BuildSpec("0.8.4", "dynamo-base"), patched_env_084, WheelRef("dynamo-base 0.8.4", "")),
        Side("new", BuildSpec("0.9.0", "stock"), stock_env_of(repo_project, "0.9.0"), WheelRef("stock 0.9.0", "")),
    ]
    # one configuration, both directions: for tcp://127.0.0.1:P dynamo-base binds (the consumer connects) and
    # stock 0.9.0 connects (the consumer binds). The other configurations run in `vpatch conform --against`.
    configs = parse_configs("loopback-builtin")
    results = run_contracts("vllm", sides, configs, ["kv-routing"], tmp_path, workloads=["preemption"])
    assert decode_contract(encode_contract(results)) == results
    runs = {run.name: run for run in results.runs}
    items = {name: {i.item: i for i in run.items} for name, run in runs.items()}
    old = items["old-loopback-builtin"]
    assert {i: r.status for i, r in old.items()} == {
        "cached-prefixes": Status.PASS,
        "overlap": Status.PASS,
        "load-figures": Status.PASS,
    }, runs["old-loopback-builtin"]
    old_run, stock_run = runs["old-loopback-builtin"], runs["new-loopback-builtin"]
    assert old_run.seen is not None and old_run.transport is not None
    assert old_run.seen.encodings.keys() == {"dynamo-maps"} and not old_run.transport.consumer_binds
    stock = items["new-loopback-builtin"]
    assert stock["cached-prefixes"].status == stock["overlap"].status == Status.PASS, stock_run
    assert stock["load-figures"].status == Status.NOT_PROVIDED
    assert "stock 0.9.0 publishes no load metrics" in stock["load-figures"].detail
    assert stock_run.seen is not None and stock_run.transport is not None
    assert stock_run.seen.encodings.keys() == {"upstream-arrays"} and stock_run.transport.consumer_binds
    assert not results.ok and results.lacking("kv-routing") == ["load-figures (not provided in new-loopback-builtin)"]
