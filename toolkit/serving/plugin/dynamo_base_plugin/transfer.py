"""dynamo-base's P/D transfer protocol, the parts that need neither vLLM nor torch (shared_storage.py is the connector).

The protocol is dynamo-base's own (patch 0012 of the 0.9.x series), unchanged on the wire:

- a prefill (kv_producer) request opts in with kv_transfer_params {"do_remote_decode": true}; when it finishes,
  the KV of every prompt token but the last is written once, and its output carries the parameters a decode engine
  needs: {"do_remote_prefill": true, "remote_engine_id", "remote_request_id", "remote_block_ids",
  "num_remote_tokens", "transfer_key"};
- a decode (kv_consumer) request given those parameters loads `num_remote_tokens` tokens asynchronously and computes
  the last prompt token itself, which samples the first output token from the transferred KV.

Options are `kv_connector_extra_config` keys; unknown keys and bad values are refused by name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MANIFEST = "manifest.json"
DATA = "kv.bin"
FORMAT_VERSION = 1  # the on-disk format of patch 0013, unchanged
STAGING_PREFIX = "."  # a transfer being written: `.<key[:16]>-<random>`, renamed to `<key>` when whole

OPTIONS: dict[str, Any] = {
    # Directory both engines see (default: default_storage_path()).
    "storage_path": None,
    # Identifies this engine in the transfer keys it hands out (default: KVTransferConfig.engine_id).
    "engine_id": None,
    # 0.9.x's own failure policy; on vLLM 0.32.0 the scheduler's `kv_load_failure_policy` decides, so this may only
    # repeat it (a different value is refused, naming the field to set instead).
    "on_load_failure": None,
    # Seconds a decode engine waits for a transfer before the load fails (0008's load timeout).
    "load_timeout_s": 60.0,
    # Seconds a written transfer that no decode engine reads stays in storage (0010's hold timeout, see the module
    # doc of shared_storage.py for why it applies to the stored transfer, not to blocks, on this transport).
    "hold_timeout_s": 120.0,
}
LOAD_FAILURE_POLICIES = ("recompute", "fail")


class LoadError(Exception):
    """A transfer that cannot be loaded; the message says why in one line."""


def default_storage_path() -> str:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    return os.path.join(base, "vllm-kv-transfer")


def read_options(extra: dict[str, Any] | None, kv_load_failure_policy: str | None) -> dict[str, Any]:
    """`kv_connector_extra_config` with defaults; unknown keys and bad values raise ValueError naming the key."""
    given = dict(extra or {})
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise ValueError(
            f"kv_connector_extra_config: unknown key(s) {unknown} for SharedStorageConnectorV1; "
            f"known: {sorted(OPTIONS)}"
        )
    merged = {**OPTIONS, **given}
    for key in ("load_timeout_s", "hold_timeout_s"):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"kv_connector_extra_config.{key} must be a positive number of seconds, got {value!r}")
        merged[key] = float(value)
    for key in ("storage_path", "engine_id"):
        if merged[key] is not None and (not isinstance(merged[key], str) or not merged[key]):
            raise ValueError(f"kv_connector_extra_config.{key} must be a non-empty string, got {merged[key]!r}")
    policy = merged["on_load_failure"]
    if policy is not None:
        if policy not in LOAD_FAILURE_POLICIES:
            raise ValueError(
                "kv_connector_extra_config.on_load_failure must be one of "
                f"{list(LOAD_FAILURE_POLICIES)}, got {policy!r}"
            )
        if kv_load_failure_policy is not None and policy != kv_load_failure_policy:
            raise ValueError(
                f"kv_connector_extra_config.on_load_failure={policy!r} is decided by vLLM's scheduler here: set "
                f"KVTransferConfig.kv_load_failure_policy={policy!r} (it is {kv_load_failure_policy!r})"
            )
    return merged


def transfer_key(engine_id: str, req_id: str) -> str:
    """A name for one transfer that is safe in any path or message, and that no other engine's request shares."""
    return hashlib.sha256(f"{engine_id}\0{req_id}".encode()).hexdigest()


def is_transfer_key(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def remote_tokens(params: dict[str, Any], num_prompt_tokens: int) -> int:
    """Tokens a decode request's parameters announce, capped so that the last prompt token is computed here."""
    if not params.get("do_remote_prefill"):
        return 0
    try:
        announced = int(params.get("num_remote_tokens", 0))
    except (TypeError, ValueError):
        return 0
    return max(0, min(announced, num_prompt_tokens - 1))


def num_blocks(num_tokens: int, block_size: int) -> int:
    return -(-num_tokens // block_size)


@dataclass
class LoadPlan:
    """Which of the transfer's blocks land in which local blocks."""

    first_block: int  # index (token order) of the first block loaded; the ones before were local prefix hits
    block_ids: list[int]  # local blocks to fill, in token order
    num_tokens: int  # tokens whose KV is there once loaded, counted from token 0


def plan_load(all_block_ids: list[int], num_remote: int, num_external: int, block_size: int) -> LoadPlan:
    """The load of `num_external` tokens after a local prefix hit of `num_remote - num_external` (block-aligned)."""
    local = num_remote - num_external
    if local < 0 or local % block_size:
        raise ValueError(f"a local prefix hit of {local} tokens is not block-aligned (block size {block_size})")
    first = local // block_size
    last = num_blocks(num_remote, block_size)
    if last > len(all_block_ids):
        raise ValueError(f"{num_remote} tokens need {last} blocks, the request has {len(all_block_ids)}")
    return LoadPlan(first, list(all_block_ids[first:last]), num_remote)


def check_manifest(
    where: str, manifest: Any, layout: list[dict[str, Any]], token_ids: list[int], plan: LoadPlan
) -> None:
    """Refuse a transfer not computed for this prompt and this cache layout, or too short for the plan."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise LoadError(f"{where}: format {got!r}, expected {FORMAT_VERSION}")
    if manifest.get("layers") != layout:
        raise LoadError(f"{where}: KV-cache layout (layers, dtypes, block shapes) differs from this engine's")
    held = manifest.get("num_tokens")
    if not isinstance(held, int) or held < plan.num_tokens:
        raise LoadError(f"{where}: holds {held!r} tokens, {plan.num_tokens} needed")
    if manifest.get("token_ids", [])[: plan.num_tokens] != token_ids[: plan.num_tokens]:
        raise LoadError(f"{where}: computed for a different prompt")
    stored = manifest.get("num_blocks")
    if not isinstance(stored, int) or plan.first_block + len(plan.block_ids) > stored:
        raise LoadError(f"{where}: holds {stored!r} blocks, fewer than the load needs")


def remove_transfer(storage_path: str, key: Any) -> bool:
    """Remove one transfer directory; True if it was there. Keys are validated before they become paths."""
    if not is_transfer_key(key):
        return False
    where = os.path.join(storage_path, str(key))
    existed = os.path.isdir(where)
    shutil.rmtree(where, ignore_errors=True)
    return existed


class Deadlines:
    """Keys with a deadline each; `expired()` hands out (and forgets) the ones past it. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._due: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, key: str, seconds: float) -> None:
        with self._lock:
            self._due[key] = self._clock() + seconds

    def discard(self, key: str) -> None:
        with self._lock:
            self._due.pop(key, None)

    def expired(self) -> list[str]:
        now = self._clock()
        with self._lock:
            gone = [k for k, due in self._due.items() if due <= now]
            for key in gone:
                del self._due[key]
        return gone

    def next_due(self) -> float | None:
        with self._lock:
            return min(self._due.values()) if self._due else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._due)


class HoldSweeper:
    """Removes written transfers nobody read within hold_timeout_s, also while the engine is idle (a daemon thread;
    removing files never touches the engine's blocks, which were freed when the transfer was written)."""

    def __init__(self, storage_path: str, hold_timeout_s: float, warn: Callable[[str, str], None]) -> None:
        self.storage_path = storage_path
        self.hold_timeout_s = hold_timeout_s
        self._warn = warn
        self._holds = Deadlines()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

    def hold(self, key: str) -> None:
        self._holds.add(key, self.hold_timeout_s)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dynamo-kv-hold", daemon=True)
            self._thread.start()
        self._wake.set()

    def sweep(self) -> list[str]:
        removed = []
        for key in self._holds.expired():
            if remove_transfer(self.storage_path, key):
                self._warn(key, f"not read within hold_timeout_s={self.hold_timeout_s:g}; removed")
                removed.append(key)
        return removed

    def _run(self) -> None:
        while not self._stop:
            due = self._holds.next_due()
            self._wake.wait(None if due is None else max(0.0, due - time.monotonic()) + 0.01)
            self._wake.clear()
            self.sweep()

    def close(self) -> None:
        self._stop = True
        self._wake.set()
