"""Prefill/decode disaggregation scenarios, run inside a vLLM venv as a script.

`--mode aggregated` runs every scenario's requests through one plain engine (works on stock vLLM: it is
the reference). `--mode disagg` (dynamo-base with the pd-disagg series) runs them through a prefill
engine and a decode engine that hand requests over through the shared-storage connector, and records
what the invariants need: each request's outputs, blocks still referenced after the drain, transfers
left in the storage directory, and any request whose blocks were freed while a transfer held them.

A fake worker stands in for the GPU model runner. It keeps a real KV cache per layer in the attention
backend's own layout (FlashAttention's `(2, num_blocks, block_size, heads, head_size)` on vLLM 0.8.4),
writes a deterministic KV vector for every token it computes at the token's slot, and samples each next
token from a digest of the bytes of all the KV the request's blocks hold for the positions before it.
A token therefore depends on every transferred byte: a decode engine whose loaded KV differs in any byte
from what computing the prompt locally would have written samples different tokens.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import runner  # the sibling script: engines, requests, CPU platform

BLOCK_SIZE = runner.BLOCK_SIZE
NUM_LAYERS = 2
NUM_HEADS = 2
HEAD_SIZE = 8
SHARED_STORAGE = "SharedStorageConnectorV1"
NIXL = "NixlConnectorV1"


@dataclass
class TransferReport:
    """What a worker's connector reported at the end of a step, whatever the API."""

    finished_sending: set[str] = field(default_factory=set)
    finished_recving: set[str] = field(default_factory=set)
    failed_recving: dict[str, str] = field(default_factory=dict)


class WorkerHalf:
    """The worker half of a P/D connector, driven as the patched model runner drives it.

    Three APIs: vLLM 0.8.4's series has its own connector interface (`vllm.v1.kv_transfer`: start_step
    before the forward pass, end_step after it); 0.8.5's extends upstream's V1 connector API
    (bind_connector_metadata every step, wait_for_save when the forward pass ends, get_finished()
    returning a KVTransferStatus, reported as ModelRunnerOutput.kv_transfer_status); from 0.9.0 upstream
    drives asynchronous transfers itself (start_load_kv every step, get_finished(finished_req_ids) ->
    (sending, recving)) and the series adds get_failed_recving() and set_kv_cache_block_dim().
    """

    def __init__(self, engine: runner.Engine, transfer: dict) -> None:
        try:
            from vllm.v1.kv_transfer.factory import make_worker_connector
        except ImportError:
            from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory
            from vllm.distributed.kv_transfer.kv_connector.v1 import KVConnectorRole

            self.connector = KVConnectorFactory.create_connector_v1(engine.vllm_config, KVConnectorRole.WORKER)
            self.api = "0.9" if hasattr(self.connector, "get_failed_recving") else "0.8.5"
        else:
            from vllm.config import KVTransferConfig

            self.connector = make_worker_connector(KVTransferConfig(**transfer))
            self.api = "0.8.4"

    def register(self, kv_caches: dict, block_dim: int) -> None:
        if self.api == "0.9":
            self.connector.set_kv_cache_block_dim(block_dim)
            self.connector.register_kv_caches(kv_caches)
        else:
            self.connector.register_kv_caches(kv_caches, block_dim)

    def start(self, meta) -> None:
        if self.api == "0.8.4":
            self.connector.start_step(meta)
            return
        self.connector.bind_connector_metadata(meta)
        if self.api == "0.9":
            self.connector.start_load_kv(None)

    def forward_done(self) -> None:
        if self.api != "0.8.4":
            self.connector.wait_for_save()

    def finish(self, finished_req_ids: set[str]) -> TransferReport:
        if self.api == "0.8.4":
            status = self.connector.end_step()
        elif self.api == "0.8.5":
            status = self.connector.get_finished()
            self.connector.clear_connector_metadata()
        else:
            sending, recving = self.connector.get_finished(finished_req_ids)
            failed = self.connector.get_failed_recving()
            self.connector.clear_connector_metadata()
            return TransferReport(set(sending or ()), set(recving or ()), dict(failed or {}))
        return TransferReport(set(status.finished_sending), set(status.finished_recving), dict(status.failed_recving))

    def model_runner_fields(self, report: TransferReport) -> dict:
        """The report as ModelRunnerOutput fields of this API."""
        if self.api == "0.9":
            return {
                "finished_sending": report.finished_sending or None,
                "finished_recving": report.finished_recving or None,
                "failed_recving": report.failed_recving or None,
            }
        if self.api == "0.8.5":
            from vllm.distributed.kv_transfer.kv_connector.v1 import KVTransferStatus
        else:
            from vllm.v1.kv_transfer.base import KVTransferStatus
        return {
            "kv_transfer_status": KVTransferStatus(
                finished_sending=report.finished_sending,
                finished_recving=report.finished_recving,
                failed_recving=report.failed_recving,
            )
        }

    def shutdown(self) -> None:
        shutdown = getattr(self.connector, "shutdown", None)
        if shutdown is not None:
            shutdown()


class FakeWorker:
    """The model runner's part in a step: block tables, KV writes, sampling, the connector's worker half."""

    def __init__(self, num_blocks: int, connector: WorkerHalf | None = None) -> None:
        import torch
        from vllm.v1.attention.backends.flash_attn import FlashAttentionBackend

        shape = FlashAttentionBackend.get_kv_cache_shape(num_blocks, BLOCK_SIZE, NUM_HEADS, HEAD_SIZE)
        self.kv = {f"model.layers.{i}.self_attn.attn": torch.zeros(shape) for i in range(NUM_LAYERS)}
        self.block_dim = _block_dim(FlashAttentionBackend.get_kv_cache_shape)
        self.connector = connector
        if connector is not None:
            connector.register(self.kv, self.block_dim)
        self.tables: dict[str, list[int]] = {}
        self.tokens: dict[str, list[int]] = {}
        self.computed: dict[str, int] = {}
        # Test hook: hold finished_sending reports back for this many steps (a slow acknowledgement).
        self.ack_delay = 0
        self._delayed: list[tuple[int, set[str]]] = []
        # Test hook: change one value in every landed load (proves the outputs notice a wrong byte).
        self.sabotage = False
        self._loads: dict[str, list[int]] = {}
        # The connector calls of every step that had any: what was asked of the transport, what ended.
        self.calls: list[dict] = []
        self._step = 0

    def execute(self, output):
        for req_id in output.finished_req_ids:
            for table in (self.tables, self.tokens, self.computed):
                table.pop(req_id, None)
        for new in output.scheduled_new_reqs:
            self.tables[new.req_id] = _group0(new.block_ids)
            self.tokens[new.req_id] = list(new.prompt_token_ids)
            self.computed[new.req_id] = new.num_computed_tokens
        for cached in output.scheduled_cached_reqs:
            if cached.resumed_from_preemption:
                self.tables[cached.req_id] = _group0(cached.new_block_ids)
            else:
                self.tables[cached.req_id].extend(_group0(cached.new_block_ids))
            self.computed[cached.req_id] = cached.num_computed_tokens
        if self.connector is not None:
            meta = getattr(output, "kv_connector_metadata", None)
            self._loads.update({load.req_id: load.block_ids for load in (meta.loads if meta else [])})
            asked = _describe_meta(meta)
            self.connector.start(meta)
        req_ids = sorted(output.num_scheduled_tokens)
        sampled = []
        for req_id in req_ids:
            start = self.computed[req_id]
            count = output.num_scheduled_tokens[req_id]
            tokens = self.tokens[req_id]
            self.write(req_id, start, tokens[start : start + count])
            if start + count >= len(tokens):
                token = self.sample(req_id, start + count)
                tokens.append(token)
                sampled.append([token])
            else:
                sampled.append([])  # a partial prefill samples nothing
        extra = {}
        if self.connector is not None:
            self.connector.forward_done()
            status = self.connector.finish(set(output.finished_req_ids))
            if self.sabotage:
                for req_id in status.finished_recving:
                    block = self._loads[req_id][-1]
                    next(iter(self.kv.values()))[0, block, 0, 0, 0] += 1.0
            extra = self.connector.model_runner_fields(self._delay_acks(status))
            ended = {
                "finished_sending": sorted(status.finished_sending),
                "finished_recving": sorted(status.finished_recving),
                "failed_recving": dict(sorted(status.failed_recving.items())),
            }
            call = {k: v for k, v in {**asked, **ended}.items() if v}
            if call:
                self.calls.append({"step": self._step, **call})
        self._step += 1
        return runner.model_runner_output(req_ids, sampled, **extra)

    def _delay_acks(self, status):
        if not self.ack_delay:
            return status
        self._delayed.append((self.ack_delay, set(status.finished_sending)))
        status.finished_sending = set()
        kept = []
        for left, req_ids in self._delayed:
            if left <= 0:
                status.finished_sending |= req_ids
            else:
                kept.append((left - 1, req_ids))
        self._delayed = kept
        return status

    def _slots(self, req_id: str, positions):
        import torch

        table = torch.tensor(self.tables[req_id], dtype=torch.long)
        return table[positions // BLOCK_SIZE], positions % BLOCK_SIZE

    def write(self, req_id: str, start: int, tokens: list[int]) -> None:
        import torch

        if not tokens:
            return
        positions = torch.arange(start, start + len(tokens))
        blocks, offsets = self._slots(req_id, positions)
        token_ids = torch.tensor(tokens, dtype=torch.long)
        lanes = torch.arange(1, NUM_HEADS * HEAD_SIZE + 1)
        for layer, kv in enumerate(self.kv.values()):
            for half in (0, 1):
                base = token_ids * 1_000_003 + positions * 7_919 + layer * 104_729 + half * 13
                values = ((base[:, None] * lanes[None, :]) % 65_521).float() / 65_521
                kv[half, blocks, offsets] = values.view(len(tokens), NUM_HEADS, HEAD_SIZE)

    def sample(self, req_id: str, num_positions: int) -> int:
        import torch

        blocks, offsets = self._slots(req_id, torch.arange(num_positions))
        digest = hashlib.blake2b(digest_size=8)
        for kv in self.kv.values():
            digest.update(kv[:, blocks, offsets].contiguous().numpy().tobytes())
        return 3 + int.from_bytes(digest.digest(), "little") % 50_000


def _describe_meta(meta) -> dict:
    if meta is None or not hasattr(meta, "saves"):
        return {}
    return {
        "saves": [{"req": s.req_id, "blocks": len(s.block_ids), "tokens": s.num_tokens} for s in meta.saves],
        "loads": [
            {"req": x.req_id, "first_block": x.first_block, "blocks": len(x.block_ids), "tokens": x.num_tokens}
            for x in meta.loads
        ],
        "cancelled_loads": list(meta.cancelled_loads),
    }


def _group0(block_ids: list) -> list[int]:
    """A request's block ids (vLLM 0.9 lists them per KV-cache group; P/D has one group)."""
    if block_ids and isinstance(block_ids[0], list):
        assert len(block_ids) == 1, "one KV-cache group"
        return list(block_ids[0])
    return list(block_ids)


def _block_dim(get_kv_cache_shape) -> int:
    # Where the series keeps block_dim_of: 0.8.4, 0.8.5, 0.9.
    for module in (
        "vllm.v1.kv_transfer.base",
        "vllm.distributed.kv_transfer.kv_connector.v1.async_transfer",
        "vllm.distributed.kv_transfer.kv_connector.v1.base",
    ):
        try:
            block_dim_of = importlib.import_module(module).block_dim_of
        except (ImportError, AttributeError):
            continue
        return block_dim_of(get_kv_cache_shape, BLOCK_SIZE, NUM_HEADS, HEAD_SIZE)
    return 1  # stock vLLM: only the aggregated reference runs there


def blocks_of(engine: runner.Engine, req_id: str) -> list:
    """The blocks the engine's KV-cache manager holds for a request."""
    manager = engine.scheduler.kv_cache_manager
    owner = getattr(manager, "single_type_manager", manager)  # vLLM 0.9 moved them
    return list(owner.req_to_blocks.get(req_id, []))


def referenced_blocks(engine: runner.Engine) -> list[int]:
    pool = engine.block_pool
    null = getattr(pool, "null_block", None)
    return [b.block_id for b in pool.blocks if b.ref_cnt > 0 and b is not null]


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


def nixl_missing() -> str | None:
    """Why the NIXL scenario cannot run in this venv (None: it can)."""
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
    engine = runner.Engine(kv_events=None, model_dir=model_dir, hash_algo="sha256", **spec["config"])
    worker = FakeWorker(spec["config"]["num_blocks"])
    outputs: dict[str, list[int]] = {}
    pending = sorted(spec["requests"], key=lambda r: r[3])
    step = 0
    while pending or engine.scheduler.has_unfinished_requests():
        while pending and pending[0][3] <= step:
            req_id, prompt, max_tokens, _ = pending.pop(0)
            engine.scheduler.add_request(runner.make_request(req_id, prompt, max_tokens))
        _step(engine, worker, outputs)
        step += 1
    engine.shutdown()
    return {"outputs": dict(sorted(outputs.items())), "leaked_blocks": referenced_blocks(engine)}


def _step(
    engine: runner.Engine, worker: FakeWorker, outputs: dict, finals: dict | None = None, preempted: set | None = None
):
    """One engine step; returns (the step's engine-core outputs, the number of tokens it scheduled).
    `preempted` collects the requests the step preempted."""
    from vllm.v1.request import RequestStatus

    output = engine.scheduler.schedule()
    if preempted is not None:
        preempted.update(r.request_id for r in engine.scheduler.waiting if r.status == RequestStatus.PREEMPTED)
    result = engine.scheduler.update_from_output(output, worker.execute(output))
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
        prefill = runner.Engine(kv_transfer=prefill_cfg, **engine_args)
        decode = runner.Engine(kv_transfer=decode_cfg, **{**engine_args, "num_blocks": decode_blocks})
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
                request = runner.make_request(req_id, prompt, 1, {"kv_transfer_params": {"do_remote_decode": True}})
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
                decode.scheduler.add_request(runner.make_request(req_id, prompts[req_id], max_tokens[req_id], extra))
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
    runner.use_cpu_platform()
    names = args.scenarios.split(",")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    results = {}
    with tempfile.TemporaryDirectory(prefix="vpatch-model-") as model_dir:
        with open(os.path.join(model_dir, "config.json"), "w") as handle:
            json.dump(runner.MODEL_CONFIG, handle)
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
