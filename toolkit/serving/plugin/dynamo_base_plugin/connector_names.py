"""dynamo-base's KV-connector names on stock vLLM: the `vllm.general_plugins` entry point `register()`.

Runs INSIDE a vLLM venv (see the package docstring; imports nothing from vpatch). vLLM calls every general plugin
once per process (API server, engine core, workers: `vllm.plugins.load_general_plugins`, from `EngineArgs`, the
engine core and the worker base). `register()` adds names to vLLM's own connector registry,
`KVConnectorFactory.register_connector(name, module_path, class_name)` (0.32.0: a lazy loader per name, refusing a
name registered twice), so that a deployment's `--kv-transfer-config` keeps its dynamo-base connector name without
`kv_connector_module_path`:

- `SharedStorageConnectorV1`: the plugin's own transport (shared_storage.py, dynamo-base's options unchanged);
  it needs the connector API of vLLM 0.32.0, and on a vLLM without it the name is refused (below).
- `SharedStorageConnector`: stock's shared-storage connector, carried unchanged by dynamo-base and renamed
  `ExampleConnector` (same class, same `shared_storage_path` option) in 0.13.0, which unregistered the old name.
  Where vLLM no longer has it, the name loads `ExampleConnector` (a logged warning names the new name): safe,
  since no check in vLLM's configuration compares the connector name with `ExampleConnector`.
- `NixlConnectorV1`: dynamo-base's NIXL transport, not carried by the plugin. Not translated to `NixlConnector`:
  vLLM 0.32.0's configuration special-cases `has_connector("NixlConnector")` (side-channel layout, return of
  routed experts, DCP) and stock's NIXL options differ, so an alias would run NIXL half-configured. Refused.

A refused name is registered too, with this module as its module path: vLLM's loader then takes the class from
this module, and `__getattr__` raises `ConnectorNameError`, whose message is one line naming the upstream
equivalent. It is not a ValueError on purpose: pydantic turns a ValueError raised while it validates VllmConfig
into a multi-line ValidationError around the line; any other exception passes through as it is.
vLLM 0.32.0 asks for the class while it builds its configuration (`VllmConfig.__post_init__`:
`KVConnectorFactory.supports_hma_config`), so the line arrives at config time, before any engine starts.
On dynamo-base itself, whose factory.py registers its own `SharedStorageConnectorV1` and `NixlConnectorV1` when it
is imported (which `register()` does first), the plugin adds nothing. The names and lines agree with vpatch's
compatibility table (toolkit/compat/mapping.toml; a test checks it).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

logger = logging.getLogger("dynamo_base_plugin")


class ConnectorNameError(Exception):
    """A dynamo-base connector name stock vLLM + the plugin cannot run; the message is one line."""


MIGRATE = "`vpatch config migrate FILE --to VERSION` prints the whole configuration"
REFUSED: dict[str, str] = {
    "NixlConnectorV1": (
        "kv_connector NixlConnectorV1 is dynamo-base's NIXL transport, which stock vLLM + dynamo-base-plugin does "
        "not carry: use kv_connector NixlConnector (kv_connector_extra_config.engine_id -> engine_id, "
        "on_load_failure -> kv_load_failure_policy (0.13.0+), hold_timeout_s -> VLLM_NIXL_ABORT_REQUEST_TIMEOUT "
        "(0.10.0+) or kv_connector_extra_config.kv_lease_duration (0.22.0+), "
        "kv_ip/kv_port -> VLLM_NIXL_SIDE_CHANNEL_HOST/PORT) on both engines of a pair; " + MIGRATE
    ),
}
NEEDS_API = (
    "kv_connector SharedStorageConnectorV1 (dynamo-base-plugin) needs the KV-connector API of vLLM 0.32.0, which "
    "this vLLM lacks ({missing}): use kv_connector ExampleConnector (SharedStorageConnector before 0.13.0) with "
    "kv_connector_extra_config.shared_storage_path, or keep dynamo-base; " + MIGRATE
)
# Names this module answers for (vLLM's loader does getattr(this module, name)).
NAMES = ("SharedStorageConnectorV1", "SharedStorageConnector", *REFUSED)


def register() -> None:
    """The `vllm.general_plugins` entry point: add every name vLLM does not register itself (idempotent)."""
    try:
        from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory
    except ImportError:  # a vLLM without the V1 connector factory: nothing to register into
        return
    for name in NAMES:
        # ValueError: registered already, by vLLM itself (its own SharedStorageConnector) or by an earlier call
        with contextlib.suppress(ValueError):
            KVConnectorFactory.register_connector(name, __name__, name)


def _shared_storage_v1() -> Any:
    try:
        from .shared_storage import SharedStorageConnectorV1
    except ImportError as exc:
        raise ConnectorNameError(NEEDS_API.format(missing=str(exc).split(" (", 1)[0])) from None  # no site path
    return SharedStorageConnectorV1


_warned: list[str] = []


def _renamed_example() -> Any:
    from vllm.distributed.kv_transfer.kv_connector.v1.example_connector import ExampleConnector

    if not _warned:  # vLLM asks for the class several times per process
        _warned.append("SharedStorageConnector")
        logger.warning(
            "dynamo-base plugin: kv_connector SharedStorageConnector was renamed ExampleConnector in vLLM 0.13.0; "
            "loading ExampleConnector (write that name)"
        )
    return ExampleConnector


def __getattr__(name: str) -> Any:
    if name == "SharedStorageConnectorV1":
        return _shared_storage_v1()
    if name == "SharedStorageConnector":
        return _renamed_example()
    if name in REFUSED:
        raise ConnectorNameError(REFUSED[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
