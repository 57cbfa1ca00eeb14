"""The engine tier's kv-routing check: a real engine publishes over ZMQ from its own process, the reference
consumer (`vpatch kv-watch --record`: the project's Subscriber, KVIndex and Router) follows it from another.

The engine (toolkit/serving/engine/kv_drive.py) binds its PUB and replay endpoints on loopback and writes
its ground truth after every step (cached block hashes, batches published, every probe prompt's leading
cached blocks); the consumer writes what it holds after every batch. The contract's own judge
(toolkit/contracts/kv.py) compares the two, step by step. The engine's outputs (same prompts as drive.py)
are returned too: this run is also the "features on" parity run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from toolkit.conformance.engine import MARK, PAIRS, PROMPTS, EngineRun, parse_run
from toolkit.conformance.engine_env import EngineEnv
from toolkit.conformance.engine_procs import engine_environment
from toolkit.conformance.engine_serve import free_port
from toolkit.conformance.envs import read_trace
from toolkit.contracts import kv
from toolkit.contracts.sides import INLINE_PUBLISHER, PLUGIN_PUBLISHER_ENV
from toolkit.envs import offline_env
from toolkit.errors import VpatchError
from toolkit.records.contract import ItemResult, decode_observations
from toolkit.records.status import Status

KV_DRIVER = Path(__file__).resolve().parents[1] / "serving" / "engine" / "kv_drive.py"
TIMEOUT_S = 600


@dataclass
class KvRun:
    run: EngineRun | None  # the engine's outputs (None when it failed)
    items: list[ItemResult]  # cached-prefixes, overlap, load-figures
    steps: int
    published: int
    batches_applied: int
    error: str = ""
    publisher: str = ""  # the KV-event publisher class the engine built (module.class), as it reported it


def engine_publisher(stdout: str) -> str:
    """The KV-event publisher class kv_drive.py reports on its result line ('' from a driver that does not)."""
    line = next((ln for ln in reversed(stdout.splitlines()) if ln.startswith(MARK)), "")
    return str(json.loads(line.removeprefix(MARK)).get("publisher") or "") if line else ""


def run_kv_routing(
    env: EngineEnv,
    model: Path,
    work: Path,
    *,
    extra_env: dict[str, str] | None = None,
    build: str = "dynamo-base",
    max_tokens: int = 16,
    load: bool = False,
) -> KvRun:
    """`load`: stock + the plugin; the plugin publishes its load figures on an endpoint of its own, which the
    consumer follows too (`kv-watch --metrics`), and the contract judges them step by step."""
    work.mkdir(parents=True, exist_ok=True)
    files = {k: work / f"kv.{k}" for k in ("trace", "probes", "record", "until", "log")}
    for path in files.values():
        path.unlink(missing_ok=True)
    port, replay = free_port(), free_port()
    consumer_argv = [sys.executable, "-m", "toolkit.cli", "kv-watch", f"tcp://127.0.0.1:{port}", "--worker", build]
    consumer_argv += ["--replay", f"tcp://127.0.0.1:{replay}", "--record", str(files["record"])]
    consumer_argv += ["--probes", str(files["probes"]), "--until", str(files["until"])]
    load_endpoint = f"tcp://127.0.0.1:{free_port()}" if load else None
    if load_endpoint is not None:
        consumer_argv += ["--metrics", load_endpoint]
        extra_env = {**(extra_env or {}), "DYNAMO_LOAD_METRICS_ENDPOINT": load_endpoint.replace("127.0.0.1", "*")}
        extra_env.update(PLUGIN_PUBLISHER_ENV)  # the plugin's inline KV-event publisher carries the events
    consumer_argv += ["--seconds", str(TIMEOUT_S + 60), "--json"]
    consumer = subprocess.Popen(
        consumer_argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=offline_env()
    )
    request = {
        "model": str(model),
        "prompts": list(PROMPTS),
        "pairs": [list(p) for p in PAIRS],
        "max_tokens": max_tokens,
        "block_size": 32,
        "kv_events": {
            "enable_kv_cache_events": True,
            "publisher": "zmq",
            "endpoint": f"tcp://*:{port}",
            "replay_endpoint": f"tcp://*:{replay}",
        },
        "trace": str(files["trace"]),
        "probes": str(files["probes"]),
        "start_delay": 2.0,
    }
    error, engine_run, publisher = "", None, ""
    try:
        with files["log"].open("w", encoding="utf-8") as log:
            proc = subprocess.run(
                [str(env.python), str(KV_DRIVER), json.dumps(request)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**engine_environment(), **(extra_env or {})},
                timeout=TIMEOUT_S,
            )
        with files["log"].open("a", encoding="utf-8") as log:  # vLLM logs to stdout: keep those lines too
            log.writelines(ln + "\n" for ln in proc.stdout.splitlines() if not ln.startswith("VPATCH-ENGINE "))
        if proc.returncode != 0:
            lines = files["log"].read_text("utf-8", "replace").strip().splitlines() or ["no output"]
            error = f"the engine exited ({proc.returncode}): {lines[-1][:300]}"
        else:
            engine_run = parse_run(proc.stdout, model)
            publisher = engine_publisher(proc.stdout)
            if load and publisher != INLINE_PUBLISHER:
                what = publisher or "not reported"
                error = f"the engine's KV-event publisher was {what}, not the plugin's {INLINE_PUBLISHER}"
    except subprocess.TimeoutExpired:
        error = f"the engine did not finish within {TIMEOUT_S} s"
    except VpatchError as exc:
        error = exc.message
    finally:
        files["until"].touch()
        try:
            out, err = consumer.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            consumer.kill()
            out, err = consumer.communicate()
    if error:
        return KvRun(None, [ItemResult(kv.FEATURE, i, Status.FAIL, error) for i in kv.ITEMS], 0, 0, 0, error, publisher)
    try:
        summary = json.loads(out or "")
    except ValueError:
        why = f"the consumer failed: {(err.strip().splitlines() or ['no output'])[-1]}"
        return KvRun(engine_run, [ItemResult(kv.FEATURE, i, Status.FAIL, why) for i in kv.ITEMS], 0, 0, 0, why)
    trace = read_trace(files["trace"])
    observations = decode_observations(files["record"].read_bytes()) if files["record"].exists() else []
    items = kv.judge(build, trace, observations, load_endpoint=load_endpoint)
    published = max((r["published"] for r in trace), default=0)
    return KvRun(engine_run, items, len(trace), published, int(summary.get("batches", 0)), publisher=publisher)
