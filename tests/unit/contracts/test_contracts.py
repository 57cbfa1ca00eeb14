"""Feature contracts: the kv-routing judge over synthetic observations, the records, the P/D mapping."""

from __future__ import annotations

import pytest

from tests.harness.paths import REPO_ROOT
from toolkit.conformance.checks import CheckResult
from toolkit.contracts import kv, pd
from toolkit.contracts.sides import consumer_binds, consumer_endpoint, events_config, parse_configs
from toolkit.errors import VpatchError
from toolkit.records.codec import RecordError
from toolkit.records.contract import (
    BuildSpec,
    ConfigRun,
    ContractResults,
    ItemResult,
    Observation,
    decode_contract,
    decode_observations,
    encode_contract,
    encode_observation,
)
from toolkit.records.status import Status

LOAD = {"num_running": 1, "num_waiting": 0, "kv_cache_usage": 0.25, "prefix_cache_hit_rate": 0.5}


def row(step: int, published: int, cached: list[int], overlap: int, workload: str = "w") -> dict:
    return {
        "workload": workload,
        "step": step,
        "published": published,
        "cached_hashes": cached,
        "probe_overlap": {f"{workload}/p": overlap},
        "load": dict(LOAD),
    }


def seen(seq: int, hashes: list[int], overlap: int, *, epoch: int = 0, metrics: dict | None = None, p: str = "w/p"):
    return Observation("new", epoch, seq, seq + 1, hashes, {p: overlap}, metrics=metrics)


TRACE = [row(0, 1, [1, 2], 2), row(1, 1, [1, 2], 2), row(2, 2, [1], 1), row(3, 2, [1], 1)]


def statuses(results: list[ItemResult]) -> dict[str, Status]:
    return {r.item: r.status for r in results}


def test_a_consumer_that_matches_the_engine_passes_and_load_is_not_provided_without_metrics():
    results = kv.judge("stock 9.9", TRACE, [seen(0, [1, 2], 2), seen(1, [1], 1)])
    assert statuses(results) == {"cached-prefixes": "pass", "overlap": "pass", "load-figures": "not-provided"}
    assert "4 steps" in results[0].detail
    assert "stock 9.9 publishes no load metrics" in results[2].detail


def test_a_stale_hash_fails_with_the_step_and_the_hash_in_the_diff():
    results = kv.judge("stock 9.9", TRACE, [seen(0, [1, 2], 2), seen(1, [1, 2], 1)])  # removal not applied
    index = results[0]
    assert index.status == Status.FAIL and "2 of 4 steps" in index.detail
    assert (
        index.diff.splitlines()[0] == "w step 2: consumer holds 2, engine caches 1 (only consumer: 2; only engine: -)"
    )
    assert results[1].status == Status.PASS  # the router's overlap was still right


def test_load_figures_are_compared_step_by_step_with_the_scheduler():
    good = kv.judge("dynamo-base 9.8", TRACE, [seen(0, [1, 2], 2, metrics=LOAD), seen(1, [1], 1, metrics=LOAD)])
    assert statuses(good)["load-figures"] == Status.PASS
    wrong = dict(LOAD, num_waiting=3)
    bad = kv.judge("dynamo-base 9.8", TRACE, [seen(0, [1, 2], 2, metrics=LOAD), seen(1, [1], 1, metrics=wrong)])
    item = next(r for r in bad if r.item == "load-figures")
    assert item.status == Status.FAIL and "num_waiting 3 != 0" in item.diff


def test_a_consumer_that_received_nothing_fails_every_item():
    results = kv.judge("stock 9.9", TRACE, [])
    assert set(statuses(results).values()) == {Status.FAIL}
    assert "applied no batch at all" in results[0].detail
    assert "router overlap None" in results[1].diff


def test_a_batch_passed_over_by_one_replay_answer_is_counted_not_judged():
    # the consumer applied seq 1 together with seq 0 (one replay answer): only the state after 1 is known
    trace = [row(0, 1, [1, 2], 2), row(1, 2, [1], 1)]
    observations = [Observation("new", 0, 1, 2, [1], {"w/p": 1})]
    results = kv.judge("x", trace, observations)
    assert results[0].status == Status.PASS and "1 passed over by replay" in results[0].detail


def test_each_workload_is_one_engine_epoch():
    trace = [row(0, 1, [1], 1, "a"), row(0, 1, [7], 1, "b")]
    observations = [seen(0, [1], 1, p="a/p"), seen(0, [7], 1, epoch=1, p="b/p")]
    assert statuses(kv.judge("x", trace, observations))["cached-prefixes"] == Status.PASS
    # the second engine's batch read as the first's (no restart seen): the index keeps the dead engine's hash
    assert statuses(kv.judge("x", trace, observations[:1]))["cached-prefixes"] == Status.FAIL


def test_contract_results_round_trip_and_say_what_the_new_side_lacks():
    new, old = BuildSpec("0.9.0", "stock"), BuildSpec("0.8.4", "dynamo-base")
    runs = [
        ConfigRun("new-bind-builtin", "new", new, None, kv.judge("stock 0.9.0", TRACE, [seen(0, [1, 2], 2)])),
        ConfigRun("old-bind-builtin", "old", old, None, [ItemResult("kv-routing", "overlap", Status.PASS)]),
    ]
    results = ContractResults("vllm", new, old, ["kv-routing"], "kv-watch", runs, ok=False)
    text = encode_contract(results)
    again = decode_contract(text)
    assert encode_contract(again) == text and again.runs[0].items[0].status is Status.FAIL
    assert not again.feature_passes("kv-routing") and again.feature_passes("kv-routing", side="old")
    assert again.lacking("kv-routing")[-1] == "load-figures (not provided in new-bind-builtin)"
    with pytest.raises(RecordError, match="unsupported schema 1"):
        decode_contract(text.replace('"schema": 2', '"schema": 1'))


def test_bad_records_are_refused_by_field():
    with pytest.raises(ValueError, match="needs the plugin's wheel"):
        BuildSpec("0.9.0", "stock+plugin")
    with pytest.raises(ValueError, match="unknown status 'skipped'"):
        ItemResult("kv-routing", "overlap", Status.SKIPPED)
    line = encode_observation(seen(0, [1], 1))
    assert [o.hashes for o in decode_observations(line + line[:10])] == [[1]]  # a cut last line is dropped
    with pytest.raises(RecordError):
        decode_observations(b"{}\n")


def test_who_binds_follows_each_build():
    assert not consumer_binds("dynamo-base", "tcp://127.0.0.1:5557")
    assert consumer_binds("stock", "tcp://127.0.0.1:5557") and not consumer_binds("stock", "tcp://*:5557")
    assert consumer_endpoint("tcp://*:5557") == "tcp://127.0.0.1:5557"
    assert events_config("stock+plugin", "e", "r")["publisher"] == "zmq"
    assert "publisher" not in events_config("dynamo-base", "e", "r")
    assert [c.name for c in parse_configs("loopback-sha256")] == ["loopback-sha256"]
    with pytest.raises(VpatchError, match="unknown transport configuration"):
        parse_configs("tcp-md5")


def test_pd_checks_map_to_items_and_a_build_without_transport_provides_none():
    items = pd.items_from_checks(
        [
            CheckResult("pd-disagg-outputs", Status.FAIL, "1 request(s) differ", "r0: [1] != [2]"),
            CheckResult("pd-nixl-transport", Status.NOT_APPLICABLE, "nixl is not importable here"),
        ]
    )
    assert [(i.item, i.status) for i in items] == [
        ("decode-equals-aggregated", Status.FAIL),
        ("nixl-transport", Status.NOT_PROVIDED),
    ]
    missing = pd.not_provided("stock 0.9.0", "unknown connector SharedStorageConnectorV1")
    assert {i.status for i in missing} == {Status.NOT_PROVIDED} and len(missing) == len(pd.ITEMS)
    assert missing[0].detail.startswith("stock 0.9.0 has no CPU P/D transport")


def test_old_defaults_to_the_last_release_that_carried_the_feature():

    from toolkit.contracts.conform import default_old, parse_features
    from toolkit.options import load_options
    from toolkit.project import Project

    project = Project.load(load_options({"root": str(REPO_ROOT)}))
    new = project.pins.get("0.9.0")
    assert str(default_old(project, new, "kv-routing").version) == "0.8.5"  # 0.9.0 retired it
    with pytest.raises(VpatchError, match=r"no pinned release before 0\.8\.4 carries kv-routing"):
        default_old(project, project.pins.get("0.8.4"), "kv-routing")
    assert parse_features("pd-disagg, kv-routing") == ["pd-disagg", "kv-routing"]


# -- stock + plugin: the load figures arrive on the plugin's own endpoint (a plugin before `step`: one message per step)


def plugin_trace() -> list[dict]:
    """Two workloads (two engines, each with its own plugin seqs from 0); steps 0-1 made stats, step 2 none."""
    rows = []
    for workload in ("w", "v"):
        for step, handed in enumerate((1, 2, 2)):
            r = row(step, 1, [1], 1, workload)
            r["stats_handed"] = handed
            r["load"] = dict(LOAD, num_running=step) if step < 2 else dict(LOAD, num_running=1)
            rows.append(r)
    return rows


def load_seen(epoch: int, seq: int, metrics: dict | None) -> Observation:
    return Observation("new", epoch, seq, 0, [], {}, metrics=metrics, stream="load")


def plugin_observations(skip: tuple[int, int] | None = None, off: tuple[int, int] | None = None) -> list[Observation]:
    out = [seen(0, [1], 1, p="w/p"), seen(0, [1], 1, epoch=1, p="v/p")]
    for epoch in (0, 1):
        for seq in (0, 1):
            if (epoch, seq) == skip:
                continue
            figures = dict(LOAD, num_running=seq)
            if (epoch, seq) == off:
                figures["kv_cache_usage"] = 0.75
            out.append(load_seen(epoch, seq, figures))
    return out


def test_plugin_load_messages_are_judged_per_step_apart_from_the_event_batches():
    trace = plugin_trace()
    results = kv.judge("stock+plugin 9.9", trace, plugin_observations(), load_endpoint="tcp://*:5559")
    assert statuses(results) == {"cached-prefixes": "pass", "overlap": "pass", "load-figures": "pass"}, results
    load = results[2]
    assert load.detail.startswith("6 steps:") and "in 4 LoadMetrics messages on tcp://*:5559" in load.detail
    # the figures in event batches do not count for the plugin side: only its own stream does
    assert kv.judge("stock+plugin 9.9", trace, plugin_observations()[:2], load_endpoint="tcp://*:5559")[2].status == (
        Status.NOT_PROVIDED
    )


def test_plugin_figures_that_are_off_or_missing_fail_with_the_step():
    trace = plugin_trace()
    off = kv.judge("stock+plugin 9.9", trace, plugin_observations(off=(1, 1)), load_endpoint="tcp://*:5559")[2]
    assert off.status == Status.FAIL and "2 of 6 steps" in off.detail  # step 1 and step 2 (no new stats) of v
    assert off.diff.splitlines()[0] == "v step 1: kv_cache_usage 0.75 != 0.25"
    lost = kv.judge("stock+plugin 9.9", trace, plugin_observations(skip=(0, 0)), load_endpoint="tcp://*:5559")[2]
    assert lost.status == Status.FAIL
    first = lost.diff.splitlines()[0]
    assert first.startswith("w step 0: the message of stats 0 never reached the consumer (scheduler: ")


def changes_trace(running: tuple[int, ...]) -> list[dict]:
    """One workload whose steps each made stats, with these running counts (the rest of LOAD unchanged)."""
    rows = []
    for step, count in enumerate(running):
        r = row(step, 1, [1], 1)
        r["stats_handed"] = step + 1
        r["load"] = dict(LOAD, num_running=count)
        rows.append(r)
    return rows


def sent(seq: int, step: int, running: int) -> Observation:
    return Observation("new", 0, seq, 0, [], {}, metrics=dict(LOAD, num_running=running), stream="load", step=step)


def test_a_plugin_that_sends_only_changed_figures_is_judged_by_its_newest_message_at_each_step():
    trace = changes_trace((0, 1, 1, 1, 2, 2))
    only_changes = [seen(0, [1], 1), sent(0, 0, 0), sent(1, 1, 1), sent(2, 4, 2)]
    item = kv.judge("stock+plugin 9.9", trace, only_changes, load_endpoint="tcp://*:5559")[2]
    assert item.status == Status.PASS, item.diff
    assert item.detail.startswith("6 steps:") and "in 3 LoadMetrics messages" in item.detail
    # the change of step 4 not sent: steps 4 and 5 hold step 1's figures
    unsent = kv.judge("stock+plugin 9.9", trace, only_changes[:3], load_endpoint="tcp://*:5559")[2]
    assert unsent.status == Status.FAIL and "2 of 6 steps" in unsent.detail
    assert unsent.diff.splitlines() == ["w step 4: num_running 1 != 2", "w step 5: num_running 1 != 2"]
    # a message sent a step late counts for the step it says it carries, not the one before
    late = kv.judge("stock+plugin 9.9", trace, [*only_changes[:3], sent(2, 5, 2)], load_endpoint="tcp://*:5559")[2]
    assert late.status == Status.FAIL and late.diff.splitlines() == ["w step 4: num_running 1 != 2"]


def test_a_plugin_side_whose_endpoint_stays_silent_does_not_provide_the_figures_and_says_where():
    events_only = plugin_observations()[:2]
    item = kv.judge("stock+plugin 9.9", plugin_trace(), events_only, load_endpoint="tcp://*:5559")[2]
    assert item.status == Status.NOT_PROVIDED
    assert "no LoadMetrics message arrived on the plugin endpoint tcp://*:5559 in 6 steps" in item.detail
    assert item.diff.count("never reached the consumer") == 6


def test_observations_of_both_streams_round_trip_and_old_lines_are_events():
    lines = encode_observation(load_seen(1, 4, dict(LOAD))) + b'{"worker":"w","epoch":0,"seq":0,"batches":1,'
    lines += b'"hashes":[],"overlaps":{}}\n'
    load, event = decode_observations(lines)
    assert (load.stream, load.seq, load.epoch, event.stream) == ("load", 4, 1, "events")


def test_the_plugin_evidence_file_is_named_apart_and_a_plugin_wheel_needs_the_plugin_kind():

    from tests.harness import run_vpatch
    from toolkit.contracts.run import evidence_name

    new = BuildSpec("0.9.0", "stock+plugin", ("p.whl",))
    assert evidence_name("vllm", new, BuildSpec("0.8.4", "dynamo-base")) == "vllm-0.9.0+plugin-against-0.8.4.json"
    assert evidence_name("vllm", BuildSpec("0.9.0", "stock"), BuildSpec("0.8.4", "dynamo-base")) == (
        "vllm-0.9.0-against-0.8.4.json"
    )
    root = REPO_ROOT
    proc = run_vpatch(root, "conform", "0.9.0", "--against", "0.8.4", "--plugin-wheel", "x.whl", expect=1)
    assert proc.stderr.strip().endswith("--plugin-wheel needs --new-kind stock+plugin"), proc.stderr


def test_figures_are_compared_with_the_old_build_only_where_both_scheduled_alike():
    old = [dict(row(s, 1, [1], 1), scheduled={"a": 16}) for s in range(3)]
    new = [dict(r, load=dict(r["load"])) for r in old]
    new[1]["load"]["kv_cache_usage"] = 0.5  # allocates differently
    new[2]["scheduled"] = {"a": 8}  # scheduled otherwise: not compared
    compared = kv.compare_figures("bind-builtin", old, [*new, {"workload": "w", "summary": True}])
    assert (compared.steps, compared.steps_old, compared.steps_new) == (2, 3, 3)
    assert compared.equal == {"num_running": 2, "num_waiting": 2, "kv_cache_usage": 1, "prefix_cache_hit_rate": 2}
