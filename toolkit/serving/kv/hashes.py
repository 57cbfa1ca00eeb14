"""Block hashes without importing vLLM: content keys (engine-independent) and vLLM 0.8.4's chained hashes."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Sequence
from typing import Any

from toolkit.serving.kv.wire import WIRE_MASK


def content_key(parent: int | None, block_token_ids: Sequence[int], lora_id: int | None = None) -> int:
    """A block's identity from its tokens and its parent's identity: blake2b, 64 bits, stable everywhere."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(b"root" if parent is None else parent.to_bytes(8, "big"))
    digest.update(b"lora:" + str(lora_id).encode() + b";")
    digest.update(",".join(map(str, block_token_ids)).encode())
    return int.from_bytes(digest.digest(), "big")


def content_chain(token_ids: Sequence[int], block_size: int, lora_id: int | None = None) -> list[int]:
    """Content keys of the full blocks of a token sequence (what `KVIndex` keys stored blocks by)."""
    keys: list[int] = []
    parent: int | None = None
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = content_key(parent, token_ids[start : start + block_size], lora_id)
        keys.append(parent)
    return keys


def pickle_sha256(obj: object) -> int:
    """What `vllm.utils.sha256` computes in 0.8.4: sha256 of `pickle.dumps(obj, HIGHEST_PROTOCOL)`, as a
    big-endian integer (256 bits)."""
    return int.from_bytes(hashlib.sha256(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)).digest(), "big")


VLLM_084_NONE_HASH = pickle_sha256(None)
"""vLLM 0.8.4's `NONE_HASH` for an engine started *without* PYTHONHASHSEED.

0.8.4 (vllm/v1/core/kv_cache_utils.py) sets

    NONE_HASH = int.from_bytes(os.urandom(32), "big") if os.getenv("PYTHONHASHSEED") is not None
                else sha256(os.getenv("PYTHONHASHSEED"))

i.e. the condition is the reverse of what its comment says: without PYTHONHASHSEED it is the fixed
`sha256(None)`, with PYTHONHASHSEED it is random per process. In the second case the engine's value must
be read from that process (`vllm.v1.core.kv_cache_utils.NONE_HASH`) and passed as `none_hash`.
"""


def to_wire(hash_value: int) -> int:
    """A full block hash as its canonical wire key (see `wire.WIRE_MASK`)."""
    return hash_value & WIRE_MASK


class Vllm084BlockHasher:
    """vLLM 0.8.4's prefix-cache block hashes, without importing vLLM.

    0.8.4 (`hash_request_tokens` / `hash_block_tokens`) walks the request's tokens in blocks of
    `block_size`, hashes only full blocks (a trailing partial block has no hash), and chains them:

        hash_value_i = hash_fn((parent or NONE_HASH, tuple(block_token_ids_i), extra_keys_i))

    where `parent` is the previous block's *full* `hash_value` (None for the first block; note that
    `if not parent` also replaces a parent of 0), `hash_fn` is the builtin `hash` (the default,
    `--prefix-caching-hash-algo builtin`) or `vllm.utils.sha256` (`sha256`; see `pickle_sha256`), and
    `extra_keys` is None for plain text requests, `(lora_int_id,)` with LoRA, and includes the
    multimodal input hashes for blocks that overlap multimodal placeholders.

    The chain uses the full values; only the output is reduced mod 2**64 for the wire.

    Reproducibility across processes (the router is not the engine process):
    - `sha256`: always, given the engine's NONE_HASH (the default one for an engine without PYTHONHASHSEED).
    - builtin `hash`: the hash of a tuple of ints does not depend on PYTHONHASHSEED (only str/bytes hashing is
      randomised), but `extra_keys` is `None` for plain text requests, and before CPython 3.12 `hash(None)`
      is derived from the address of `None`, which differs from process to process. So builtin block
      hashes of plain text requests match only when both the engine and this process run CPython >= 3.12
      (64-bit); with LoRA (`extra_keys=(lora_int_id,)`) they match on any 64-bit CPython >= 3.8.
      Multimodal extra keys are strings, whose hash is randomised unless PYTHONHASHSEED is shared.

    `extra_keys` is either one tuple (or None) used for every block, or a callable
    `(start, end) -> tuple | None` given each block's token range.
    """

    def __init__(
        self,
        block_size: int,
        *,
        none_hash: int = VLLM_084_NONE_HASH,
        hash_fn: Callable[[Any], int] = hash,
        extra_keys: tuple[Any, ...] | Callable[[int, int], tuple[Any, ...] | None] | None = None,
    ) -> None:
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.block_size = block_size
        self.none_hash = none_hash
        self.hash_fn = hash_fn
        self.extra_keys = extra_keys

    def hash_block(self, parent: int | None, block_token_ids: Sequence[int], extra_keys: Any = None) -> int:
        """One block's full `hash_value` (not reduced)."""
        return self.hash_fn((parent or self.none_hash, tuple(block_token_ids), extra_keys))

    def chain(self, token_ids: Sequence[int]) -> list[int]:
        """The full `hash_value` of every full block, in order."""
        size = self.block_size
        result: list[int] = []
        parent: int | None = None
        for start in range(0, len(token_ids) - size + 1, size):
            end = start + size
            extra = self.extra_keys(start, end) if callable(self.extra_keys) else self.extra_keys
            parent = self.hash_block(parent, token_ids[start:end], extra)
            result.append(parent)
        return result

    def __call__(self, token_ids: Sequence[int]) -> list[int]:
        """Wire hashes (mod 2**64) of every full block: what `BlockStored.block_hashes` carries."""
        return [to_wire(value) for value in self.chain(token_ids)]
