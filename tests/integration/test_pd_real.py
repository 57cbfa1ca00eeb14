"""Prefill/decode disaggregation (the pd-disagg series) on real vLLM code on CPU.

Scheduler level, for vLLM 0.8.4 (the series' own connector interface) and 0.9.0 (the series reworked
onto upstream's asynchronous connector API): toolkit/serving/drivers/pd_scenarios.py drives real V1 schedulers with a
fake worker whose sampled tokens depend on every byte of KV a request's blocks hold; the aggregated
reference runs on the stock wheel of the same version. Worker level (0.8.4): the connectors' worker
halves move blocks between KV caches in FlashAttention's layout, with different block ids on the two
sides, through shared storage and NIXL.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.harness import patched_wheel_of, stock_env_of
from toolkit.apply import apply_series
from toolkit.conformance.checks import NOT_APPLICABLE
from toolkit.conformance.envs import run_pd, vllm_env
from toolkit.conformance.pdchecks import FAIL_MODE_SCENARIOS, nixl_check, pd_checks
from toolkit.conformance.upstream_tests import run_series_tests, series_test_files, series_tests_result
from toolkit.envs import offline_env, venv_python
from toolkit.serving.drivers import drivers_pythonpath

pytestmark = [pytest.mark.real, pytest.mark.xdist_group("conform-084")]  # shares conform_084


def run_in_venv(venv: Path, script: str) -> dict:
    """Run `script` in the venv (the drivers importable); it prints `VPATCH-RESULT {json}`."""
    env = drivers_pythonpath(offline_env())
    env["OMP_NUM_THREADS"] = "1"
    argv = [str(venv_python(venv)), "-c", script]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("VPATCH-RESULT ")), None)
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    return json.loads(line.removeprefix("VPATCH-RESULT "))


@pytest.fixture(scope="session")
def patched_nixl_env_084(repo_project, patched_wheel_084: Path) -> Path:
    return vllm_env(repo_project.options.cache_dir, patched_wheel_084, nixl=True)


@pytest.fixture(scope="module", params=["0.8.4", "0.9.0"])
def pd_version(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def pd_env(request, pd_version: str, repo_project, tmp_path_factory) -> tuple[Path, Path]:
    """(stock venv, dynamo-base venv with NIXL) of one version (0.8.4: the session's, not a second build)."""
    if pd_version == "0.8.4":
        return request.getfixturevalue("stock_env_084"), request.getfixturevalue("patched_nixl_env_084")
    wheel = patched_wheel_of(repo_project, pd_version, tmp_path_factory.mktemp(f"dist-{pd_version}"))
    return stock_env_of(repo_project, pd_version), vllm_env(repo_project.options.cache_dir, wheel, nixl=True)


@pytest.fixture(scope="module")
def pd_runs(request, pd_version: str, pd_env: tuple[Path, Path], tmp_path_factory) -> tuple[dict, dict]:
    """(aggregated on stock, disagg on dynamo-base). 0.8.4: the very runs `vpatch conform 0.8.4` made (run_pd on
    these two venvs, see conform_084 in tests/integration/conftest.py), so they run once per suite."""
    if pd_version == "0.8.4":
        conform = request.getfixturevalue("conform_084")
        return conform.pd("aggregated"), conform.pd("disagg")
    stock, patched = pd_env
    out = tmp_path_factory.mktemp("pd")
    reference = run_pd(stock, out / "aggregated.json", mode="aggregated")
    disagg = run_pd(patched, out / "disagg.json", mode="disagg")
    return reference, disagg


def _remote_requests(reference: dict, name: str) -> set[str]:
    """Requests with more than one prompt token: only those have KV to transfer."""
    return {req for req, tokens in reference["scenarios"][name]["outputs"].items() if req != "r0"}


def test_decode_outputs_equal_aggregated_outputs(pd_runs):
    reference, disagg = pd_runs
    for name, run in disagg["scenarios"].items():
        assert "skipped" not in run, f"{name}: {run.get('skipped')}"
        expected = reference["scenarios"][name]["outputs"]
        for req_id, tokens in expected.items():
            if req_id in run["aborted"]:
                continue
            if name in FAIL_MODE_SCENARIOS and req_id in run["faults"]:
                continue
            assert run["outputs"][req_id] == tokens, f"{name}/{req_id}"
            assert run["prefill_outputs"][req_id] == tokens[:1], f"{name}/{req_id}: the prefill's token"


def test_remote_requests_wait_for_their_kv_without_running(pd_runs):
    reference, disagg = pd_runs
    for name in ("pd-handoff", "pd-hold", "pd-nixl"):
        run = disagg["scenarios"][name]
        # r0 has a one-token prompt: nothing to transfer, it computes locally.
        assert set(run["waited_for_remote_kv"]) == _remote_requests(reference, name) - {"r0"}, name


def test_connector_calls_are_traced_and_loads_start_past_local_prefix_hits(pd_runs):
    _, disagg = pd_runs
    calls = disagg["scenarios"]["pd-handoff"]["connector_calls"]
    saves = [s["req"] for call in calls["prefill"] for s in call.get("saves", [])]
    loads = [x for call in calls["decode"] for x in call.get("loads", [])]
    assert sorted(saves) == sorted(x["req"] for x in loads)  # every saved prompt is loaded once
    # r7 shares r5's prefix: the decode engine has those blocks cached and loads only the rest.
    (r7,) = [x for x in loads if x["req"] == "r7"]
    assert r7["first_block"] > 0
    cancelled = [
        r
        for call in disagg["scenarios"]["pd-abort"]["connector_calls"]["decode"]
        for r in call.get("cancelled_loads", [])
    ]
    assert cancelled == ["r6"]


def test_prefill_keeps_blocks_until_the_transfer_is_acknowledged(pd_runs):
    reference, disagg = pd_runs
    for name in ("pd-hold", "pd-nixl"):
        run = disagg["scenarios"][name]
        assert set(run["held_for_transfer"]) == _remote_requests(reference, name), name
        assert run["freed_while_held"] == [], name


def test_no_block_leaks_and_no_transfer_left_behind(pd_runs):
    _, disagg = pd_runs
    for name, run in disagg["scenarios"].items():
        assert run["leaked_blocks"] == {"prefill": [], "decode": []}, name
        assert run["storage_leftovers"] == [], name


def test_failed_loads_recompute_or_fail_as_configured(pd_runs):
    _, disagg = pd_runs
    fallback = disagg["scenarios"]["pd-fallback"]
    assert set(fallback["faults"]) == {"r3", "r4", "r6"}
    for req_id in fallback["faults"]:  # wrong prompt, truncated data, never written (timeout)
        assert fallback["finals"][req_id]["finish_reason"] == "LENGTH"
    failed = disagg["scenarios"]["pd-fail"]
    final = failed["finals"]["r3"]
    assert final["finish_reason"] == "ABORT"
    assert "remote KV load failed" in final["kv_transfer_params"]["error"]
    assert "kv.bin" in final["kv_transfer_params"]["error"]


def test_aborts_free_blocks_on_both_sides(pd_runs):
    _, disagg = pd_runs
    run = disagg["scenarios"]["pd-abort"]
    assert run["aborted"] == ["r6", "r7"]
    assert "r6" in run["waited_for_remote_kv"]  # aborted while its KV was still missing
    assert "r6" not in run["outputs"] and "r7" not in run["outputs"]


def test_preempted_requests_compute_their_prompt_again_without_a_second_load(pd_runs):
    _, disagg = pd_runs
    run = disagg["scenarios"]["pd-preempt"]
    assert run["preempted"], "the decode engine preempted nothing: the scenario tests nothing"
    loads = [x["req"] for call in run["connector_calls"]["decode"] for x in call.get("loads", [])]
    assert sorted(loads) == sorted(set(loads))  # one load per request, preempted ones included
    assert not any(call.get("cancelled_loads") for call in run["connector_calls"]["decode"])
    assert all(final["finish_reason"] == "LENGTH" for final in run["finals"].values())


def test_conformance_checks_pass(pd_runs):
    reference, disagg = pd_runs
    results = pd_checks(reference, disagg)
    assert [(r.name, r.status) for r in results] == [
        ("pd-disagg-outputs", "pass"),
        ("pd-no-leaks", "pass"),
        ("pd-failure-paths", "pass"),
        ("pd-nixl-transport", "pass"),
    ], [r.diff for r in results]


def test_the_nixl_scenario_is_not_applicable_where_the_series_retired_its_connector(repo_project, tmp_path: Path):
    """0.13.0's series retired 0015 (NixlConnectorV1): the P/D runner leaves the NIXL scenario out with the reason
    (it failed the whole disagg run with 'Unsupported connector type'), and runs the others."""
    wheel = patched_wheel_of(repo_project, "0.13.0", tmp_path / "dist")
    patched = vllm_env(repo_project.options.cache_dir, wheel, nixl=True)  # NIXL importable: only the connector lacks
    disagg = run_pd(patched, tmp_path / "disagg.json", mode="disagg", scenarios=["pd-handoff", "pd-nixl"])
    assert "no NixlConnectorV1" in disagg["scenarios"]["pd-nixl"]["skipped"]
    assert "skipped" not in disagg["scenarios"]["pd-handoff"]
    assert disagg["scenarios"]["pd-handoff"]["outputs"]
    result = nixl_check(disagg)
    assert (result.status, result.detail) == (NOT_APPLICABLE, disagg["scenarios"]["pd-nixl"]["skipped"])


def test_the_tests_the_series_ships_pass_in_dynamo_base(pd_version, pd_env, repo_project, tmp_path: Path):
    """What `conform`'s series-tests check runs: each P/D patch's own test (0.9.0: tests/v1/kv_connector/unit),
    from the patched tree, in the dynamo-base venv (NIXL installed, so nothing is skipped)."""
    pin = repo_project.pins.get(pd_version)
    series = repo_project.series(pin)
    files = series_test_files(series)
    if not files:
        pytest.skip(f"the {pin.label} series ships no tests")
    with repo_project.scratch_checkout(pin) as checkout:
        assert apply_series(checkout, series).ok
        outcomes = run_series_tests(pd_env[1], checkout.path, files, tmp_path)
    result = series_tests_result(files, outcomes)
    assert result.status == "pass", result.diff
    # every patch ships a test: a test file of its own, or more tests in an earlier patch's file (0016 in 0014's)
    for patch in series.patches:
        assert any(f.new_path in files for f in patch.files), patch.name
    assert {name.split("::")[0].rsplit(".", 1)[1] for name in outcomes} == {Path(f).stem for f in files}
    assert set(outcomes.values()) == {"passed"}, outcomes


def test_a_changed_kv_value_changes_the_outputs(pd_runs, pd_env, tmp_path: Path):
    """The outputs check is only worth something if one wrong KV value shows: sabotage every load."""
    reference, _ = pd_runs
    scenarios = ["pd-handoff", "pd-nixl"]
    sabotaged = run_pd(pd_env[1], tmp_path / "s.json", mode="disagg", scenarios=scenarios, sabotage=True)
    results = {r.name: r for r in pd_checks(reference, sabotaged)}
    assert results["pd-disagg-outputs"].status == "fail"
    for name in ("pd-handoff", "pd-nixl"):
        assert f"{name}/r3: aggregated" in results["pd-disagg-outputs"].diff


WORKER_LEVEL = textwrap.dedent(
    """
    import json, socket, sys, tempfile, time
    import fake_engine
    fake_engine.use_cpu_platform()
    import torch
    from vllm.config import KVTransferConfig
    from vllm.v1.attention.backends.flash_attn import FlashAttentionBackend as FA
    from vllm.v1.kv_transfer.base import KVConnectorMetadata, KVLoadSpec, KVSaveSpec, block_dim_of, transfer_key
    from vllm.v1.kv_transfer.factory import make_worker_connector

    BLOCK, HEADS = 16, 4

    def caches(num_blocks, dtype, seed, head_size=32):
        gen = torch.Generator().manual_seed(seed)
        shape = FA.get_kv_cache_shape(num_blocks, BLOCK, HEADS, head_size)
        return {f"model.layers.{i}.self_attn.attn": (torch.rand(shape, generator=gen) * 100).to(dtype)
                for i in range(3)}

    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def pair(transport, storage):
        if transport == "nixl":
            common = {"kv_connector": "NixlConnectorV1", "kv_ip": "127.0.0.1", "kv_port": free_port()}
            extra = {}
        else:
            common = {"kv_connector": "SharedStorageConnectorV1"}
            extra = {"storage_path": storage}
        producer = make_worker_connector(KVTransferConfig(kv_role="kv_producer", kv_connector_extra_config=extra,
                                                          **common))
        consumer = make_worker_connector(KVTransferConfig(kv_role="kv_consumer", kv_connector_extra_config=extra,
                                                          **common))
        return producer, consumer, common

    def run(transport, dtype, head_size=32):
        dim = block_dim_of(FA.get_kv_cache_shape, BLOCK, HEADS, 32)
        src, dst = caches(40, dtype, 1), caches(50, dtype, 2, head_size)
        before = {k: v.clone() for k, v in dst.items()}
        storage = tempfile.mkdtemp()
        producer, consumer, common = pair(transport, storage)
        producer.register_kv_caches(src, dim)
        consumer.register_kv_caches(dst, dim)
        src_ids, dst_ids = [7, 3, 12, 30, 0], [2, 9, 5, 44, 31]
        num_tokens = 5 * BLOCK - 3
        tokens = list(range(100, 100 + num_tokens))
        key = transfer_key("prefill-0", "req-1")
        producer.start_step(KVConnectorMetadata(saves=[KVSaveSpec("req-1", src_ids, num_tokens, tokens, key)]))
        sent = producer.end_step().finished_sending
        params = {"transfer_key": key, "remote_block_ids": src_ids, "remote_request_id": "req-1",
                  "remote_host": common.get("kv_ip"), "remote_port": common.get("kv_port")}
        # The first block was a prefix-cache hit on the consumer: load blocks 1.. only.
        consumer.start_step(KVConnectorMetadata(loads=[KVLoadSpec("dec-1", dst_ids[1:], 1, num_tokens, tokens,
                                                                  params)]))
        status = consumer.end_step()
        deadline = time.monotonic() + 10
        while not (status.finished_recving or status.failed_recving) and time.monotonic() < deadline:
            consumer.start_step(None)
            status = consumer.end_step()
        while not sent and status.finished_recving and time.monotonic() < deadline:
            producer.start_step(None)
            sent = producer.end_step().finished_sending
        as_bits = lambda t: t.contiguous().view(torch.uint8)
        identical = all(torch.equal(as_bits(src[name][:, s]), as_bits(dst[name][:, d]))
                        for name in src for s, d in zip(src_ids[1:], dst_ids[1:]))
        untouched = all(torch.equal(as_bits(before[name][:, b]), as_bits(dst[name][:, b]))
                        for name in dst for b in range(50) if b not in dst_ids[1:])
        for connector in (producer, consumer):
            connector.shutdown()
        return {"loaded": sorted(status.finished_recving), "failed": status.failed_recving,
                "sent": sorted(sent), "identical": identical, "untouched": untouched}

    results = {}
    for transport in ("shared-storage", "nixl"):
        for dtype in (torch.float16, torch.bfloat16, torch.float32):
            results[f"{transport}/{dtype}"] = run(transport, dtype)
        results[f"{transport}/other-layout"] = run(transport, torch.float16, head_size=64)
    print("VPATCH-RESULT " + json.dumps(results))
    """
)


def test_worker_halves_move_blocks_byte_identical_between_different_block_ids(patched_nixl_env_084: Path):
    results = run_in_venv(patched_nixl_env_084, WORKER_LEVEL)
    for transport in ("shared-storage", "nixl"):
        for dtype in ("torch.float16", "torch.bfloat16", "torch.float32"):
            result = results[f"{transport}/{dtype}"]
            assert result["loaded"] == ["dec-1"] and result["failed"] == {}, (transport, dtype, result)
            assert result["identical"], (transport, dtype)
            assert result["untouched"], (transport, dtype)
            assert result["sent"] == ["req-1"], (transport, dtype)  # the producer may free its blocks
        mismatch = results[f"{transport}/other-layout"]
        assert mismatch["loaded"] == [] and "dec-1" in mismatch["failed"], (transport, mismatch)
        assert "layout" in mismatch["failed"]["dec-1"], mismatch
        assert mismatch["untouched"], transport


REQUEST_OUTPUT = textwrap.dedent(
    """
    import json, sys
    import fake_engine
    fake_engine.use_cpu_platform()
    from vllm.sampling_params import SamplingParams
    from vllm.v1.engine import EngineCoreOutput, EngineCoreRequest, FinishReason
    from vllm.v1.engine.output_processor import OutputProcessor

    class NoTokenizer:  # detokenize=False: the output processor asks for a tokenizer and uses none
        def get_lora_tokenizer(self, lora_request):
            return None

    processor = OutputProcessor(NoTokenizer(), log_stats=False)
    params = {"do_remote_prefill": True, "remote_block_ids": [4, 9], "transfer_key": "k"}
    outputs = {}
    for req_id, extra in (("prefill", params), ("plain", None)):
        processor.add_request(EngineCoreRequest(
            request_id=req_id, prompt=None, prompt_token_ids=[11, 12, 13], mm_inputs=None, mm_hashes=None,
            mm_placeholders=None, sampling_params=SamplingParams(max_tokens=1, detokenize=False),
            eos_token_id=None, arrival_time=0.0, lora_request=None))
        result = processor.process_outputs([EngineCoreOutput(
            request_id=req_id, new_token_ids=[7], finish_reason=FinishReason.LENGTH, kv_transfer_params=extra)])
        (output,) = result.request_outputs
        outputs[req_id] = {"finished": output.finished, "kv_transfer_params": output.kv_transfer_params,
                           "token_ids": list(output.outputs[0].token_ids)}
    print("VPATCH-RESULT " + json.dumps(outputs))
    """
)


def test_request_output_carries_the_transfer_parameters(patched_nixl_env_084: Path):
    """The prefill engine's last EngineCoreOutput reaches the API layer's RequestOutput with its params."""
    outputs = run_in_venv(patched_nixl_env_084, REQUEST_OUTPUT)
    assert outputs["prefill"] == {
        "finished": True,
        "kv_transfer_params": {"do_remote_prefill": True, "remote_block_ids": [4, 9], "transfer_key": "k"},
        "token_ids": [7],
    }
    assert outputs["plain"]["kv_transfer_params"] is None
