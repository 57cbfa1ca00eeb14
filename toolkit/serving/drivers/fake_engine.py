"""Runs inside a vLLM venv (imported by the drivers run there by path): vLLM's scheduler with a fake model.

It imports nothing from vpatch (the venv does not have it): only vLLM, the standard library and its
sibling release_api.py (how each release spells what the engine is built from and what it returns).
`Engine` is vLLM's real V1 scheduler, KV-cache manager and block pool built as EngineCore would build them,
minus the model: `fake_output` is a deterministic fake model (the sampled token is a seeded function of
request id and position). `use_cpu_platform` makes vLLM's Python core run on a machine without a GPU, with
block hashes comparable across processes (the chain's root hash pinned; see release_api.fixed_none_hash).
"""

from __future__ import annotations

import inspect
import os
import random
import sys

import release_api  # the sibling driver (Python puts a script's own directory first on sys.path)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

WIRE_MASK = (1 << 64) - 1  # the same mask as toolkit.serving.kv.wire.WIRE_MASK (this file cannot import vpatch)
BLOCK_SIZE = 16
EOS = 2

# vLLM >= 0.10: a request carries its block hashes, computed by the engine core's hasher when it is made.
_BLOCK_HASHER = None

# A small OPT-style config: the scheduler only needs a model config it can build offline.
MODEL_CONFIG: dict = {
    "architectures": ["OPTForCausalLM"],
    "model_type": "opt",
    "vocab_size": 50272,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "ffn_dim": 128,
    "max_position_embeddings": 4096,
    "torch_dtype": "float32",
    "word_embed_proj_dim": 64,
    "do_layer_norm_before": True,
    "eos_token_id": EOS,
    "bos_token_id": EOS,
    "pad_token_id": 1,
}


def use_cpu_platform() -> None:
    """vLLM finds no platform on a machine without a GPU; its Python core runs fine on the CPU one.

    Also makes block hashes comparable across processes (release_api.fixed_none_hash), lets vLLM 0.8.5
    import on the CPU runtime (the function below) and has the model's architecture inspected in this
    process (`_inspect_model_here`); all apply the same way to stock and dynamo-base.
    """
    import vllm.platforms as platforms
    from vllm.platforms.cpu import CpuPlatform

    platforms._current_platform = CpuPlatform()
    _torch_compile_despite_triton_stand_in()
    _inspect_model_here()
    release_api.fixed_none_hash()


def _inspect_model_here() -> None:
    """vLLM registers its architectures lazily and inspects one (what its class supports: pipeline parallel,
    attention-free, ...) in a fresh interpreter, so as not to initialize CUDA in the engine's: a second import
    of vLLM and torch, about as long as this process's own, before the first scheduler is built. There is no
    CUDA here, so the OPT class is registered as it is (vLLM's own `ModelRegistry.register_model`) and
    inspected in this process: the same class and flags, one interpreter. vLLM warns that the architecture is
    overwritten; that is this registration, not news, so its registry logger is quiet meanwhile."""
    import logging

    from vllm import ModelRegistry
    from vllm.model_executor.models.opt import OPTForCausalLM

    registry_log = logging.getLogger("vllm.model_executor.models.registry")
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)
    try:
        ModelRegistry.register_model(MODEL_CONFIG["architectures"][0], OPTForCausalLM)
    finally:
        registry_log.setLevel(level)


def _torch_compile_despite_triton_stand_in() -> None:
    """vLLM 0.8.5 puts a stand-in `triton` module into sys.modules when triton is not installed. The CPU
    runtime's torch then takes triton for present and fails to import its compile stack (`from triton import
    Config`), which vLLM reaches at import time through `@torch.compile` (vocab_parallel_embedding).

    So, only when such a stand-in is there: import that part of torch once with the stand-in hidden (torch
    sees what is true, no triton) and put the stand-in back for vLLM. The OPT architecture is then registered
    from its class (`_inspect_model_here`), so vLLM inspects it in this process instead of a fresh interpreter
    that would hit the same import failure. Scheduling is untouched; stock and dynamo-base runs take the same path.
    """
    try:
        import vllm.triton_utils  # noqa: F401  (installs the stand-in, in the vLLM releases that have one)
    except ImportError:
        return

    names = ("triton", "triton.language")
    stand_ins = {n: sys.modules[n] for n in names if n in sys.modules and sys.modules[n].__spec__ is None}
    if "triton" not in stand_ins:
        return
    for name in stand_ins:
        del sys.modules[name]
    try:
        import torch._dynamo.repro.after_dynamo
        import torch._inductor.compile_fx  # noqa: F401
    finally:
        sys.modules.update(stand_ins)


class Engine:
    """One scheduler with its configs, as EngineCore would build it, minus the model."""

    def __init__(
        self,
        *,
        num_blocks: int,
        max_num_seqs: int,
        max_batched: int,
        kv_events: dict | None,
        model_dir: str,
        hash_algo: str,
        kv_transfer: dict | None = None,
    ) -> None:
        import torch
        from vllm.config import CacheConfig, DeviceConfig, ModelConfig, SchedulerConfig, VllmConfig
        from vllm.v1.core.sched.scheduler import Scheduler
        from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
        from vllm.v1.structured_output import StructuredOutputManager

        model = ModelConfig(
            model=model_dir,
            **release_api.generate_task(ModelConfig),
            tokenizer=model_dir,
            tokenizer_mode="auto",
            trust_remote_code=False,
            dtype="float32",
            seed=0,
            skip_tokenizer_init=True,
        )
        # vLLM 0.13.0 made is_encoder_decoder an init-only argument of SchedulerConfig, with no default.
        encoder_decoder = {"is_encoder_decoder": False} if "is_encoder_decoder" in _init_names(SchedulerConfig) else {}
        scheduler_config = SchedulerConfig(
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_batched,
            max_model_len=2048,
            enable_chunked_prefill=True,
            **encoder_decoder,
        )
        cache = CacheConfig(
            block_size=BLOCK_SIZE,
            gpu_memory_utilization=0.9,
            **release_api.no_swap_space(CacheConfig),
            cache_dtype="auto",
            enable_prefix_caching=True,
            prefix_caching_hash_algo=hash_algo,
        )
        vllm_config = VllmConfig(
            scheduler_config=scheduler_config, model_config=model, cache_config=cache, device_config=DeviceConfig("cpu")
        )
        # vLLM 0.9.1 renamed the (unused here) tensors: dict to kv_cache_tensors: list.
        no_tensors: dict[str, object] = (
            {"kv_cache_tensors": []}
            if "kv_cache_tensors" in release_api.field_names(KVCacheConfig)
            else {"tensors": {}}
        )
        kv_cache_config = KVCacheConfig(
            num_blocks=num_blocks,
            **no_tensors,
            kv_cache_groups=[
                KVCacheGroupSpec(
                    ["layer"], release_api.full_attention_spec(FullAttentionSpec, BLOCK_SIZE, torch.float32)
                )
            ],
        )
        cache.num_gpu_blocks = num_blocks
        self.vllm_config = vllm_config
        self.kv_cache_config = kv_cache_config  # the worker half's connector takes it too (vLLM >= 0.11.1)
        global _BLOCK_HASHER
        _BLOCK_HASHER = release_api.block_hasher(hash_algo, BLOCK_SIZE)
        structured = _structured_output_manager(StructuredOutputManager, vllm_config)
        if "vllm_config" in inspect.signature(Scheduler.__init__).parameters:
            # vLLM >= 0.9: the scheduler takes the whole VllmConfig, KV events included (upstream's own). The
            # engine core loads the general plugins before it builds its scheduler (0.9.0's EngineCore.__init__),
            # so an installed plugin's KV-event publisher is the one the factory builds here too.
            from vllm.plugins import load_general_plugins

            load_general_plugins()
            if kv_events is not None:
                from vllm.config import KVEventsConfig

                vllm_config.kv_events_config = KVEventsConfig(**kv_events)
            if kv_transfer is not None:
                from vllm.config import KVTransferConfig

                vllm_config.kv_transfer_config = KVTransferConfig(**kv_transfer)
            # as VllmConfig's post-init does when either is set (0.11.1's connector factory checks HMA)
            if (kv_transfer or kv_events) and hasattr(vllm_config.scheduler_config, "disable_hybrid_kv_cache_manager"):
                vllm_config.scheduler_config.disable_hybrid_kv_cache_manager = True
            # vLLM 0.11.1: the engine core passes the block size (the cache's times the DCP size, 1 here)
            takes_block_size = "block_size" in inspect.signature(Scheduler.__init__).parameters
            self.scheduler = Scheduler(
                vllm_config=vllm_config,
                kv_cache_config=kv_cache_config,
                structured_output_manager=structured,
                log_stats=True,
                **({"block_size": vllm_config.cache_config.block_size} if takes_block_size else {}),
            )
        else:
            kwargs = {}
            if kv_events is not None:
                from vllm.config import KVEventsConfig

                kwargs["kv_events_config"] = KVEventsConfig.from_dict(kv_events)
            if kv_transfer is not None:
                from vllm.config import KVTransferConfig

                kwargs["kv_transfer_config"] = KVTransferConfig(**kv_transfer)
            self.scheduler = Scheduler(
                scheduler_config,
                model,
                cache,
                lora_config=None,
                kv_cache_config=kv_cache_config,
                log_stats=True,
                structured_output_manager=structured,
                **kwargs,
            )
        self.recorded: list[tuple[int | None, list]] = []
        self.published = 0  # batches handed to the publisher so far (its seqs are 0 .. published - 1)
        publisher = getattr(self.scheduler, "kv_event_publisher", None)
        if publisher is not None and (kv_events or {}).get("enable_kv_cache_events"):
            original = publisher.publish

            def recording_publish(events, metrics=None):
                self.published += 1
                if hasattr(events, "events"):  # upstream (0.9+): one KVEventBatch argument
                    original(events)
                    self.recorded.append((None, [_event_dict(e) for e in events.events]))
                    return None
                seq = original(events, metrics)
                self.recorded.append((seq, [_event_dict(e) for e in events]))
                return seq

            publisher.publish = recording_publish

    def take_recorded(self) -> tuple[int | None, list]:
        """The batches published since the last call: (last seq, events of all of them)."""
        batches, self.recorded = self.recorded, []
        events = [e for _, evs in batches for e in evs]
        return (batches[-1][0] if batches else None), events

    def shutdown(self) -> None:
        shutdown = getattr(self.scheduler, "shutdown", None)
        if shutdown is not None:
            shutdown()

    @property
    def block_pool(self):
        return self.scheduler.kv_cache_manager.block_pool

    def cached_hashes(self) -> list[int]:
        """The keys of the block pool's cached map as wire hashes (hash value mod 2**64), sorted."""
        return sorted({release_api.hash_value(h) & WIRE_MASK for h in release_api.cached_block_keys(self.block_pool)})

    def blocks_of(self, req_id: str) -> list[int]:
        return [b.block_id for b in request_blocks(self.scheduler.kv_cache_manager, req_id)]


def _structured_output_manager(cls, vllm_config):
    """vLLM >= 0.9 loads a tokenizer here even when no request uses structured output; our workloads never do
    and the model directory has no tokenizer, so that one load is skipped (nothing else is)."""
    try:
        return cls(vllm_config)
    except (OSError, TypeError, ValueError):
        from concurrent.futures import ThreadPoolExecutor

        import torch

        manager = cls.__new__(cls)
        manager.backend = None
        manager.reasoner = None
        manager.vllm_config = vllm_config
        manager._grammar_bitmask = None
        manager._full_mask = torch.tensor(-1, dtype=torch.int32)
        manager.executor = ThreadPoolExecutor(max_workers=1)
        manager.tokenizer = None
        return manager


def _event_dict(event) -> dict:
    """An event as a plain dict with its type, for our structs and upstream's (array-like) ones alike."""
    data = {name: getattr(event, name) for name in getattr(event, "__struct_fields__", ())}
    data = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in data.items()}
    data["type"] = type(event).__name__
    return data


def make_request(req_id: str, prompt: list[int], max_tokens: int, extra_args: dict | None = None):
    from vllm.sampling_params import SamplingParams
    from vllm.v1.request import Request

    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True, temperature=0.0)
    if extra_args is not None:
        params.extra_args = extra_args
    wanted = {
        "request_id": req_id,
        "prompt": None,
        "prompt_token_ids": list(prompt),
        "multi_modal_inputs": None,
        "multi_modal_hashes": None,
        "multi_modal_placeholders": None,
        "sampling_params": params,
        "eos_token_id": EOS,
        "arrival_time": 0.0,
        "lora_request": None,
        "pooling_params": None,
        "block_hasher": _BLOCK_HASHER,
    }
    accepted = inspect.signature(Request.__init__).parameters
    return Request(**{k: v for k, v in wanted.items() if k in accepted})


def fake_token(seed: int, req_id: str, position: int) -> int:
    """The 'model': a deterministic token for this request and position (never EOS)."""
    return 3 + random.Random(f"{seed}:{req_id}:{position}").randrange(50000)


def fake_output(scheduler, output, seed: int):
    """The fake model's ModelRunnerOutput for a scheduled step."""
    req_ids = sorted(output.num_scheduled_tokens)
    sampled = []
    for req_id in req_ids:
        request = scheduler.requests[req_id]
        # After schedule(), num_computed_tokens already counts this step's tokens.
        if request.num_computed_tokens >= request.num_tokens:
            sampled.append([fake_token(seed, req_id, request.num_tokens)])
        else:
            sampled.append([])  # a partial prefill samples nothing
    return release_api.model_runner_output(req_ids, sampled)


def _init_names(cls: type) -> set[str]:
    """A dataclass's fields and init-only (InitVar) arguments."""
    return set(getattr(cls, "__dataclass_fields__", {}))


class StepOutputs:
    """One step's engine-core outputs for every client, as `update_from_output` returned them: one
    EngineCoreOutputs up to vLLM 0.9.0, a {client index: EngineCoreOutputs} dict from 0.9.1 (stats on one)."""

    def __init__(self, returned) -> None:
        per_client = list(returned.values()) if isinstance(returned, dict) else [returned]
        self.outputs = [item for client in per_client for item in client.outputs]
        self.scheduler_stats = next(
            (c.scheduler_stats for c in per_client if getattr(c, "scheduler_stats", None) is not None), None
        )


def request_blocks(manager, req_id: str) -> list:
    """The blocks a KV-cache manager holds for a request (one KV-cache group)."""
    if hasattr(manager, "req_to_blocks"):  # vLLM 0.8
        return list(manager.req_to_blocks.get(req_id, []))
    if hasattr(manager, "single_type_manager"):  # vLLM 0.9.0
        return list(manager.single_type_manager.req_to_blocks.get(req_id, []))
    (single,) = manager.coordinator.single_type_managers  # vLLM 0.9.1: one manager per group
    return list(single.req_to_blocks.get(req_id, []))
