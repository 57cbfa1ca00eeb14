"""Runs inside a vLLM venv (imported by runner.py, run there by path): what the runner records beyond its trace.

- the stat-logger path (`--stat-loggers`): the stat loggers vLLM's frontend builds (an installed plugin's
  among them) and each step's SchedulerStats as the trace records them;
- the kv-routing contract's ground truth (`--contract`): each workload's probe prompts, the scheduler's
  load figures with prefix-cache counts summed over steps, and how many leading blocks of a prompt the
  block pool holds, hashed as the engine hashes them.
"""

from __future__ import annotations

# The sibling driver; importable because Python puts the running script's own directory first on sys.path.
from fake_engine import Engine, make_request


def frontend_stat_loggers(engine: Engine) -> list:
    """The stat loggers of engine 0, built as vLLM 0.9's AsyncLLM builds them, minus vLLM's defaults."""
    from vllm.plugins import load_general_plugins
    from vllm.v1.metrics import loggers

    load_general_plugins()
    per_engine = loggers.setup_default_loggers(
        vllm_config=engine.vllm_config, log_stats=True, engine_num=1, custom_stat_loggers=[]
    )
    return per_engine[0] if per_engine else []


def stats_record(stats) -> dict | None:
    if stats is None:
        return None
    prefix = stats.prefix_cache_stats
    return {
        "num_running_reqs": stats.num_running_reqs,
        "num_waiting_reqs": stats.num_waiting_reqs,
        "gpu_cache_usage": stats.gpu_cache_usage,
        "prefix_queries": prefix.queries,
        "prefix_hits": prefix.hits,
    }


def probes_of(name: str, spec: dict) -> dict[str, list[int]]:
    """The workload's prompts, by probe id `<workload>/<request>`."""
    return {
        f"{name}/{action[1]}": list(action[2])
        for step in sorted(spec["plan"])
        for action in spec["plan"][step]
        if action[0] == "add"
    }


def load_figures(stats, totals: dict[str, int]) -> dict | None:
    """The scheduler's own figures after the step; hits and queries summed over steps (SchedulerStats
    carries them per interval: make_stats resets them)."""
    if stats is None:
        return None
    prefix = stats.prefix_cache_stats
    totals["prefix_cache_queries"] += prefix.queries
    totals["prefix_cache_hits"] += prefix.hits
    queries, hits = totals["prefix_cache_queries"], totals["prefix_cache_hits"]
    return {
        "num_running": stats.num_running_reqs,
        "num_waiting": stats.num_waiting_reqs,
        "kv_cache_usage": stats.gpu_cache_usage,
        "prefix_cache_queries": queries,
        "prefix_cache_hits": hits,
        "prefix_cache_hit_rate": hits / queries if queries else 0.0,
    }


def engine_overlap(engine: Engine, tokens: list[int]) -> int:
    """How many leading full blocks of `tokens` the block pool holds, hashed as the engine hashes them."""
    from vllm.v1.core.kv_cache_utils import hash_request_tokens

    manager = engine.scheduler.kv_cache_manager
    request = make_request("probe", tokens, 1)
    cached = engine.block_pool.cached_block_hash_to_block
    count = 0
    for block_hash in hash_request_tokens(manager.caching_hash_fn, manager.block_size, request):
        if not cached.get(block_hash):
            break
        count += 1
    return count
