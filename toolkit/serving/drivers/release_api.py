"""Runs inside a vLLM venv (imported by the drivers run there by path): how each vLLM release spells a thing.

The drivers meet vLLM's internal API, which changes from release to release: where the hashing helpers
live, how the block-hash chain starts, how a scheduler output lists the requests scheduled before, what a
block pool's cache is keyed by, which fields a ModelRunnerOutput takes. Each function here reads the
running release and answers in one shape for every release (`fake_engine` builds its engine with them,
`runner` and `pd_worker` read the engine's outputs with them). Only vLLM and the standard library (the venv
has no vpatch); vLLM is imported inside the functions, so importing this module needs no vLLM.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


def fixed_none_hash() -> None:
    """Pin the root of every block-hash chain (`NONE_HASH`, the parent of a sequence's first block).

    vLLM 0.8.4 sets it to sha256(None) when PYTHONHASHSEED is unset (its condition is inverted), 0.8.5 and
    later to random bytes, different in every process. Traces compare cached hashes between processes
    (stock vs dynamo-base), so it is set to 0.8.4's value everywhere: no change on 0.8.4, and on later
    releases the same hashes as a process that happened to draw that value.
    """
    from vllm.v1.core import kv_cache_utils

    if not hasattr(kv_cache_utils, "NONE_HASH"):  # vLLM >= 0.10 before init_none_hash (block_hasher)
        return
    if hasattr(kv_cache_utils, "sha256"):
        kv_cache_utils.NONE_HASH = kv_cache_utils.sha256(None)
    else:  # vLLM >= 0.10: bytes hashes
        sha256 = hashing("sha256")
        kv_cache_utils.NONE_HASH = kv_cache_utils.BlockHash(sha256(None))


def hashing(name: str):
    """A hashing helper of vllm.utils: vLLM 0.11.1 moved them to vllm.utils.hashing."""
    try:
        from vllm.utils import hashing as helpers
    except ImportError:
        import vllm.utils as helpers
    return getattr(helpers, name)


def block_hasher(hash_algo: str, block_size: int):
    """vLLM >= 0.10: a request carries its block hashes, computed when it is made by the hasher the engine
    core builds (the chain's root pinned, see fixed_none_hash); None on the releases before, which hash in
    the KV-cache manager."""
    from vllm.v1.core import kv_cache_utils

    if not hasattr(kv_cache_utils, "get_request_block_hasher"):
        return None
    hash_fn = hashing("get_hash_fn_by_name")(hash_algo)
    kv_cache_utils.init_none_hash(hash_fn)
    fixed_none_hash()  # init_none_hash draws a random root without PYTHONHASHSEED
    return kv_cache_utils.get_request_block_hasher(block_size, hash_fn)


def hash_value(key) -> int:
    """A block pool's cache key as an integer: vLLM 0.9.1 keys it by BlockHashWithGroupId (get_hash_value()),
    earlier by BlockHashType (hash_value); 0.10 by bytes (the block hash, then 4 bytes of group id), read
    as a big-endian integer."""
    if isinstance(key, bytes):
        return int.from_bytes(key[:-4], "big")
    return key.get_hash_value() if hasattr(key, "get_hash_value") else key.hash_value


def cached_block_keys(block_pool) -> list:
    """The keys of a block pool's cached map; vLLM 0.11.1 wraps the dict in a BlockHashToBlockMap (`_cache`)."""
    cached = block_pool.cached_block_hash_to_block
    return list(getattr(cached, "_cache", cached))


@dataclass(frozen=True)
class CachedRequest:
    """One scheduled request that was scheduled before, as every release describes it."""

    req_id: str
    resumed_from_preemption: bool
    new_block_ids: object  # the release's own block ids (per group from 0.9), None when no block was added
    num_computed_tokens: int


def cached_requests(output) -> list[CachedRequest]:
    """`output.scheduled_cached_reqs`: a list of records up to vLLM 0.9, one record of lists from 0.10 (with a
    set of resumed ids instead of the flags from 0.16.0)."""
    cached = output.scheduled_cached_reqs
    if hasattr(cached, "req_ids"):
        # vLLM 0.16.0 keeps the set of resumed ids (resumed_req_ids) instead of one flag per request.
        resumed_flags = (
            [req_id in cached.resumed_req_ids for req_id in cached.req_ids]
            if hasattr(cached, "resumed_req_ids")
            else cached.resumed_from_preemption
        )
        return [
            CachedRequest(req_id, resumed, blocks, computed)
            for req_id, resumed, blocks, computed in zip(
                cached.req_ids,
                resumed_flags,
                cached.new_block_ids,
                cached.num_computed_tokens,
                strict=True,
            )
        ]
    return [CachedRequest(c.req_id, c.resumed_from_preemption, c.new_block_ids, c.num_computed_tokens) for c in cached]


def model_runner_output(req_ids: list[str], sampled: list[list[int]], **extra):
    """A ModelRunnerOutput with sampled tokens only (no logprobs, no speculation), in the release's fields:
    `extra` holds the connector's reports (finished_sending, ...), which vLLM >= 0.10.1 keeps in a
    KVConnectorOutput of their own."""
    from vllm.v1.outputs import ModelRunnerOutput

    fields = field_names(ModelRunnerOutput)
    if "kv_connector_output" in fields:
        from vllm.v1.outputs import KVConnectorOutput

        reports = {k: extra.pop(k) for k in list(extra) if k in field_names(KVConnectorOutput)}
        if reports:
            extra["kv_connector_output"] = KVConnectorOutput(**reports)
    optional: dict[str, object] = {"spec_token_ids": None, "pooler_output": []}
    if _sampled_as_arrays(ModelRunnerOutput):  # vLLM 0.11.1: one numpy array per request
        import numpy as np  # type: ignore[import-not-found]  # (in the vLLM venv only)

        sampled = [np.array(tokens, dtype=np.int64) for tokens in sampled]
    return ModelRunnerOutput(
        req_ids=req_ids,
        req_id_to_index={r: i for i, r in enumerate(req_ids)},
        sampled_token_ids=sampled,
        logprobs=None,
        prompt_logprobs_dict={},
        **{k: v for k, v in optional.items() if k in fields},
        **extra,
    )


def _sampled_as_arrays(cls: type) -> bool:
    return any(f.name == "sampled_token_ids" and "ndarray" in str(f.type) for f in dataclasses.fields(cls))


def field_names(cls: type) -> set[str]:
    """The fields of one of vLLM's config classes (KVCacheConfig, ModelRunnerOutput) in this release: a
    dataclass's fields, or a plain class's constructor arguments (vLLM <= 0.9's CacheConfig)."""
    if dataclasses.is_dataclass(cls):
        return {f.name for f in dataclasses.fields(cls)}
    import inspect

    return set(inspect.signature(cls).parameters)


def generate_task(model_config_cls: type) -> dict[str, str]:
    """ModelConfig's argument for a generating model: `task="generate"` while the config takes a task (a
    field of the dataclass, or an argument of the plain class up to vLLM 0.9), `runner="generate"` from
    0.16.0, which dropped `task` (0.10 added `runner` beside it)."""
    return {"task": "generate"} if "task" in field_names(model_config_cls) else {"runner": "generate"}


def full_attention_spec(spec_cls: type, block_size: int, dtype: object):
    """A FullAttentionSpec of one KV head of size 1, by keyword: vLLM 0.16.0 made the attention specs
    keyword-only and dropped `use_mla` (False here where the spec still has it)."""
    fields = {"block_size": block_size, "num_kv_heads": 1, "head_size": 1, "dtype": dtype, "use_mla": False}
    return spec_cls(**{k: v for k, v in fields.items() if k in field_names(spec_cls)})


def no_swap_space(cache_config_cls: type) -> dict[str, int]:
    """CacheConfig's `swap_space=0` (no CPU swap for preempted blocks) while the config has the field: vLLM
    0.22 dropped it (a CacheConfig given it raises pydantic's unexpected_keyword_argument)."""
    return {"swap_space": 0} if "swap_space" in field_names(cache_config_cls) else {}


def connector_cache_config(create_connector, engine) -> dict[str, object]:
    """The factory's `kv_cache_config` argument for a worker connector: optional from vLLM 0.11.1 (the series'
    connectors take it and default it), required from 0.22 (`create_connector(config, role, kv_cache_config)`,
    a TypeError without it); absent before 0.11.1."""
    import inspect

    if "kv_cache_config" not in inspect.signature(create_connector).parameters:
        return {}
    return {"kv_cache_config": engine.kv_cache_config}
