"""Runs inside a vLLM venv, run by path: the prefill/decode disaggregation scenarios.

`--mode aggregated` runs every scenario's requests through one plain engine (works on stock vLLM: it is
the reference). `--mode disagg` (dynamo-base with the pd-disagg series) runs them through a prefill
engine and a decode engine that hand requests over through the shared-storage connector, and records
what the invariants need: each request's outputs, blocks still referenced after the drain, transfers
left in the storage directory, and any request whose blocks were freed while a transfer held them.
The engines' model is the fake worker of pd_worker.py, whose sampled tokens depend on every byte of KV
a request's blocks hold.

Usage: python pd_scenarios.py --out RESULTS.json --mode aggregated|disagg [--scenarios a,b] [--sabotage]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import sys
import tempfile
import time

# The sibling drivers; importable because Python puts a script's own directory first on sys.path.
import fake_engine
from pd_worker import BLOCK_SIZE, FakeWorker, WorkerHalf, blocks_of, referenced_blocks

SHARED_STORAGE = "SharedStorageConnectorV1"
NIXL = "NixlConnectorV1"
# Where dynamo-base's NixlConnectorV1 lives: 0.8.4's own connector interface (patch 0009), upstream's V1 connector
# API from 0.8.5 (0009, then 0015 until it retired at 0.13.0).
SERIES_NIXL_MODULES = ("vllm.v1.kv_transfer.nixl", "vllm.distributed.kv_transfer.kv_connector.v1.nixl_transfer")


# ---------------------------------------------------------------- scenarios
# requests: (req_id, prompt, max_tokens, arrival step); each scenario may set connector options and faults.


def _tokens(rng: random.Random, n: int) -> list[int]:
    return [3 + rng.randrange(50_000) for _ in range(n)]


def _requests(rng: random.Random, lengths: list[int], prefix_len: int = 40) -> list[tuple]:
    prefixes = [_tokens(rng, prefix_len) for _ in range(2)]
    requests = []
    for i, length in enumerate(lengths):
        if length > prefix_len + 4 and i % 3:
            prompt = prefixes[i % 2] + _tokens(rng, length - prefix_len)
        else:
            prompt = _tokens(rng, length)
        requests.append((f"r{i}", prompt, 6 + i % 5, i // 2))
    return requests


def scenario(name: str, seed: int) -> dict:
    rng = random.Random(f"{seed}:{name}")
    # Lengths cover: one token (nothing to transfer), a block exactly (last token recomputed in the
    # same block), a block plus one, long prompts that share a prefix (decode-side prefix hits, so a
    # load starts past block 0), and chunked prefill (max_batched below the prompt length).
    lengths = [1, BLOCK_SIZE, BLOCK_SIZE + 1, 90, 120, 75, 33, 140]
    spec: dict = {
        "requests": _requests(rng, lengths),
        "config": {"num_blocks": 160, "max_num_seqs": 8, "max_batched": 96},
        "extra": {},
        "faults": {},
        "aborts": {},
        "handoff_delay": 1,
        "connector": SHARED_STORAGE,
    }
    if name == "pd-handoff":
        pass
    elif name == "pd-nixl":
        spec["connector"] = NIXL  # the decode worker READs the prefill worker's blocks through NIXL
    elif name == "pd-hold":
        spec["ack_delay"] = 3  # the prefill engine must keep blocks until the (late) acknowledgement
    elif name == "pd-fallback":
        spec["faults"] = {"r3": "wrong-prompt", "r4": "truncated", "r6": "missing"}
        spec["extra"] = {"load_timeout_s": 0.4}
    elif name == "pd-fail":
        spec["faults"] = {"r3": "truncated"}
        spec["extra"] = {"on_load_failure": "fail"}
    elif name == "pd-preempt":
        # A decode engine short of blocks preempts running requests whose KV was loaded: they must compute
        # their prompt again locally (the transfer is gone), not wait for a second load.
        spec["requests"] = [(r, prompt, 70 + n % 7, at) for n, (r, prompt, _, at) in enumerate(spec["requests"])]
        spec["decode_blocks"] = 24
        spec["extra"] = {"load_timeout_s": 30}
    elif name == "pd-abort":
        # r6 is aborted on the decode engine while its KV is still missing (waiting for remote KV);
        # r7 on the prefill engine halfway through its chunked prefill.
        spec["faults"] = {"r6": "late"}
        spec["aborts"] = {"decode": ["r6"], "prefill": ["r7"]}
        spec["extra"] = {"load_timeout_s": 30}
    else:
        raise KeyError(name)
    return spec


SCENARIOS = ("pd-handoff", "pd-hold", "pd-fallback", "pd-fail", "pd-abort", "pd-preempt", "pd-nixl")


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing (0.8.4's vllm.v1.kv_transfer elsewhere)
        return False


def nixl_missing() -> str | None:
    """Why the NIXL scenario cannot run in this venv (None: it can): this vLLM has no NixlConnectorV1 (a series
    that retired it, or stock), or NIXL does not load."""
    if not any(_has_module(m) for m in SERIES_NIXL_MODULES):
        modules = ", ".join(SERIES_NIXL_MODULES)
        # the engine tier runs what a NixlConnectorV1 deployment moves to (engine-pd-nixl)
        return f"this vLLM has no {NIXL} (none of {modules}): the series carries no NIXL patch"
    try:
        import nixl._api  # noqa: F401
    except Exception as e:  # ImportError, or a NIXL build that cannot load its libraries
        return f"nixl is not importable here: {e}"
    return None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_aggregated(name: str, seed: int, model_dir: str) -> dict:
    spec = scenario(name, seed)
    engine = fake_engine.Engine(kv_events=None, model_dir=model_dir, hash_algo="sha256", **spec["config"])
    worker = FakeWorker(spec["config"]["num_blocks"])
    outputs: dict[str, list[int]] = {}
    pending = sorted(spec["requests"], key=lambda r: r[3])
    step = 0
    while pending or engine.scheduler.has_unfinished_requests():
        while pending and pending[0][3] <= step:
            req_id, prompt, max_tokens, _ = pending.pop(0)
            engine.scheduler.add_request(fake_engine.make_request(req_id, prompt, max_tokens))
        _step(engine, worker, outputs)
        step += 1
    engine.shutdown()
    return {"outputs": dict(sorted(outputs.items())), "leaked_blocks": referenced_blocks(engine)}


def _step(
    engine: fake_engine.Engine,
    worker: FakeWorker,
    outputs: dict,
    finals: dict | None = None,
    preempted: set | None = None,
):
    """One engine step; returns (the step's engine-core outputs, the number of tokens it scheduled).
    `preempted` collects the requests the step preempted."""
    from vllm.v1.request import RequestStatus

    output = engine.scheduler.schedule()
    if preempted is not None:
        preempted.update(r.request_id for r in engine.scheduler.waiting if r.status == RequestStatus.PREEMPTED)
    result = fake_engine.StepOutputs(engine.scheduler.update_from_output(output, worker.execute(output)))
    for item in result.outputs:
        outputs.setdefault(item.request_id, []).extend(item.new_token_ids)
        if item.finish_reason is not None and finals is not None:
            finals[item.request_id] = {
                "finish_reason": item.finish_reason.name,
                "kv_transfer_params": getattr(item, "kv_transfer_params", None),
            }
    return result.outputs, output.total_num_scheduled_tokens


def _apply_fault(fault: str, storage: str, params: dict) -> dict:
    """Damage or withhold a transfer the way a broken transport would."""
    where = os.path.join(storage, params.get("transfer_key", ""))
    if fault == "wrong-prompt":
        manifest_path = os.path.join(where, "manifest.json")
        with open(manifest_path) as f:
            manifest = json.load(f)
        manifest["token_ids"][0] += 1
        with open(manifest_path, "w") as f:
            json.dump(manifest, f)
    elif fault == "truncated":
        data = os.path.join(where, "kv.bin")
        with open(data, "r+b") as f:
            f.truncate(os.path.getsize(data) // 2)
    elif fault in ("missing", "late"):
        # The transfer never shows up ("missing") or shows up much later ("late"): move it aside.
        shutil.move(where, where + ".aside")
    return params


def run_disagg(name: str, seed: int, model_dir: str, sabotage: bool = False) -> dict:
    from vllm.v1.request import RequestStatus

    spec = scenario(name, seed)
    if spec["connector"] == NIXL and (why := nixl_missing()):
        return {"skipped": why}
    storage = tempfile.mkdtemp(prefix="vpatch-pd-")
    try:
        if spec["connector"] == NIXL:
            transfer = {"kv_connector": NIXL, "kv_ip": "127.0.0.1", "kv_port": _free_port()}
            # No busy progress threads: transfers progress as the engines step (as they do here).
            common: dict[str, object] = {"progress_thread": False}
        else:
            transfer = {"kv_connector": SHARED_STORAGE}
            common = {"storage_path": storage}
        prefill_cfg = {**transfer, "kv_role": "kv_producer"}
        prefill_cfg["kv_connector_extra_config"] = {**common, "engine_id": "prefill-0"}
        decode_cfg = {**transfer, "kv_role": "kv_consumer"}
        decode_cfg["kv_connector_extra_config"] = {**common, **spec["extra"]}
        num_blocks = spec["config"]["num_blocks"]
        decode_blocks = spec.get("decode_blocks", num_blocks)
        engine_args = {"kv_events": None, "model_dir": model_dir, "hash_algo": "sha256", **spec["config"]}
        prefill = fake_engine.Engine(kv_transfer=prefill_cfg, **engine_args)
        decode = fake_engine.Engine(kv_transfer=decode_cfg, **{**engine_args, "num_blocks": decode_blocks})
        prefill_worker = FakeWorker(num_blocks, WorkerHalf(prefill, prefill_cfg))
        decode_worker = FakeWorker(decode_blocks, WorkerHalf(decode, decode_cfg))
        prefill_worker.ack_delay = spec.get("ack_delay", 0)
        decode_worker.sabotage = sabotage

        prefill_outputs: dict[str, list[int]] = {}
        prefill_finals: dict[str, dict] = {}
        decode_outputs: dict[str, list[int]] = {}
        decode_finals: dict[str, dict] = {}
        max_tokens = {r[0]: r[2] for r in spec["requests"]}
        prompts = {r[0]: r[1] for r in spec["requests"]}
        pending = sorted(spec["requests"], key=lambda r: r[3])
        handoffs: list[tuple[int, str, dict | None]] = []
        freed_while_held: list[str] = []
        held_seen: set[str] = set()
        waited_remote: set[str] = set()
        aborted: list[str] = []
        preempted: set[str] = set()
        step = 0
        deadline = time.monotonic() + 60
        while pending or handoffs or prefill.scheduler.has_requests() or decode.scheduler.has_requests():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: no progress after 60 s")
            while pending and pending[0][3] <= step:
                req_id, prompt, _, _ = pending.pop(0)
                request = fake_engine.make_request(
                    req_id, prompt, 1, {"kv_transfer_params": {"do_remote_decode": True}}
                )
                prefill.scheduler.add_request(request)
            for req_id in spec["aborts"].get("prefill", []):
                request = prefill.scheduler.requests.get(req_id)
                if request is not None and 0 < request.num_computed_tokens < request.num_prompt_tokens:
                    prefill.scheduler.finish_requests(req_id, RequestStatus.FINISHED_ABORTED)
                    aborted.append(req_id)
            prefill_items, prefill_tokens = _step(prefill, prefill_worker, prefill_outputs, prefill_finals)
            for item in prefill_items:
                if item.finish_reason is not None and item.request_id not in aborted:
                    params = getattr(item, "kv_transfer_params", None)
                    handoffs.append((step + spec["handoff_delay"], item.request_id, params))
            # Blocks a held request still owns must stay referenced until the acknowledgement.
            for req_id in prefill.scheduler._kv_held:
                held_seen.add(req_id)
                if any(b.ref_cnt == 0 for b in blocks_of(prefill, req_id)):
                    freed_while_held.append(req_id)
            due = [h for h in handoffs if h[0] <= step]
            handoffs = [h for h in handoffs if h[0] > step]
            for _, req_id, params in due:
                if req_id in aborted:
                    continue
                extra = None
                if params:
                    fault = spec["faults"].get(req_id)
                    if fault:
                        _apply_fault(fault, storage, params)
                    extra = {"kv_transfer_params": params}
                decode.scheduler.add_request(
                    fake_engine.make_request(req_id, prompts[req_id], max_tokens[req_id], extra)
                )
            for req_id, request in list(decode.scheduler.requests.items()):
                if request.status == RequestStatus.WAITING_FOR_REMOTE_KVS:
                    waited_remote.add(req_id)
                    if req_id in spec["aborts"].get("decode", []) and req_id not in aborted:
                        decode.scheduler.finish_requests(req_id, RequestStatus.FINISHED_ABORTED)
                        aborted.append(req_id)
            _, decode_tokens = _step(decode, decode_worker, decode_outputs, decode_finals, preempted)
            if not (prefill_tokens or decode_tokens or pending or handoffs):
                time.sleep(0.02)  # only transfers or timeouts are pending: let wall time pass
            step += 1
        leftovers = sorted(n for n in os.listdir(storage) if not n.endswith(".aside"))
        result = {
            "prefill_outputs": dict(sorted(prefill_outputs.items())),
            "outputs": dict(sorted(decode_outputs.items())),
            "finals": dict(sorted(decode_finals.items())),
            "prefill_finals": dict(sorted(prefill_finals.items())),
            "aborted": sorted(aborted),
            "waited_for_remote_kv": sorted(waited_remote),
            "preempted": sorted(preempted),
            "held_for_transfer": sorted(held_seen),
            "freed_while_held": sorted(set(freed_while_held)),
            "leaked_blocks": {"prefill": referenced_blocks(prefill), "decode": referenced_blocks(decode)},
            "storage_leftovers": leftovers,
            "faults": spec["faults"],
            "steps": step,
            "connector_calls": {"prefill": prefill_worker.calls, "decode": decode_worker.calls},
        }
        prefill.shutdown()
        decode.shutdown()
        for worker in (prefill_worker, decode_worker):
            assert worker.connector is not None
            worker.connector.shutdown()
        return result
    finally:
        shutil.rmtree(storage, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--mode", choices=("aggregated", "disagg"), required=True)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--sabotage", action="store_true", help="disagg: change one KV value of every load")
    args = parser.parse_args(argv)
    fake_engine.use_cpu_platform()
    names = args.scenarios.split(",")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    results = {}
    with tempfile.TemporaryDirectory(prefix="vpatch-model-") as model_dir:
        with open(os.path.join(model_dir, "config.json"), "w") as handle:
            json.dump(fake_engine.MODEL_CONFIG, handle)
        for name in names:
            if args.mode == "aggregated":
                results[name] = run_aggregated(name, args.seed, model_dir)
            else:
                results[name] = run_disagg(name, args.seed, model_dir, sabotage=args.sabotage)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as out:
        json.dump({"mode": args.mode, "seed": args.seed, "scenarios": results}, out, indent=1, sort_keys=True)
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
