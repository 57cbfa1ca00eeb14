"""Runs inside a vLLM venv (imported by pd_scenarios.py, run there by path): the P/D fake worker.

A fake worker stands in for the GPU model runner. It keeps a real KV cache per layer in the attention
backend's own layout (FlashAttention's `(2, num_blocks, block_size, heads, head_size)` on vLLM 0.8.4),
writes a deterministic KV vector for every token it computes at the token's slot, and samples each next
token from a digest of the bytes of all the KV the request's blocks hold for the positions before it.
A token therefore depends on every transferred byte: a decode engine whose loaded KV differs in any byte
from what computing the prompt locally would have written samples different tokens. `WorkerHalf` drives
the worker half of a P/D connector through each release's connector API.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass, field

import fake_engine  # the sibling drivers: engines; how each release spells a model runner output
import release_api

BLOCK_SIZE = fake_engine.BLOCK_SIZE
NUM_LAYERS = 2
NUM_HEADS = 2
HEAD_SIZE = 8


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

    def __init__(self, engine: fake_engine.Engine, transfer: dict) -> None:
        try:
            from vllm.v1.kv_transfer.factory import make_worker_connector
        except ImportError:
            from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory
            from vllm.distributed.kv_transfer.kv_connector.v1 import KVConnectorRole

            # vLLM 0.10 renamed create_connector_v1 to create_connector (V0's connectors are gone)
            create = getattr(KVConnectorFactory, "create_connector_v1", None) or KVConnectorFactory.create_connector
            self.connector = create(
                engine.vllm_config, KVConnectorRole.WORKER, **release_api.connector_cache_config(create, engine)
            )
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
        for cached in release_api.cached_requests(output):
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
        return release_api.model_runner_output(req_ids, sampled, **extra)

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
    """A request's block ids (vLLM 0.9 lists them per KV-cache group; P/D has one group; 0.10 says None
    for a step that added no block)."""
    if block_ids is None:
        return []
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


def blocks_of(engine: fake_engine.Engine, req_id: str) -> list:
    """The blocks the engine's KV-cache manager holds for a request."""
    return fake_engine.request_blocks(engine.scheduler.kv_cache_manager, req_id)


def referenced_blocks(engine: fake_engine.Engine) -> list[int]:
    pool = engine.block_pool
    null = getattr(pool, "null_block", None)
    return [b.block_id for b in pool.blocks if b.ref_cnt > 0 and b is not null]
