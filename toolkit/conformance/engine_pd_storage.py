"""P/D through dynamo-base's asynchronous shared-storage transport, `SharedStorageConnectorV1`, on real CPU engines.

The connector is given either by module path (the dynamo-base plugin on stock vLLM: `kv_connector_module_path`
`dynamo_base_plugin.shared_storage`) or by its name alone (a carried series, whose patch registers the connector
in vLLM's own connector factory: dynamo-base 0.11.1's 0014). `Transport` says which, and what differs between
the two: the series' vLLM has no `kv_connector_load_failure_policy` field (its policy is the connector option
`on_load_failure`), and the two implementations word their load timeout differently in the log.

An aggregated engine with no connector (the reference: the stock engine venv, a plain run), a prefill and a decode
engine (the transport's venv), each its own process, on the tiny model. Every prompt (lengths 31..88 around the
32-token block, two sharing a 64-token prefix) must be loaded, not recomputed: the decode's own counters show n-1
tokens from the connector for an n-token prompt. Then one corrupted stored byte (the decode must change: the
transfer is really used), a missing transfer (load timeout, recomputed), a truncated one (failed at once,
recomputed), an unread one (hold timeout), and at the end no blocks held and nothing in the storage directory.
`storage_checks()` judges the record, one `Check` per behaviour.
"""

from __future__ import annotations

import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.conformance.engine_env import EngineEnv
from toolkit.conformance.engine_pd import BLOCK_SIZE, FAIL, MAX_TOKENS, PASS, WARM_UP, Check, free_blocks, pd_prompts
from toolkit.conformance.engine_procs import EngineProcess

LOAD_TIMEOUT = 3.0
HOLD_TIMEOUT = 12.0
CONNECTOR = "SharedStorageConnectorV1"


@dataclass(frozen=True)
class Transport:
    """Where `SharedStorageConnectorV1` comes from, and what its engine and log look like."""

    label: str  # "plugin" | "series": named in every check's line
    module_path: str | None  # kv_connector_module_path; None: registered in the engine's connector factory
    load_failure_policy: bool  # whether the engine's KVTransferConfig has kv_load_failure_policy (vLLM 0.32.0)
    timeout_log: str  # what the decode's log says when a load times out ({t}: load_timeout_s)

    def describe(self) -> str:
        where = f"kv_connector_module_path {self.module_path}" if self.module_path else "in tree, by name"
        return f"{CONNECTOR} ({self.label}: {where})"


PLUGIN = Transport("plugin", "dynamo_base_plugin.shared_storage", True, "no transfer after load_timeout_s={t}")
# dynamo-base 0.11.1's patch 0014 (registered in factory.py); the timeout line is 0008's scheduler's.
SERIES = Transport("series", None, False, "no KV after {t} s")


FACTORY = "vllm/distributed/kv_transfer/kv_connector/factory.py"


def in_tree(env: EngineEnv) -> bool:
    """Whether the venv's vLLM registers `SharedStorageConnectorV1` in its own connector factory (a dynamo-base
    build of a series that carries the transport), read from the venv's factory.py."""
    for path in sorted(env.path.glob(f"lib/python*/site-packages/{FACTORY}")):
        text = path.read_text(encoding="utf-8", errors="replace")
        return re.search(rf"register_connector\(\s*[\"']{CONNECTOR}[\"']", text) is not None
    return False


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


def engine_configs(transport: Transport, model: Path, storage: Path) -> dict[str, dict[str, Any]]:
    """pd_drive.py's start-up config per role: the aggregated engine has no connector at all."""
    base: dict[str, Any] = {"model": str(model), "block_size": BLOCK_SIZE, "storage": str(storage)}
    link: dict[str, Any] = {"connector": CONNECTOR}
    if transport.module_path:
        link["connector_module_path"] = transport.module_path
    prefill_extra = {"hold_timeout_s": HOLD_TIMEOUT, "engine_id": "prefill-0"}
    decode_extra = {"load_timeout_s": LOAD_TIMEOUT, "on_load_failure": "recompute"}
    prefill = {**base, **link, "role": "prefill", "extra_config": prefill_extra}
    decode = {**base, **link, "role": "decode", "extra_config": decode_extra}
    if transport.load_failure_policy:
        prefill["kv_load_failure_policy"], decode["kv_load_failure_policy"] = "fail", "recompute"
    return {"aggregated": {**base, "role": "aggregated"}, "prefill": prefill, "decode": decode}


def run_storage_pd(
    reference: EngineEnv, side: EngineEnv, model: Path, work: Path, transport: Transport
) -> dict[str, Any]:
    """The whole sequence: `reference` runs the aggregated engine, `side` the prefill and decode engines with the
    connector. The record of what happened (written to work/storage-pd.json too). Engines always end."""
    storage = work / "kv-storage"
    storage.mkdir(parents=True)
    configs = engine_configs(transport, model, storage)
    engines = {
        role: EngineProcess(reference if role == "aggregated" else side, config, work / f"{role}.log")
        for role, config in configs.items()
    }
    record: dict[str, Any] = {
        "connector": CONNECTOR,
        "transport": transport.label,
        "module_path": transport.module_path,
        "load_timeout_s": LOAD_TIMEOUT,
        "hold_timeout_s": HOLD_TIMEOUT,
    }
    began = time.monotonic()
    try:
        with ThreadPoolExecutor(3) as pool:
            ready = dict(zip(engines, pool.map(lambda e: e.wait_ready(), engines.values()), strict=True))
        record["vllm_version"] = ready["decode"]["vllm_version"]
        record["start_seconds"] = {role: r["start_seconds"] for role, r in ready.items()}
        record["ready_after_s"] = round(time.monotonic() - began, 1)
        _sequence(engines, storage, record)
    finally:
        for engine in engines.values():
            engine.close()
    record["seconds"] = round(time.monotonic() - began, 1)
    (work / "storage-pd.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    record["prompts"] = pd_prompts()
    record["logs"] = {role: str(e.log_path) for role, e in engines.items()}
    return record


def _remote(pre: EngineProcess, ids: list[int]) -> dict[str, Any]:
    return _generate(pre, [ids], 1, [{"do_remote_decode": True}])["kv_transfer_params"][0]


def _sequence(engines: dict[str, EngineProcess], storage: Path, record: dict[str, Any]) -> None:
    agg, pre, dec = engines["aggregated"], engines["prefill"], engines["decode"]
    for engine in engines.values():
        _generate(engine, [WARM_UP], 1)
    free_before = {role: free_blocks(e) for role, e in engines.items()}
    prompts = pd_prompts()
    names, ids = list(prompts), list(prompts.values())
    remote = [{"do_remote_decode": True}] * len(ids)
    full = _generate(agg, ids, MAX_TOKENS)
    record["aggregated"] = dict(zip(names, full["outputs"], strict=True))

    prefill = _generate(pre, ids, 1, remote)
    record["prefill_first"] = dict(zip(names, prefill["outputs"], strict=True))
    record["params"] = prefill["kv_transfer_params"]
    record["stored"] = {d: sorted(os.listdir(storage / d)) for d in _entries(storage)}
    orphan = _remote(pre, prompts["len33"])
    orphan_written = time.monotonic()

    decode = _generate(dec, ids, MAX_TOKENS, [own_count(p) for p in prefill["kv_transfer_params"]])
    record["decode"] = dict(zip(names, decode["outputs"], strict=True))
    record["loaded"] = dict(zip(names, decode["cached_tokens"], strict=True))
    record["external_hits"] = decode["external_hits"]
    record["timings"] = {"aggregated": full["seconds"], "prefill": prefill["seconds"], "decode": decode["seconds"]}
    record["left_after_decode"] = [e for e in _entries(storage) if e != orphan["transfer_key"]]

    # Sabotage: one byte of a stored transfer, then the decode loads it.
    params = _remote(pre, prompts["len64"])
    record["corruption"] = corrupt(storage / params["transfer_key"] / "kv.bin")
    sabotaged = _generate(dec, [prompts["len64"]], MAX_TOKENS, [own_count(params)])
    record["sabotage"] = {
        "tokens": sabotaged["outputs"][0],
        "loaded": sabotaged["cached_tokens"][0],
        "external_hits": sabotaged["external_hits"],
    }

    # A missing transfer: only the load timeout ends the wait (the prefill might still be writing it).
    params = _remote(pre, prompts["len64"])
    for entry in (storage / params["transfer_key"]).iterdir():
        entry.unlink()
    (storage / params["transfer_key"]).rmdir()
    missing = _generate(dec, [prompts["len64"]], MAX_TOKENS, [own_count(params)])
    record["missing"] = {k: missing[k][0] for k in ("outputs", "cached_tokens", "finish_reasons")}
    record["missing"].update(seconds=missing["seconds"], external_hits=missing["external_hits"])

    # A truncated transfer: a failed load at once, recomputed by the load-failure policy.
    params = _remote(pre, prompts["shared-b"])
    kv_bin = storage / params["transfer_key"] / "kv.bin"
    kv_bin.write_bytes(kv_bin.read_bytes()[:-1])
    truncated = _generate(dec, [prompts["shared-b"]], MAX_TOKENS, [own_count(params)])
    record["truncated"] = {k: truncated[k][0] for k in ("outputs", "cached_tokens", "finish_reasons")}
    record["truncated"].update(seconds=truncated["seconds"], external_hits=truncated["external_hits"])

    # The unread transfer: gone after the hold timeout (where the transport removes it), the prefill engine idle.
    deadline = orphan_written + HOLD_TIMEOUT + 15
    while (storage / orphan["transfer_key"]).exists() and time.monotonic() < deadline:
        time.sleep(0.25)
    record["orphan_removed_after_s"] = round(time.monotonic() - orphan_written, 1)
    record["orphan_key"] = orphan["transfer_key"]
    record["orphan_left"] = (storage / orphan["transfer_key"]).exists()
    # An in-process engine steps only when asked: a send reported in the step after its request finished (the
    # series' get_finished) frees the blocks at the prefill's next step. One plain request steps it.
    _generate(pre, [WARM_UP], 1)
    record["free"] = {
        "before": free_before,
        "after": {role: free_blocks(e) for role, e in engines.items()},
    }
    record["storage_at_end"] = _entries(storage)


def _check(name: str, bad: list[str], good: str, details: dict[str, Any] | None = None) -> Check:
    if bad:
        return Check(name, FAIL, {"why": bad[0], "all": bad, **(details or {})})
    return Check(name, PASS, {"seen": good, **(details or {})})


def storage_checks(run: dict[str, Any], transport: Transport) -> list[Check]:
    """One check per behaviour of one `run_storage_pd` record, named `shared-storage-*`."""
    prompts, agg = run["prompts"], run["aggregated"]
    logs = {role: Path(path).read_text("utf-8", "replace") for role, path in run["logs"].items()}
    who = transport.describe()
    expected = {n: len(p) - 1 for n, p in prompts.items()}
    lengths = ", ".join(str(len(p)) for p in prompts.values())
    bad = [f"{n}: decode {run['decode'][n]} != aggregated {agg[n]}" for n in agg if run["decode"][n] != agg[n]]
    bad += [f"{n}: prefill's first token differs" for n in agg if run["prefill_first"][n] != agg[n][:1]]
    good = f"{who}: {len(prompts)} prompts ({lengths} tokens): decode equals the aggregated engine (no connector)"
    checks = [_check("shared-storage-decode-equals-aggregated", bad, good, {"timings": run.get("timings")})]
    bad = [f"{n}: loaded {run['loaded'][n]} tokens, not {k}" for n, k in expected.items() if run["loaded"][n] != k]
    good = (
        f"{who}: every prompt loaded n-1 tokens from the connector ({sum(expected.values())} in all), none recomputed"
    )
    checks.append(_check("shared-storage-loaded-transfer", bad, good, {"loaded": run["loaded"]}))

    sabotage = run["sabotage"]
    bad = []
    if sabotage["tokens"] == agg["len64"]:
        bad.append(f"{who}: a corrupted stored byte did not change the decode (the transfer was not used)")
    if not sabotage["loaded"]:
        bad.append(f"{who}: the corrupted transfer was not loaded ({sabotage})")
    good = f"{who}: one corrupted byte of the stored KV ({run['corruption']}) changes the decode's tokens"
    checks.append(_check("shared-storage-sabotage-corrupted-kv", bad, good, {"sabotage": sabotage}))

    missing, truncated = run["missing"], run["truncated"]
    timeout_line = transport.timeout_log.format(t=f"{LOAD_TIMEOUT:g}")
    bad = []
    if missing["outputs"] != agg["len64"] or missing["cached_tokens"] != 0 or missing["seconds"] < LOAD_TIMEOUT:
        bad.append(f"{who}: a missing transfer was not recomputed after load_timeout_s={LOAD_TIMEOUT:g}: {missing}")
    if timeout_line not in logs["decode"]:
        bad.append(f"{who}: the decode log does not name the load timeout ({timeout_line!r})")
    good = f"{who}: a missing transfer is recomputed after load_timeout_s={LOAD_TIMEOUT:g} ({missing['seconds']:.1f} s)"
    checks.append(_check("shared-storage-missing-transfer", bad, good, {"missing": missing}))

    bad = []
    if truncated["outputs"] != agg["shared-b"] or truncated["cached_tokens"] != 0:
        bad.append(f"{who}: a truncated transfer was not recomputed: {truncated}")
    if truncated["seconds"] >= LOAD_TIMEOUT:
        bad.append(f"{who}: a truncated transfer waited {truncated['seconds']} s instead of failing at once")
    good = f"{who}: a truncated transfer fails at once ({truncated['seconds']:.2f} s) and is recomputed"
    checks.append(_check("shared-storage-truncated-transfer", bad, good, {"truncated": truncated}))

    bad = []
    if run["orphan_left"] or run["orphan_removed_after_s"] < HOLD_TIMEOUT - 1:
        bad.append(
            f"{who}: a transfer nobody read is {'still in the storage directory' if run['orphan_left'] else 'gone'} "
            f"{run['orphan_removed_after_s']} s after it was written (hold_timeout_s={HOLD_TIMEOUT:g})"
        )
    after = run["orphan_removed_after_s"]
    good = f"{who}: a transfer nobody read is removed by hold_timeout_s={HOLD_TIMEOUT:g} (after {after} s)"
    checks.append(_check("shared-storage-unread-transfer", bad, good))

    bad = []
    if run["free"]["after"] != run["free"]["before"]:
        bad.append(f"{who}: free blocks before {run['free']['before']}, after {run['free']['after']}")
    if run["left_after_decode"]:
        bad.append(f"{who}: transfers left after the decode read them: {run['left_after_decode']}")
    left = [entry for entry in run["storage_at_end"] if entry != run.get("orphan_key")]  # the unread one: above
    if left:
        bad.append(f"{who}: left in the storage directory at the end: {left}")
    good = f"{who}: free blocks per engine back to {run['free']['before']}; nothing else left in the storage"
    checks.append(_check("shared-storage-no-leaks", bad, good, {"free": run["free"]}))
    return checks
