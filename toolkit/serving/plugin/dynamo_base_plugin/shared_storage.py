"""SharedStorageConnectorV1 for stock vLLM (connector API of 0.32.0): dynamo-base's asynchronous P/D transport
through a directory both engines see, loaded out of tree by `kv_connector_module_path`:

    {"kv_connector": "SharedStorageConnectorV1",
     "kv_connector_module_path": "dynamo_base_plugin.shared_storage",
     "kv_role": "kv_producer" | "kv_consumer" | "kv_both", "kv_load_failure_policy": "recompute" | "fail",
     "kv_connector_extra_config": {"storage_path": "/dev/shm/vllm-kv-transfer", "load_timeout_s": 60,
                                   "hold_timeout_s": 120, "engine_id": "prefill-0"}}

Written here for the API of vLLM 0.32.0 (three-argument constructor, `get_transfer_results` with per-request
`failed_recving`, `update_connector_output`); the transport and its on-disk format are patch 0013's:

- Prefill: a `do_remote_decode` request's KV (every prompt token but the last) is written once, by the worker,
  right after the forward pass that completes its prompt (`wait_for_save`, before the step's output is returned):
  `<storage>/<transfer key>/manifest.json` + `kv.bin` (per layer, the blocks in token order), staged under a
  dot-name and renamed, so a reader never sees half a transfer. The transfer is whole before the request can
  finish, so `request_finished` frees the blocks at once (no held blocks) and hands out the parameters.
- Decode: a request with the prefill's parameters waits in WAITING_FOR_REMOTE_KVS while the worker polls for its
  transfer every step (vLLM steps an engine with a waiting request even when nothing is scheduled), checks that
  it was computed for this prompt and this cache layout, copies the blocks into its own block ids (after a local
  prefix hit, only the rest) and removes the transfer. Anything wrong is a failed load with a one-line reason,
  reported in `failed_recving`; vLLM's `kv_load_failure_policy` then recomputes the prompt or fails the request.
- Load timeout (0008's `load_timeout_s`): a transfer not there that many seconds after the load started is a
  failed load ("no transfer after N s"). An abort while loading cancels the load at once (reported finished, so
  vLLM 0.32.0, which waits for the worker before freeing such blocks, frees them).
- Hold timeout (0010's `hold_timeout_s`): on this transport a prefill holds no blocks for the decode (the bytes
  are in storage before the request finishes), so what a decode engine that went away leaves behind is the stored
  transfer. The producer removes a transfer nobody read within `hold_timeout_s`, with a warning, also while the
  engine is idle (a timer thread: no engine step needed).

Blocks are staged through CPU memory, so it works wherever the KV cache lives; the portable path, not the fast one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
    KVConnectorTransferResults,
)
from vllm.logger import init_logger

from .transfer import (
    DATA,
    FORMAT_VERSION,
    MANIFEST,
    STAGING_PREFIX,
    Deadlines,
    HoldSweeper,
    LoadError,
    LoadPlan,
    check_manifest,
    default_storage_path,
    is_transfer_key,
    num_blocks,
    plan_load,
    read_options,
    remote_tokens,
    remove_transfer,
    transfer_key,
)

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.outputs import KVConnectorOutput
    from vllm.v1.request import Request

logger = init_logger(__name__)


@dataclass
class SaveSpec:
    req_id: str
    block_ids: list[int]  # the blocks of tokens [0, num_tokens), in token order
    num_tokens: int
    token_ids: list[int]
    key: str


@dataclass
class LoadSpec:
    req_id: str
    plan: LoadPlan
    token_ids: list[int]
    key: Any  # from the request's parameters: validated before it becomes a path


@dataclass
class TransferMetadata(KVConnectorMetadata):
    """Scheduler -> workers, once per step."""

    saves: list[SaveSpec] = field(default_factory=list)
    loads: list[LoadSpec] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)  # loads of requests that finished while loading


class SharedStorageConnectorV1(KVConnectorBase_V1):
    def __init__(self, vllm_config: VllmConfig, role: KVConnectorRole, kv_cache_config: KVCacheConfig) -> None:
        super().__init__(vllm_config, role, kv_cache_config)
        config = self._kv_transfer_config
        parallel = vllm_config.parallel_config
        if parallel.tensor_parallel_size * parallel.pipeline_parallel_size != 1:
            # Every worker would write its shard of the KV under the same transfer key.
            raise ValueError("SharedStorageConnectorV1 supports one worker per engine (tensor and pipeline parallel 1)")
        self.options = read_options(config.kv_connector_extra_config, getattr(config, "kv_load_failure_policy", None))
        self.storage_path: str = self.options["storage_path"] or default_storage_path()
        self.engine_id: str = self.options["engine_id"] or config.engine_id or uuid.uuid4().hex
        self.block_size: int = vllm_config.cache_config.block_size
        self.is_producer = bool(config.is_kv_producer)
        self.is_consumer = bool(config.is_kv_consumer)
        # Scheduler half.
        self._saves: list[SaveSpec] = []
        self._tracked: dict[str, Request] = {}  # do_remote_decode requests whose prompt is not computed yet
        self._saved: dict[str, SaveSpec] = {}  # ... and those whose save was handed to the workers
        self._loads: list[LoadSpec] = []
        self._cancels: list[str] = []
        self._loading: set[str] = set()  # loads handed to the workers and not reported finished
        self._loaded_once: set[str] = set()  # a producer writes a transfer once: a second load would find nothing
        # Worker half.
        self.kv_caches: dict[str, torch.Tensor] = {}
        self.block_dim = 1
        self._active: dict[str, LoadSpec] = {}
        self._deadlines = Deadlines()
        self._recved: set[str] = set()
        self._failed: set[str] = set()
        self._sweeper: HoldSweeper | None = None
        if role == KVConnectorRole.WORKER:
            os.makedirs(self.storage_path, exist_ok=True)
            if self.is_producer:
                self._sweeper = HoldSweeper(self.storage_path, self.options["hold_timeout_s"], self._hold_expired)

    # -- scheduler half ------------------------------------------------------------------------------------------

    def get_num_new_matched_tokens(self, request: Request, num_computed_tokens: int) -> tuple[int | None, bool]:
        if not self.is_consumer or request.request_id in self._loaded_once:
            return 0, False
        num_remote = remote_tokens(request.kv_transfer_params or {}, request.num_prompt_tokens)
        num_external = max(0, num_remote - num_computed_tokens)
        return num_external, num_external > 0  # the KV always arrives after this step

    def update_state_after_alloc(self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int) -> None:
        if not num_external_tokens:
            return  # no load (or the second call, after the load)
        params = request.kv_transfer_params or {}
        num_remote = remote_tokens(params, request.num_prompt_tokens)
        plan = plan_load(blocks.get_block_ids()[0], num_remote, num_external_tokens, self.block_size)
        prompt = list(request.prompt_token_ids or [])
        self._loads.append(LoadSpec(request.request_id, plan, prompt[:num_remote], params.get("transfer_key")))
        self._loading.add(request.request_id)
        self._loaded_once.add(request.request_id)

    def update_connector_output(self, connector_output: KVConnectorOutput) -> None:
        self._loading -= set(connector_output.finished_recving or ())

    def on_new_request(self, request: Request) -> None:
        if self.is_producer and (request.kv_transfer_params or {}).get("do_remote_decode"):
            self._tracked[request.request_id] = request

    def request_finished(self, request: Request, block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        req_id = request.request_id
        self._loaded_once.discard(req_id)
        self._tracked.pop(req_id, None)
        if req_id in self._loading:  # aborted while its KV loads: stop the load, vLLM frees the blocks after it
            self._cancels.append(req_id)
        save = self._saved.pop(req_id, None)
        if save is None:
            return False, None  # not a do_remote_decode request, or its prompt was never computed (aborted)
        # Written by the step that computed the prompt, before this request could finish: nothing to hold.
        return False, {
            "do_remote_prefill": True,
            "remote_engine_id": self.engine_id,
            "remote_request_id": req_id,
            "remote_block_ids": list(save.block_ids),
            "num_remote_tokens": save.num_tokens,
            "transfer_key": save.key,
        }

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> KVConnectorMetadata:
        """Called at the end of schedule(), before the scheduled requests' num_computed_tokens advance."""
        for req_id, request in list(self._tracked.items()):
            scheduled = scheduler_output.num_scheduled_tokens.get(req_id, 0)
            if not scheduled or request.num_computed_tokens + scheduled < request.num_prompt_tokens:
                continue  # not scheduled, or the prompt is not complete after this step
            del self._tracked[req_id]
            num_tokens = request.num_prompt_tokens - 1  # the decode engine computes the last prompt token itself
            if num_tokens <= 0 or self._kv_cache_manager is None:
                continue  # nothing a decode engine could use
            block_ids = self._kv_cache_manager.get_block_ids(req_id)[0][: num_blocks(num_tokens, self.block_size)]
            prompt = list(request.prompt_token_ids or [])[:num_tokens]
            save = SaveSpec(req_id, list(block_ids), num_tokens, prompt, transfer_key(self.engine_id, req_id))
            self._saved[req_id] = save
            self._saves.append(save)
        meta = TransferMetadata(self._saves, self._loads, self._cancels)
        self._saves, self._loads, self._cancels = [], [], []
        return meta

    # -- worker half ---------------------------------------------------------------------------------------------

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        """The block dimension is the one whose size is the engine's block count (one per layout, checked)."""
        count = self._kv_cache_config.num_blocks
        dims = {name: [d for d, size in enumerate(kv.shape) if size == count] for name, kv in kv_caches.items()}
        found = {tuple(d) for d in dims.values()}
        if len(found) != 1 or len(next(iter(found))) != 1:
            raise ValueError(f"SharedStorageConnectorV1: no single block dimension ({count} blocks) in {dims}")
        self.block_dim = next(iter(found))[0]
        self.kv_caches = dict(kv_caches)

    def start_load_kv(self, forward_context: ForwardContext, **kwargs: Any) -> None:
        meta = self._connector_metadata
        if isinstance(meta, TransferMetadata):
            for load in meta.loads:
                self._active[load.req_id] = load
                self._deadlines.add(load.req_id, self.options["load_timeout_s"])
            for req_id in meta.cancels:
                cancelled = self._active.pop(req_id, None)
                if cancelled is not None:
                    self._deadlines.discard(req_id)
                    remove_transfer(self.storage_path, cancelled.key)
                    self._end_load(req_id, "cancelled: the request finished while its KV was loading")
        self._poll_loads()

    def wait_for_layer_load(self, layer_name: str) -> None:
        return  # loads are asynchronous, into requests not in the batch

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: Any, **kwargs: Any) -> None:
        return  # saved whole, after the request finished

    def wait_for_save(self) -> None:
        meta = self._connector_metadata
        if not isinstance(meta, TransferMetadata):
            return
        for save in meta.saves:
            try:
                self._write(save)
            except Exception as exc:  # the engine goes on; the decode's load then fails or times out
                logger.error("KV transfer of request %s not written to %s: %s", save.req_id, self.storage_path, exc)
            else:
                if self._sweeper is not None:
                    self._sweeper.hold(save.key)

    def get_transfer_results(self, finished_req_ids: set[str]) -> KVConnectorTransferResults:
        recving, failed = self._recved | self._failed, set(self._failed)  # a failed load is a finished one too
        self._recved, self._failed = set(), set()
        return KVConnectorTransferResults(finished_recving=recving, failed_recving=failed)

    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str] | None, set[str] | None]:
        results = self.get_transfer_results(finished_req_ids)
        return results.finished_sending or None, results.finished_recving or None

    def shutdown(self) -> None:
        if self._sweeper is not None:
            self._sweeper.close()

    # -- bytes ---------------------------------------------------------------------------------------------------

    def _layout(self) -> list[dict[str, Any]]:
        layers = []
        for name, kv in self.kv_caches.items():
            shape = list(kv.shape)
            del shape[self.block_dim]
            layers.append({"name": name, "dtype": str(kv.dtype).removeprefix("torch."), "block_shape": shape})
        return layers

    def _block_bytes(self, kv: torch.Tensor) -> int:
        return kv.element_size() * kv.numel() // kv.shape[self.block_dim]

    def _write(self, save: SaveSpec) -> None:
        final = os.path.join(self.storage_path, save.key)
        staging = tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{save.key[:16]}-", dir=self.storage_path)
        try:
            ids = torch.tensor(save.block_ids, dtype=torch.long)
            with open(os.path.join(staging, DATA), "wb") as f:
                for kv in self.kv_caches.values():
                    blocks = kv.movedim(self.block_dim, 0).index_select(0, ids.to(kv.device)).contiguous()
                    f.write(blocks.cpu().view(torch.uint8).numpy().data)
            manifest = {
                "format": FORMAT_VERSION,
                "req_id": save.req_id,
                "num_tokens": save.num_tokens,
                "token_ids": save.token_ids,
                "num_blocks": len(save.block_ids),
                "layers": self._layout(),
            }
            with open(os.path.join(staging, MANIFEST), "w") as f:
                json.dump(manifest, f)
            remove_transfer(self.storage_path, save.key)  # a retried request id
            os.rename(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # still there only if the write failed

    def _poll_loads(self) -> None:
        expired = set(self._deadlines.expired())
        for req_id, load in list(self._active.items()):
            try:
                if not self._load(load):
                    if req_id not in expired:
                        continue  # not written yet
                    raise LoadError(f"no transfer after load_timeout_s={self.options['load_timeout_s']:g}")
            except LoadError as exc:
                remove_transfer(self.storage_path, load.key)  # meant for this request only
                self._end_load(req_id, str(exc))
            else:
                self._end_load(req_id, None)

    def _end_load(self, req_id: str, failure: str | None) -> None:
        self._active.pop(req_id, None)
        self._deadlines.discard(req_id)
        if failure is None:
            self._recved.add(req_id)
        else:
            logger.warning("KV load for request %s failed: %s", req_id, failure)
            self._failed.add(req_id)

    def _load(self, load: LoadSpec) -> bool:
        """Copy the transfer into the load's blocks and remove it; False while it has not been written."""
        if not is_transfer_key(load.key):
            raise LoadError(f"kv_transfer_params.transfer_key {load.key!r} is not a transfer key")
        where = os.path.join(self.storage_path, str(load.key))
        try:
            with open(os.path.join(where, MANIFEST)) as f:
                manifest = json.load(f)
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as exc:
            raise LoadError(f"{where}/{MANIFEST}: unreadable: {exc}") from None
        plan = load.plan
        check_manifest(where, manifest, self._layout(), load.token_ids, plan)
        data_path = os.path.join(where, DATA)
        expected = sum(self._block_bytes(kv) for kv in self.kv_caches.values()) * manifest["num_blocks"]
        size = os.path.getsize(data_path) if os.path.isfile(data_path) else -1
        if size != expected:
            raise LoadError(f"{data_path}: {size} bytes, expected {expected}")
        count = len(plan.block_ids)
        ids = torch.tensor(plan.block_ids, dtype=torch.long)
        with open(data_path, "rb", buffering=0) as f:
            offset = 0
            for kv in self.kv_caches.values():
                block_bytes = self._block_bytes(kv)
                f.seek(offset + plan.first_block * block_bytes)
                staged = torch.empty(count * block_bytes, dtype=torch.uint8)
                if f.readinto(staged.numpy().data) != staged.numel():
                    raise LoadError(f"{data_path}: short read")
                shape = list(kv.shape)
                del shape[self.block_dim]
                blocks = staged.view(kv.dtype).view(count, *shape).movedim(0, self.block_dim)
                kv.index_copy_(self.block_dim, ids.to(kv.device), blocks.to(kv.device))
                offset += manifest["num_blocks"] * block_bytes
        remove_transfer(self.storage_path, load.key)  # consumed
        return True

    def _hold_expired(self, key: str, why: str) -> None:
        logger.warning("KV transfer %s in %s: %s", key[:16], self.storage_path, why)
