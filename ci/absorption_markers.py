"""The code markers `absorption_scan.py` looks for in vLLM's sdists, one entry per capability of the
dynamo-base series (docs/upstream-absorption.md explains each choice and what the marker proves).

A capability's status in a release is the highest level whose markers all hold: `present` (upstream does
what the patch does, for every connector), `partial` (upstream does part of it: one connector only, or
a narrower case), otherwise `absent`. A marker is a regular expression searched in the files a glob
names (paths relative to the sdist's top directory); `absent=True` inverts it (the old code is gone).
`cite` names files whose `pull/NNNN` links are reported as the upstream PRs the sdist itself cites.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SCHED = "vllm/v1/core/sched/scheduler.py"
BASE = "vllm/distributed/kv_transfer/kv_connector/v1/base.py"
NIXL = "vllm/distributed/kv_transfer/kv_connector/v1/nixl*"
NIXL_UTILS = "vllm/distributed/kv_transfer/kv_connector/*utils.py"
KV_CONFIG = "vllm/config*"
FACTORY = "vllm/distributed/kv_transfer/kv_connector/factory.py"
STORAGE = (
    "vllm/distributed/kv_transfer/kv_connector/v1/shared_storage_connector.py"
    "|vllm/distributed/kv_transfer/kv_connector/v1/example_connector.py"
)


@dataclass(frozen=True)
class Marker:
    glob: str
    pattern: str
    absent: bool = False


@dataclass(frozen=True)
class Capability:
    key: str
    title: str
    partial: tuple[Marker, ...] = ()
    present: tuple[Marker, ...] = ()
    cite: tuple[str, ...] = ()
    notes: str = ""


@dataclass(frozen=True)
class Info:
    """A fact that is not a capability (an API change, a rename): reported as yes / no."""

    key: str
    title: str
    markers: tuple[Marker, ...] = field(default_factory=tuple)


CAPABILITIES: tuple[Capability, ...] = (
    Capability(
        "0005",
        "block dimension of the KV cache known to the connector",
        partial=(
            Marker(
                NIXL_UTILS + "|" + NIXL,
                r"kv_cache_shape(: tuple\[int, \.\.\.\])? = (self\.)?attn_backend\.get_kv_cache_shape\(",
            ),
        ),
        present=(
            Marker(
                BASE + "|vllm/v1/kv_cache_layout.py", r"def (set_kv_cache_block_dim|block_dim_of|is_block_outermost)\b"
            ),
        ),
        cite=("vllm/v1/kv_cache_layout.py",),
        notes="partial: NixlConnector derives the layout from the backend; present: a KVCacheLayout in the config",
    ),
    Capability(
        "0006",
        "landed load resumes at the announced tokens (partial last block)",
        partial=(Marker(SCHED, r"num_computed_tokens = min\(num_computed_tokens, request\.num_tokens\)"),),
        present=(
            Marker(SCHED, r"Set num_computed_tokens even though KVs are not yet loaded"),
            Marker(SCHED, r"num_computed_tokens = len\(block_ids\) \* self\.block_size", absent=True),
        ),
    ),
    Capability(
        "0007",
        "failed loads reported per request, recompute / fail policy",
        partial=(
            Marker(BASE, r"def get_block_ids_with_load_errors\("),
            Marker(SCHED, r"def _handle_invalid_blocks\("),
        ),
        present=(Marker(KV_CONFIG, r"kv_load_failure_policy: Literal\[\"recompute\", \"fail\"\]"),),
    ),
    Capability(
        "0008",
        "load timeout (decode side, any connector)",
        present=(Marker(KV_CONFIG + "|" + SCHED + "|" + BASE, r"\b(kv_)?load_timeout\w*\s*[:=]"),),
        notes="no generic marker found in any release; MoRIIO has its own transfer_timeout (newest only)",
    ),
    Capability(
        "0009",
        "abort while the KV loads: free only once the worker reports",
        present=(
            Marker(
                SCHED,
                r"if request\.status == RequestStatus\.WAITING_FOR_REMOTE_KVS:\s*\n"
                r"(\s*#.*\n)*\s*delay_free_blocks = \(",
            ),
            Marker(SCHED, r"self\._free_request\(request, delay_free_blocks=delay_free_blocks\)"),
        ),
    ),
    Capability(
        "0010",
        "hold timeout for blocks held for a remote decode",
        partial=(Marker(NIXL + "|vllm/envs.py", r"VLLM_NIXL_ABORT_REQUEST_TIMEOUT|\"kv_lease_duration\""),),
        present=(Marker(KV_CONFIG + "|" + SCHED, r"\b(kv_)?hold_timeout\w*\s*[:=]"),),
        cite=("docs/design/nixl_kv_cache_lease.md",),
        notes="partial: inside NixlConnector only (env var, then leases); nothing for other connectors",
    ),
    Capability(
        "0011",
        "engine keeps stepping while sends are pending",
        present=(Marker(SCHED, r"Finished requests waiting on delayed connector cleanup"),),
    ),
    Capability(
        "0013",
        "asynchronous shared-storage transport",
        partial=(Marker(FACTORY, r"\"(SharedStorageConnector|ExampleConnector)\""),),
        present=(
            Marker(
                STORAGE,
                r"return num_tokens_to_check - num_computed_tokens, True",
            ),
        ),
        notes="partial: upstream's storage connector exists but loads synchronously",
    ),
    Capability(
        "0014",
        "NIXL on host memory for a CPU engine",
        partial=(Marker(NIXL, r"nixl_memory_type = \"DRAM\""),),
        present=(Marker(NIXL, r"\"cpu\": \(\s*\"cpu\",?\s*\)"),),
        notes="partial: DRAM host buffer for TPU/XPU (a device-to-host copy); present: the CPU platform",
    ),
    Capability(
        "events",
        "KV-cache events (BlockStored / BlockRemoved / AllBlocksCleared over ZMQ)",
        partial=(Marker("vllm/distributed/kv_events.py", r"class BlockStored\("),),
        present=(Marker("vllm/distributed/kv_events.py", r"block_hashes: list\[ExternalBlockHash\]"),),
        notes="partial: hashes are Python ints (sha256 block hashes overflow msgpack); present: int or bytes",
    ),
    Capability(
        "load-metrics",
        "load metrics (running / waiting / KV usage / hit rate) published per step",
        partial=(Marker("vllm/v1/metrics/stats.py", r"num_running_reqs: int"),),
        present=(Marker("vllm/distributed/kv_events.py|vllm/v1/core/sched/*.py", r"(LoadMetrics|publish_load)"),),
        notes="partial: SchedulerStats reach in-process stat loggers / Prometheus; nothing on the wire",
    ),
    Capability(
        "module-path",
        "out-of-tree KV connector by module path",
        present=(
            Marker(KV_CONFIG, r"kv_connector_module_path: Optional\[str\]|kv_connector_module_path: str \| None"),
        ),
    ),
    Capability(
        "general-plugins",
        "`vllm.general_plugins` entry points",
        present=(Marker("vllm/plugins/__init__.py", r"vllm\.general_plugins"),),
    ),
    Capability(
        "stat-logger-plugins",
        "`vllm.stat_logger_plugins` entry points",
        present=(Marker("vllm/plugins/__init__.py|vllm/v1/metrics/loggers.py", r"vllm\.stat_logger_plugins"),),
    ),
)

INFOS: tuple[Info, ...] = (
    Info(
        "storage-connector-no-cuda",
        "upstream's storage connector loads onto the layer's device (no `.cuda()`), so it can run on CPU",
        (Marker(STORAGE, r"def start_load_kv\("), Marker(STORAGE, r"\.cuda\(\)", absent=True)),
    ),
    Info(
        "abort-before-scheduled",
        "NIXL: a request aborted before it was scheduled still notifies the prefill",
        (Marker(NIXL, r"must have been aborted before it was scheduled"),),
    ),
    Info(
        "nixl-invalid-blocks",
        "NixlConnector marks a failed transfer's blocks invalid instead of raising",
        (Marker(NIXL, r"Marking blocks as invalid|self\._invalid_block_ids\.put\("),),
    ),
    Info(
        "ctor-kv-cache-config",
        "connector constructor takes kv_cache_config",
        (Marker(BASE, r"kv_cache_config: (Optional\[\"KVCacheConfig\"\]|\"KVCacheConfig( \| None)?\")"),),
    ),
    Info(
        "example-rename",
        "`SharedStorageConnector` registered under the name `ExampleConnector` only",
        (
            Marker(FACTORY, r"\"ExampleConnector\""),
            Marker(FACTORY, r"\"SharedStorageConnector\"", absent=True),
        ),
    ),
    Info(
        "policy-default-fail",
        "kv_load_failure_policy defaults to fail",
        (Marker(KV_CONFIG, r"kv_load_failure_policy: Literal\[\"recompute\", \"fail\"\] = \"fail\""),),
    ),
    Info(
        "nixl-abort-timeout-480",
        "VLLM_NIXL_ABORT_REQUEST_TIMEOUT defaults to 480 s",
        (Marker("vllm/envs.py", r"VLLM_NIXL_ABORT_REQUEST_TIMEOUT: int = 480"),),
    ),
    Info(
        "connector-pending-push-work",
        "scheduler keeps stepping for a connector's pending push work (has_pending_push_work)",
        (Marker(SCHED, r"self\.connector\.has_pending_push_work\(\)"),),
    ),
)
