"""P/D on stock vLLM's CPU build through the dynamo-base plugin's SharedStorageConnectorV1 (loaded by
`kv_connector_module_path` from the plugin wheel installed beside stock), judged as the pd-disagg contract.

An aggregated engine (stock alone: the reference), a prefill and a decode engine (stock + plugin), each its own
process, on the tiny model. Every prompt (lengths 31..88 around the 32-token block, two sharing a 64-token
prefix) must be loaded, not recomputed: the decode's own counters show n-1 tokens from the connector for an
n-token prompt. Then one corrupted stored byte (the decode must change: the transfer is really used), a missing
transfer (load timeout, recomputed), a truncated one (failed at once, recomputed), an unread one (hold timeout),
and at the end no blocks held and nothing in the storage directory.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from toolkit.conformance.engine_env import EngineEnv
from toolkit.conformance.engine_pd import BLOCK_SIZE, MAX_TOKENS, WARM_UP, pd_prompts
from toolkit.conformance.engine_procs import EngineProcess
from toolkit.records.contract import ItemResult
from toolkit.records.status import Status

LOAD_TIMEOUT = 3.0
HOLD_TIMEOUT = 12.0
CONNECTOR = "SharedStorageConnectorV1"
FEATURE = "pd-disagg"


def _generate(engine: EngineProcess, prompts: list[list[int]], max_tokens: int, params: list | None = None) -> dict:
    answer = engine.request(
        {"op": "generate", "prompts": prompts, "max_tokens": max_tokens, "kv_transfer_params": params}
    )
    if answer.get("error"):
        raise RuntimeError(f"the {engine.role} engine failed: {answer.get('error')}")
    return answer


def own_count(params: dict) -> dict:
    """The parameters without `remote_prefill_cached_tokens`, which vLLM 0.32.0 adds to a prefill's parameters and
    a decode then reports as its own `num_cached_tokens`: so the decode's figure is its own scheduler's count of
    tokens it did not compute (local prefix hits, reset before each call, plus the connector's tokens)."""
    return {k: v for k, v in params.items() if k != "remote_prefill_cached_tokens"}


def _entries(storage: Path) -> list[str]:
    return sorted(os.listdir(storage))


def corrupt(kv_bin: Path) -> dict[str, int]:
    """The top byte (sign + exponent) of the first fp32 KV value of the first block of the first layer: finite, ~1e4."""
    data = bytearray(kv_bin.read_bytes())
    before = data[3]
    data[3] = (before & 0x80) | 0x47 if before & 0x7F != 0x47 else before ^ 0x01
    kv_bin.write_bytes(bytes(data))
    return {"before": before, "after": data[3]}


def run_plugin_pd(stock: EngineEnv, plugin: EngineEnv, model: Path, work: Path) -> dict[str, Any]:
    """The whole sequence; the record of what happened (written to work/plugin-pd.json too). Engines always end."""
    storage = work / "kv-storage"
    storage.mkdir(parents=True)
    base = {"model": str(model), "block_size": BLOCK_SIZE, "storage": str(storage), "connector": CONNECTOR}
    prefill_extra = {"hold_timeout_s": HOLD_TIMEOUT, "engine_id": "prefill-0"}
    decode_extra = {"load_timeout_s": LOAD_TIMEOUT, "on_load_failure": "recompute"}
    engines = {
        "aggregated": EngineProcess(stock, {**base, "role": "aggregated"}, work / "aggregated.log"),
        "prefill": EngineProcess(
            plugin, {**base, "role": "prefill", "extra_config": prefill_extra}, work / "prefill.log"
        ),
        "decode": EngineProcess(
            plugin,
            {**base, "role": "decode", "kv_load_failure_policy": "recompute", "extra_config": decode_extra},
            work / "decode.log",
        ),
    }
    record: dict[str, Any] = {"connector": CONNECTOR, "load_timeout_s": LOAD_TIMEOUT, "hold_timeout_s": HOLD_TIMEOUT}
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

        decode = _generate(dec, ids, MAX_TOKENS, [own_count(p) for p in prefill["kv_transfer_params"]])
        record["decode"] = dict(zip(names, decode["outputs"], strict=True))
        record["loaded"] = dict(zip(names, decode["cached_tokens"], strict=True))
        record["external_hits"] = decode["external_hits"]
        record["left_after_decode"] = [e for e in _entries(storage) if e != orphan["transfer_key"]]

        # Sabotage: one byte of a stored transfer, then the decode loads it.
        params = _generate(pre, [prompts["len64"]], 1, [{"do_remote_decode": True}])["kv_transfer_params"][0]
        record["corruption"] = corrupt(storage / params["transfer_key"] / "kv.bin")
        sabotaged = _generate(dec, [prompts["len64"]], MAX_TOKENS, [own_count(params)])
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
        missing = _generate(dec, [prompts["len64"]], MAX_TOKENS, [own_count(params)])
        record["missing"] = {k: missing[k][0] for k in ("outputs", "cached_tokens", "finish_reasons")}
        record["missing"].update(seconds=missing["seconds"], external_hits=missing["external_hits"])

        # A truncated transfer: a failed load at once, recomputed by kv_load_failure_policy.
        params = _generate(pre, [prompts["shared-b"]], 1, [{"do_remote_decode": True}])["kv_transfer_params"][0]
        kv_bin = storage / params["transfer_key"] / "kv.bin"
        kv_bin.write_bytes(kv_bin.read_bytes()[:-1])
        truncated = _generate(dec, [prompts["shared-b"]], MAX_TOKENS, [own_count(params)])
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
    record["logs"] = {role: str(e.log_path) for role, e in engines.items()}
    return record


def _item(name: str, bad: list[str], good: str) -> ItemResult:
    if bad:
        return ItemResult(FEATURE, name, Status.FAIL, f"{CONNECTOR} (plugin): {bad[0]}", "\n".join(bad))
    return ItemResult(FEATURE, name, Status.PASS, f"{CONNECTOR} (plugin): {good}")


def plugin_pd_items(run: dict[str, Any]) -> list[ItemResult]:
    """decode-equals-aggregated, no-leaks and failure-semantics from one `run_plugin_pd` record."""
    prompts, agg = run["prompts"], run["aggregated"]
    logs = {role: Path(path).read_text("utf-8", "replace") for role, path in run["logs"].items()}
    expected = {n: len(p) - 1 for n, p in prompts.items()}
    bad = [f"{n}: decode {run['decode'][n]} != aggregated {agg[n]}" for n in agg if run["decode"][n] != agg[n]]
    bad += [f"{n}: loaded {run['loaded'][n]} tokens, not {k}" for n, k in expected.items() if run["loaded"][n] != k]
    bad += [f"{n}: prefill's first token differs" for n in agg if run["prefill_first"][n] != agg[n][:1]]
    outputs = _item(
        "decode-equals-aggregated",
        bad,
        f"{len(prompts)} prompts ({', '.join(str(len(p)) for p in prompts.values())} tokens): decode equals "
        f"aggregated, each loaded n-1 tokens from the connector ({sum(expected.values())} in all)",
    )
    bad = []
    if run["free"]["after"] != run["free"]["before"]:
        bad.append(f"free blocks before {run['free']['before']}, after {run['free']['after']}")
    if run["left_after_decode"]:
        bad.append(f"transfers left after the decode read them: {run['left_after_decode']}")
    if run["storage_at_end"]:
        bad.append(f"left in the storage directory at the end: {run['storage_at_end']}")
    leaks = _item("no-leaks", bad, f"free blocks per engine back to {run['free']['before']}; storage empty")
    bad = []
    if run["sabotage"]["tokens"] == agg["len64"]:
        bad.append("a corrupted stored byte did not change the decode (the transfer was not used)")
    missing, truncated = run["missing"], run["truncated"]
    if missing["outputs"] != agg["len64"] or missing["cached_tokens"] != 0 or missing["seconds"] < LOAD_TIMEOUT:
        bad.append(f"a missing transfer was not recomputed after load_timeout_s={LOAD_TIMEOUT:g}: {missing}")
    if "no transfer after load_timeout_s" not in logs["decode"]:
        bad.append("the decode log does not name the load timeout")
    if truncated["outputs"] != agg["shared-b"] or truncated["cached_tokens"] != 0:
        bad.append(f"a truncated transfer was not recomputed: {truncated}")
    if truncated["seconds"] >= LOAD_TIMEOUT:
        bad.append(f"a truncated transfer waited {truncated['seconds']} s instead of failing at once")
    if run["orphan_left"] or run["orphan_removed_after_s"] < HOLD_TIMEOUT - 1:
        bad.append(f"the unread transfer: left {run['orphan_left']}, after {run['orphan_removed_after_s']} s")
    failures = _item(
        "failure-semantics",
        bad,
        f"a corrupted byte changes the decode; a missing transfer is recomputed after load_timeout_s="
        f"{LOAD_TIMEOUT:g} ({missing['seconds']:.1f} s); a truncated one fails at once ({truncated['seconds']:.2f} s) "
        f"and is recomputed; an unread one is removed by hold_timeout_s={HOLD_TIMEOUT:g} "
        f"(after {run['orphan_removed_after_s']} s)",
    )
    return [outputs, leaks, failures]
