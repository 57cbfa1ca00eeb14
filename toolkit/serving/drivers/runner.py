"""Runs inside a vLLM venv (stock or dynamo-base), run by path: the scenario runner over named workloads.

It imports nothing from vpatch (the venv does not have it): only vLLM, the standard library and its
sibling drivers (fake_engine.py, release_api.py). It drives vLLM's real V1 scheduler, KV-cache manager
and block pool with a deterministic fake model (the sampled token is a seeded function of request id and
position), over named workloads, and writes one normalized JSON line per engine step:

  {"workload", "step", "scheduled": {req: tokens}, "new", "resumed", "preempted",
   "finished", "blocks": {req: [block ids]}, "num_free_blocks", "cached_hashes": [...],
   "num_computed_on_admit": {req: tokens}, "events": [...], "event_seq": int | null,
   "outputs": {req: [token ids]}}

`cached_hashes` are the keys of the block pool's cached map as wire hashes
(hash value mod 2**64), sorted; the default sha256 block hash makes them equal
across processes (vLLM 0.8.4's builtin hash includes hash(None), which on
Python < 3.12 changes from process to process), with the chain's root hash
pinned (vLLM >= 0.8.5 draws it at random per process; see release_api.fixed_none_hash).
With `--kv-events JSON` the patched engine's KV-cache events are switched on;
the events each step publishes are recorded in the trace too (and, with the
zmq publisher, really sent).
With `--stat-loggers` the runner is also vLLM's frontend as far as stats go (vLLM >= 0.9): it loads the
general plugins and builds the stat loggers the way AsyncLLM does (`setup_default_loggers`, without vLLM's
default Prometheus/logging loggers), then hands each step's `SchedulerStats` (what `update_from_output`
returns, made by the scheduler's `make_stats()` as in EngineCore) to them; the trace records those stats as
`scheduler_stats`. That is the path an installed plugin's stat logger (docs/plugin.md) takes.

With `--contract` every step also records the engine's own ground truth for
the kv-routing contract (toolkit/contracts/kv.py): `published` (batches handed
to the publisher so far, so its last seq is published - 1), `load` (running,
waiting, KV usage and cumulative prefix-cache queries/hits, from the
scheduler's own SchedulerStats) and `probe_overlap` (for each prompt of the
workload: how many of its leading blocks the block pool holds, by the engine's
own block hash); with `--stat-loggers` also `stats_handed` (SchedulerStats handed to
the stat loggers so far in this workload: the plugin's newest message then
carries `step` <= stats_handed - 1). `--probes-out PATH` first writes every workload's prompts
(the probes a consumer routes) as {"<workload>/<request>": [tokens]}.

Usage: python runner.py --out TRACE.jsonl [--workloads a,b] [--kv-events JSON] [--stat-loggers]
                        [--contract [--probes-out PATH]]
                        [--wait-for PATH --wait-seconds N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time

# The sibling driver; importable because Python puts a script's own directory first on sys.path.
from engine_truth import engine_overlap, frontend_stat_loggers, load_figures, probes_of, stats_record
from fake_engine import (
    MODEL_CONFIG,
    Engine,
    StepOutputs,
    fake_output,
    make_request,
    use_cpu_platform,
)
from release_api import cached_requests

# ---------------------------------------------------------------- workloads
# Each workload is a list of arrivals and actions keyed by step number.


def _tokens(rng: random.Random, n: int) -> list[int]:
    return [3 + rng.randrange(50000) for _ in range(n)]


def workload_shared_prefix(rng: random.Random) -> dict:
    system = _tokens(rng, 64)
    plan: dict[int, list] = {}
    for conv in range(4):
        history = system + _tokens(rng, 20 + 7 * conv)
        for turn in range(3):
            step = conv * 2 + turn * 6
            plan.setdefault(step, []).append(("add", f"chat{conv}-t{turn}", list(history), 6))
            history = history + _tokens(rng, 24)
    return {"config": {"num_blocks": 96, "max_num_seqs": 4, "max_batched": 128}, "plan": plan}


def workload_chunked_prefill(rng: random.Random) -> dict:
    plan = {
        0: [("add", "long0", _tokens(rng, 700), 4)],
        1: [("add", "long1", _tokens(rng, 530), 4)],
        3: [("add", "short0", _tokens(rng, 40), 8)],
    }
    return {"config": {"num_blocks": 160, "max_num_seqs": 4, "max_batched": 192}, "plan": plan}


def workload_preemption(rng: random.Random) -> dict:
    shared = _tokens(rng, 48)
    plan = {step: [("add", f"p{step}", shared + _tokens(rng, 30 + 11 * step), 40)] for step in range(6)}
    return {"config": {"num_blocks": 30, "max_num_seqs": 6, "max_batched": 256}, "plan": plan}


def workload_aborts(rng: random.Random) -> dict:
    shared = _tokens(rng, 40)
    plan: dict[int, list] = {0: [("add", f"a{i}", shared + _tokens(rng, 25 + i), 30) for i in range(4)]}
    plan[3] = [("abort", "a1")]
    plan[5] = [("abort", "a3"), ("add", "a4", shared + _tokens(rng, 10), 5)]
    plan[7] = [("abort", "a0")]
    return {"config": {"num_blocks": 64, "max_num_seqs": 4, "max_batched": 128}, "plan": plan}


def workload_prefix_reset(rng: random.Random) -> dict:
    shared = _tokens(rng, 48)
    plan: dict[int, list] = {
        0: [("add", "r0", shared + _tokens(rng, 20), 3), ("add", "r1", shared + _tokens(rng, 9), 3)]
    }
    plan[12] = [("reset",), ("add", "r2", shared + _tokens(rng, 5), 3)]
    plan[20] = [("add", "r3", shared + _tokens(rng, 7), 3)]
    return {"config": {"num_blocks": 48, "max_num_seqs": 4, "max_batched": 128}, "plan": plan}


def workload_mixed(rng: random.Random) -> dict:
    plan: dict[int, list] = {}
    for i in range(10):
        length = rng.choice([5, 17, 33, 90, 200])
        plan.setdefault(rng.randrange(8), []).append(("add", f"m{i}", _tokens(rng, length), rng.choice([1, 4, 12])))
    return {"config": {"num_blocks": 80, "max_num_seqs": 5, "max_batched": 160}, "plan": plan}


WORKLOADS = {
    "shared-prefix": workload_shared_prefix,
    "chunked-prefill": workload_chunked_prefill,
    "preemption": workload_preemption,
    "aborts": workload_aborts,
    "prefix-reset": workload_prefix_reset,
    "mixed": workload_mixed,
}


def run_workload(
    name: str,
    seed: int,
    kv_events: dict | None,
    model_dir: str,
    out,
    *,
    hash_algo: str = "sha256",
    max_steps: int = 400,
    start_delay: float = 0.0,
    stat_loggers: bool = False,
    contract: bool = False,
) -> Engine:
    from vllm.v1.request import RequestStatus

    spec = WORKLOADS[name](random.Random(f"{seed}:{name}"))
    engine = _new_engine(kv_events, model_dir, hash_algo, spec["config"])
    loggers = frontend_stat_loggers(engine) if stat_loggers else []
    if start_delay:
        # ZMQ subscribers need a moment to finish connecting to a freshly bound PUB socket.
        print("VPATCH-RUNNER-ENGINE-READY", flush=True)
        time.sleep(start_delay)
    scheduler = engine.scheduler
    plan = spec["plan"]
    last_planned = max(plan)
    outputs: dict[str, list[int]] = {}
    probes = probes_of(name, spec) if contract else {}
    totals = {"prefix_cache_queries": 0, "prefix_cache_hits": 0}
    stats_handed = 0  # SchedulerStats handed to the stat loggers in this workload (the plugin's `step` counts them)
    step = 0
    while step < max_steps:
        actions = plan.get(step, [])
        reset_note = None
        for action in actions:
            if action[0] == "add":
                _, req_id, prompt, max_tokens = action
                scheduler.add_request(make_request(req_id, prompt, max_tokens))
            elif action[0] == "abort":
                scheduler.finish_requests(action[1], RequestStatus.FINISHED_ABORTED)
            elif action[0] == "reset":
                reset_note = bool(scheduler.reset_prefix_cache())
        _reset_seq, reset_events = engine.take_recorded()
        output = scheduler.schedule()
        scheduled = dict(sorted(output.num_scheduled_tokens.items()))
        runner_output = fake_output(scheduler, output, seed)
        admitted = {r.req_id: r.num_computed_tokens for r in output.scheduled_new_reqs}
        engine_outputs = StepOutputs(scheduler.update_from_output(output, runner_output))
        stats = engine_outputs.scheduler_stats
        for stat_logger in loggers:  # what AsyncLLM's output handler does with each EngineCoreOutputs
            stat_logger.record(scheduler_stats=stats, iteration_stats=None)
        if stats is not None:  # handed to whatever loggers the frontend built (none: the plugin is missing)
            stats_handed += 1
        finished = []
        for item in engine_outputs.outputs:
            outputs.setdefault(item.request_id, []).extend(item.new_token_ids)
            if item.finish_reason is not None:
                finished.append(item.request_id)
        seq, events = engine.take_recorded()
        record = {
            "workload": name,
            "step": step,
            "actions": [list(a[:2]) if a[0] != "reset" else ["reset", reset_note] for a in actions],
            "scheduled": scheduled,
            "new": sorted(r.req_id for r in output.scheduled_new_reqs),
            "resumed": sorted(r.req_id for r in cached_requests(output) if r.resumed_from_preemption),
            "preempted": sorted(set(_preempted(scheduler, output))),
            "finished": sorted(finished),
            "num_computed_on_admit": dict(sorted(admitted.items())),
            "blocks": {r: engine.blocks_of(r) for r in sorted(scheduler.requests)},
            "num_free_blocks": engine.block_pool.get_num_free_blocks(),
            "cached_hashes": engine.cached_hashes(),
            "events": reset_events + events,
            "event_seq": seq,
        }
        if stat_loggers:
            record["scheduler_stats"] = stats_record(stats)
        if contract:
            record["published"] = engine.published
            if stat_loggers:
                record["stats_handed"] = stats_handed
            record["load"] = load_figures(engine_outputs.scheduler_stats, totals)
            record["probe_overlap"] = {pid: engine_overlap(engine, tokens) for pid, tokens in probes.items()}
        out.write(json.dumps(record, sort_keys=True) + "\n")
        step += 1
        if step > last_planned and not scheduler.has_unfinished_requests():
            break
    out.write(
        json.dumps(
            {
                "workload": name,
                "summary": True,
                "steps": step,
                "outputs": dict(sorted(outputs.items())),
                "num_free_blocks": engine.block_pool.get_num_free_blocks(),
                "num_blocks": engine.block_pool.num_gpu_blocks,
                "publisher": _publisher_class(engine),
            },
            sort_keys=True,
        )
        + "\n"
    )
    out.flush()
    for stat_logger in loggers:  # the next workload's engine binds the same endpoints
        getattr(stat_logger, "close", lambda: None)()
    return engine


def run_stream(engine: Engine, *, steps: int, seed: int, model_seconds: float = 0.0) -> float:
    """A steady stream of shared-prefix requests for `steps` steps; returns the seconds spent in steps.

    Used to measure per-step overhead: only schedule(), the fake model and update_from_output() are timed;
    `model_seconds` adds a sleep standing in for a real forward pass.
    """
    rng = random.Random(seed)
    scheduler = engine.scheduler
    prefixes = [_tokens(rng, 48) for _ in range(4)]
    spent = 0.0
    for step in range(steps):
        if step % 2 == 0:
            prompt = rng.choice(prefixes) + _tokens(rng, rng.randrange(16, 80))
            scheduler.add_request(make_request(f"s{seed}-{step}", prompt, rng.randrange(4, 16)))
        start = time.perf_counter()
        output = scheduler.schedule()
        if model_seconds:
            time.sleep(model_seconds)  # stands in for the forward pass (which releases the GIL)
        scheduler.update_from_output(output, fake_output(scheduler, output, seed))
        spent += time.perf_counter() - start
    return spent


def _publisher_class(engine: Engine) -> str | None:
    """The KV-event publisher vLLM's factory built for this engine (module.class), None without one."""
    publisher = getattr(engine.scheduler, "kv_event_publisher", None)
    return None if publisher is None else f"{type(publisher).__module__}.{type(publisher).__qualname__}"


def _wait_until_free(kv_events: dict | None, seconds: float = 20.0) -> None:
    """Each workload's engine binds the same endpoints again, and the previous engine's sockets are closed
    asynchronously (ZMQ's I/O thread): wait until its TCP ports can be bound again."""
    import socket

    ports = []
    for key in ("endpoint", "replay_endpoint"):
        endpoint = (kv_events or {}).get(key) or ""
        if endpoint.startswith("tcp://") and endpoint.rsplit(":", 1)[-1].isdigit():
            ports.append(int(endpoint.rsplit(":", 1)[-1]))
    deadline = time.monotonic() + seconds
    for port in ports:
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("127.0.0.1", port))
                    break
                except OSError:
                    time.sleep(0.1)


def _new_engine(kv_events: dict | None, model_dir: str, hash_algo: str, config: dict) -> Engine:
    """The engine of a workload; a bind that still finds a port in use (see `_wait_until_free`) is retried."""
    for attempt in range(40):
        try:
            return Engine(kv_events=kv_events, model_dir=model_dir, hash_algo=hash_algo, **config)
        except Exception as exc:  # zmq.ZMQError (upstream) or the ValueError dynamo-base wraps it in
            if "Address already in use" not in str(exc) or attempt == 39:
                raise
            time.sleep(0.25)
    raise AssertionError("unreachable")


def _preempted(scheduler, output) -> list[str]:
    return [r.request_id for r in scheduler.waiting if r.status.name == "PREEMPTED"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--hash-algo",
        choices=("sha256", "builtin"),
        default="sha256",
        help="prefix-caching hash: builtin hashes differ between processes on Python < 3.12 "
        "(hash(None) is address-based), so traces compare across processes only with sha256",
    )
    parser.add_argument("--kv-events", help="KVEventsConfig as JSON (dynamo-base only)")
    parser.add_argument(
        "--stat-loggers", action="store_true", help="feed each step's SchedulerStats to the frontend's stat loggers"
    )
    parser.add_argument("--wait-for", help="after the run, keep publishers alive until this file exists")
    parser.add_argument("--wait-seconds", type=float, default=60)
    parser.add_argument(
        "--start-delay",
        type=float,
        default=0.0,
        help="pause after building each engine, before its first step (lets subscribers join)",
    )
    parser.add_argument("--contract", action="store_true", help="record the kv-routing contract's ground truth")
    parser.add_argument("--probes-out", help="write every workload's prompts (probe id -> tokens) here first")
    args = parser.parse_args(argv)
    use_cpu_platform()
    kv_events = json.loads(args.kv_events) if args.kv_events else None
    with tempfile.TemporaryDirectory(prefix="vpatch-model-") as model_dir:
        with open(os.path.join(model_dir, "config.json"), "w") as handle:
            json.dump(MODEL_CONFIG, handle)
        names = args.workloads.split(",")
        unknown = [n for n in names if n not in WORKLOADS]
        if unknown:
            print(f"unknown workload(s): {', '.join(unknown)}", file=sys.stderr)
            return 2
        if args.probes_out:
            probes = {}
            for name in names:
                probes.update(probes_of(name, WORKLOADS[name](random.Random(f"{args.seed}:{name}"))))
            partial = args.probes_out + ".partial"
            with open(partial, "w") as handle:
                json.dump(probes, handle, sort_keys=True)
            os.replace(partial, args.probes_out)  # a reader sees the whole file or none
        engine = None
        with open(args.out, "w") as out:
            for name in names:
                if engine is not None:
                    engine.shutdown()
                    _wait_until_free(kv_events)
                engine = run_workload(
                    name,
                    args.seed,
                    kv_events,
                    model_dir,
                    out,
                    hash_algo=args.hash_algo,
                    start_delay=args.start_delay,
                    stat_loggers=args.stat_loggers,
                    contract=args.contract,
                )
        print("VPATCH-RUNNER-DONE", flush=True)
        if args.wait_for:
            # Subscribers may still be catching up through replay: keep the publisher alive.
            deadline = time.monotonic() + args.wait_seconds
            while not os.path.exists(args.wait_for) and time.monotonic() < deadline:
                time.sleep(0.05)
        if engine is not None:
            engine.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
