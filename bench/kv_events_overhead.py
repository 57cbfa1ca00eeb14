"""KV-cache events: per-step overhead in vLLM's real V1 scheduler, and the publisher under load.

Both run inside a venv holding the dynamo-base wheel of the committed vLLM 0.8.4 series (built
and cached by the toolkit), through toolkit/serving/drivers/kvload.py:

  overhead     time spent in engine steps (schedule, fake model, update_from_output) over a steady
               stream of shared-prefix requests on a small block pool (so blocks are cached and
               evicted all the time), events off vs on (ZMQ publisher, a subscriber attached),
               interleaved, engines built once per measurement. Goal: on / off ≤ 1.05.
  throughput   100 000 events/s for 2 s (100 batches/s of 1000 BlockStored events) through the real
               PUB socket to a subscriber: how long `publish()` takes in the engine step (the step
               only enqueues), how many batches were dropped, how many events arrived.

Run: .venv/bin/python bench/kv_events_overhead.py [--repeat N] [--strict]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from toolkit.conformance.envs import free_port, run_bench_child, vllm_env
from toolkit.options import load_options
from toolkit.project import Project
from toolkit.wheel.overlay import build_overlay

ROOT = Path(__file__).resolve().parent.parent
CHILD = "kvload"  # the driver in toolkit/serving/drivers/, run by path in the venv
GOAL = 1.05


def child(venv: Path, request: dict) -> dict:
    return run_bench_child(venv, CHILD, request)  # a failed child raises VpatchError with its last line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=6)
    parser.add_argument("--steps", type=int, default=2000, help="engine steps per measurement")
    parser.add_argument(
        "--model-ms",
        type=float,
        default=2.0,
        help="second measurement: a sleep per step standing in for the forward pass",
    )
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()
    project = Project.load(load_options({"root": str(ROOT)}))
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_overlay(project, project.pins.get("0.8.4"), Path(tmp)).path
        venv = vllm_env(project.options.cache_dir, wheel)
    over = child(
        venv,
        {"mode": "overhead", "repeat": args.repeat, "steps": args.steps, "endpoint": f"tcp://127.0.0.1:{free_port()}"},
    )
    model = child(
        venv,
        {
            "mode": "overhead",
            "repeat": args.repeat,
            "steps": args.steps // 4,
            "model_ms": args.model_ms,
            "endpoint": f"tcp://127.0.0.1:{free_port()}",
        },
    )
    load = child(
        venv,
        {
            "mode": "throughput",
            "events": 1000,
            "batches": 200,
            "rate": 100_000,
            "endpoint": f"tcp://127.0.0.1:{free_port()}",
        },
    )
    per_step = {mode: statistics.median(over[mode]) / over["steps"] * 1e6 for mode in ("off", "on")}
    print(
        f"per-step time of vLLM's V1 scheduler ({over['steps']} steps of a shared-prefix stream, "
        f"{args.repeat} repetitions each side, interleaved)"
    )
    print(f"  events off: {per_step['off']:.0f} µs/step   runs {[round(t, 3) for t in over['off']]}")
    print(f"  events on : {per_step['on']:.0f} µs/step   runs {[round(t, 3) for t in over['on']]}")
    print(
        f"  published {over['events_published']} events; the subscriber received {over['received_events']} in "
        f"{over['received_batches']} batches"
    )
    print(f"  null publisher (events recorded, nothing sent) / off = {over['null_ratio']:.3f}x")
    print(f"  on / off = {over['ratio']:.3f}x (scheduler-only steps, no model)")
    model_step = {m: statistics.median(model[m]) / model["steps"] * 1e3 for m in ("off", "on")}
    print(
        f"with a {args.model_ms} ms stand-in forward pass per step ({model['steps']} steps): "
        f"off {model_step['off']:.3f} ms/step, on {model_step['on']:.3f} ms/step"
    )
    ok = model["ratio"] <= GOAL
    print(f"  on / off = {model['ratio']:.3f}x (goal ≤ {GOAL}x): {'PASS' if ok else 'FAIL'}")
    print("publisher under load")
    print(
        f"  sent {load['events_sent']} events in {load['seconds']:.2f}s = {load['events_per_second']:,.0f} events/s; "
        f"received {load['received_events']}; dropped batches {load['dropped_batches']}"
    )
    print(
        f"  publish() in the step: p50 {load['publish_p50_us']:.0f} µs, p99 {load['publish_p99_us']:.0f} µs, "
        f"max {load['publish_max_us']:.0f} µs (a batch every {load['interval_us']:.0f} µs)"
    )
    complete = load["received_events"] == load["events_sent"] and load["dropped_batches"] == 0
    print(f"  every event delivered: {'PASS' if complete else 'FAIL'}")
    return 1 if args.strict and not (ok and complete) else 0


if __name__ == "__main__":
    sys.exit(main())
