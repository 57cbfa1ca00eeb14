"""`vpatch conform NEW --against OLD`: the feature contracts judged end to end on both sides.

kv-routing, per side and transport configuration (toolkit/contracts/sides.py): the scenario runner (vLLM's
real scheduler, block pool and ZMQ publisher with a fake model runner, toolkit/serving/drivers/runner.py)
runs in the side's venv and publishes on real sockets; `vpatch kv-watch --record` (the project's
Subscriber, KVIndex and Router, unchanged) follows it from another process and records what it holds after
every batch; toolkit/contracts/kv.py judges that against the engine's own per-step ground truth.
pd-disagg: toolkit/contracts/pd.py. Everything lands in one ContractResults record.
"""

from __future__ import annotations

import contextlib
import json
import platform
import re
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec

from toolkit import __version__
from toolkit.cache import atomic_write_text
from toolkit.conformance.envs import free_port, offline_env, read_trace, run_runner
from toolkit.contracts import kv, pd
from toolkit.contracts.sides import (
    INLINE_PUBLISHER,
    PLUGIN_ENDPOINT_ENV,
    PLUGIN_PUBLISHER_ENV,
    Side,
    TransportConfig,
    consumer_binds,
    consumer_endpoint,
    events_config,
    plugin_endpoint,
)
from toolkit.errors import VpatchError
from toolkit.records.codec import RecordError
from toolkit.records.contract import (
    BuildSpec,
    ConfigRun,
    ContractResults,
    ItemResult,
    Seen,
    Transport,
    decode_observations,
    encode_contract,
)
from toolkit.records.status import Status

CONSUMER = "vpatch kv-watch (toolkit.serving.kv Subscriber, KVIndex, Router), its own process"
TRANSPORT = "ZMQ PUB/SUB + replay ROUTER/DEALER over loopback TCP, engine and consumer in separate processes"
DEFAULT_WORKLOADS = ["shared-prefix", "preemption", "aborts", "prefix-reset"]
ENGINE_TIMEOUT_S = 900
ERROR_LINE = re.compile(r"\b(\w+(?:Error|Exception)): (.*)")


def run_kv_config(side: Side, config: TransportConfig, work: Path, workloads: list[str]) -> ConfigRun:
    """One side under one configuration: engine and consumer processes, then the judge."""
    name = f"{side.name}-{config.name}"
    work.mkdir(parents=True, exist_ok=True)
    endpoint, replay = config.endpoints(free_port(), free_port())
    binds = consumer_binds(side.build.kind, endpoint)
    # stock + plugin: the plugin binds its own load endpoint (DYNAMO_LOAD_METRICS_ENDPOINT), the consumer
    # follows it beside the events (`kv-watch --metrics`), as a deployment's router would
    load = plugin_endpoint(config, free_port()) if side.build.kind == "stock+plugin" else None
    transport = Transport(endpoint, consumer_endpoint(endpoint), binds, config.hash_algo, replay, load)
    files = {k: work / f"{name}.{k}" for k in ("trace", "probes", "record", "until", "sentinel", "log")}
    for path in files.values():
        path.unlink(missing_ok=True)
    consumer = _start_consumer(side.name, transport, files)
    runner: subprocess.Popen | None = None
    try:
        started = run_runner(
            side.venv,
            files["trace"],
            workloads=workloads,
            kv_events=events_config(side.build.kind, endpoint, replay),
            hash_algo=config.hash_algo,
            wait_for=files["sentinel"],
            start_delay=1.5,
            background=True,
            extra_args=("--contract", "--probes-out", str(files["probes"])),
            log=files["log"],
            stat_loggers=load is not None,
            extra_env={PLUGIN_ENDPOINT_ENV: load, **PLUGIN_PUBLISHER_ENV} if load is not None else None,
        )
        assert isinstance(started, subprocess.Popen)
        runner = started
        error = _wait_for_engine(runner, files["log"])
        files["until"].touch()
        out, err = consumer.communicate(timeout=120)
    finally:
        files["until"].touch()
        files["sentinel"].touch()
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
        if runner is not None:
            try:
                runner.wait(timeout=120)
            except subprocess.TimeoutExpired:
                runner.kill()
                runner.wait()
    engine_errors = _engine_errors(files["log"])
    seen = _seen(out)
    if error or seen is None:
        why = error or f"the consumer failed: {(err.strip().splitlines() or ['no output'])[-1]}"
        items = [ItemResult(kv.FEATURE, item, Status.FAIL, why) for item in kv.ITEMS]
        return ConfigRun(name, side.name, side.build, transport, items, seen, workloads, error=why)
    seen.errors = (engine_errors + seen.errors)[:8]
    trace = read_trace(files["trace"])
    publishers = {str(r["publisher"]) for r in trace if r.get("summary") and r.get("publisher")}
    if load is not None:  # stock + plugin: the events must have gone through the plugin's inline publisher
        transport.publisher = ", ".join(sorted(publishers)) or None
        if publishers != {INLINE_PUBLISHER}:
            why = f"the engine's KV-event publisher was {transport.publisher}, not the plugin's {INLINE_PUBLISHER}"
            items = [ItemResult(kv.FEATURE, item, Status.FAIL, why) for item in kv.ITEMS]
            return ConfigRun(name, side.name, side.build, transport, items, seen, workloads, error=why)
    try:
        observations = decode_observations(files["record"].read_bytes()) if files["record"].exists() else []
    except RecordError as exc:
        raise VpatchError(f"{files['record'].name}: {exc}") from None
    if observations:
        seen.encodings = dict(Counter(o.encoding for o in observations if o.encoding is not None))
    items = kv.judge(side.build.label, trace, observations, load_endpoint=load)
    if engine_errors and not any(o.stream == "events" for o in observations):
        for item in items:
            item.detail += f" (engine log: {engine_errors[0]})"
    steps = sum(1 for r in trace if not r.get("summary"))
    return ConfigRun(name, side.name, side.build, transport, items, seen, workloads, steps)


def _start_consumer(worker: str, transport: Transport, files: dict[str, Path]) -> subprocess.Popen:
    argv = [sys.executable, "-m", "toolkit.cli", "kv-watch", transport.consumer_endpoint, "--worker", worker]
    if transport.replay_endpoint:
        argv += ["--replay", consumer_endpoint(transport.replay_endpoint)]
    if transport.consumer_binds:
        argv.append("--bind")
    if transport.metrics_endpoint:
        argv += ["--metrics", consumer_endpoint(transport.metrics_endpoint)]
    argv += ["--record", str(files["record"]), "--probes", str(files["probes"]), "--until", str(files["until"])]
    argv += ["--seconds", str(ENGINE_TIMEOUT_S + 60), "--json"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=offline_env())


def _wait_for_engine(runner: subprocess.Popen, log: Path) -> str:
    """'' once the runner has finished every workload (it then waits for the sentinel); else why not."""
    deadline = time.monotonic() + ENGINE_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log.read_text("utf-8", "replace") if log.exists() else ""
        if "VPATCH-RUNNER-DONE" in text:
            return ""
        if runner.poll() is not None:
            last = (text.strip().splitlines() or ["no output"])[-1]
            return f"the engine exited ({runner.returncode}) before finishing: {last}"
        time.sleep(0.2)
    return f"the engine did not finish within {ENGINE_TIMEOUT_S} s"


def _engine_errors(log: Path) -> list[str]:
    """Distinct exceptions in the engine's log (e.g. an OverflowError in 0.9.0's publisher thread)."""
    if not log.exists():
        return []
    found: list[str] = []
    for line in log.read_text("utf-8", "replace").splitlines():
        match = ERROR_LINE.search(line)
        if match and (text := f"{match.group(1)}: {match.group(2)[:160]}") not in found:
            found.append(text)
    return found[:3]


def _seen(stdout: str | None) -> Seen | None:
    try:
        summary = json.loads(stdout or "")
    except ValueError:
        return None
    load = summary.get("load") or {}
    return Seen(
        received=summary["received"],
        batches=summary["batches"],
        decode_errors=summary["decode_errors"],
        restarts=summary["restarts"],
        unrecoverable=[list(g) for g in summary["unrecoverable"]],
        encodings=dict(summary["encodings"]),
        metrics_seen=summary["metrics"] is not None,
        errors=[*list(summary["errors"])[-5:], *list(load.get("errors", []))[-3:]],
        load_received=load.get("received", 0),
        load_missed=load.get("missed", 0),
    )


def run_contracts(
    project_name: str,
    sides: list[Side],
    configs: list[TransportConfig],
    features: list[str],
    work: Path,
    *,
    workloads: list[str] | None = None,
    jobs: int = 2,
) -> ContractResults:
    """Every feature's contract on every side: kv-routing under each configuration, pd-disagg once."""
    started = time.time()
    chosen = workloads or DEFAULT_WORKLOADS
    tasks = [(side, config) for side in sides for config in configs] if kv.FEATURE in features else []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        runs = list(pool.map(lambda t: run_kv_config(t[0], t[1], work / "kv", chosen), tasks))
    if pd.FEATURE in features:
        runs += [pd.run_pd_contract(side, work / "pd") for side in sides]
    by_side = {s.name: s.build for s in sides}
    figures = []
    for config in configs if kv.FEATURE in features else []:
        traces = [work / "kv" / f"{side}-{config.name}.trace" for side in ("old", "new")]
        if all(t.is_file() for t in traces):
            with contextlib.suppress(ValueError, KeyError):  # a trace cut short: the items say why
                figures.append(kv.compare_figures(config.name, read_trace(traces[0]), read_trace(traces[1])))
    return contract_results(
        project_name,
        by_side["new"],
        by_side.get("old", by_side["new"]),
        features,
        runs,
        started,
        figures_vs_old=figures or msgspec.UNSET,
    )


def contract_results(
    project: str,
    new: BuildSpec,
    old: BuildSpec,
    features: list[str],
    runs: list[ConfigRun],
    started: float,
    **extra: object,
) -> ContractResults:
    """The record of one contract run: ok when the new side has items and every one passes."""
    new_items = [i for r in runs if r.side == "new" for i in r.items]
    return ContractResults(
        project=project,
        new=new,
        old=old,
        features=features,
        consumer=CONSUMER,
        transport=TRANSPORT,
        runs=runs,
        ok=bool(new_items) and all(i.status == Status.PASS for i in new_items),
        toolkit=__version__,
        python=platform.python_version(),
        started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        seconds=round(time.time() - started, 3),
        **extra,  # type: ignore[arg-type]
    )


def write_results(results: ContractResults, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, encode_contract(results))
    return path


def evidence_name(project: str, new: BuildSpec, old: BuildSpec) -> str:
    """`vllm-0.9.0-against-0.8.4.json` (stock), `vllm-0.9.0+plugin-against-0.8.4.json` (stock + plugin)."""
    suffix = {"stock": "", "stock+plugin": "+plugin"}.get(new.kind, f"-{new.kind}")
    return f"{project}-{new.version}{suffix}-against-{old.version}.json"
