"""P/D on stock vLLM's CPU build through the dynamo-base plugin's SharedStorageConnectorV1 (loaded by
`kv_connector_module_path` from the plugin wheel installed beside stock), judged as the pd-disagg contract.

The run is engine_pd_storage.py's, with the plugin as the transport: an aggregated engine (stock alone, no
connector: the reference), a prefill and a decode engine (stock + plugin), each its own process, on the tiny
model. Its checks are grouped here into the contract's three items.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolkit.conformance.engine_env import EngineEnv
from toolkit.conformance.engine_pd import PASS, Check
from toolkit.conformance.engine_pd_storage import (
    CONNECTOR,
    HOLD_TIMEOUT,
    LOAD_TIMEOUT,
    PLUGIN,
    corrupt,
    own_count,
    run_storage_pd,
    storage_checks,
)
from toolkit.records.contract import ItemResult
from toolkit.records.status import Status

__all__ = ["CONNECTOR", "HOLD_TIMEOUT", "LOAD_TIMEOUT", "corrupt", "own_count", "plugin_pd_items", "run_plugin_pd"]

FEATURE = "pd-disagg"
# The contract's items, each from the shared-storage checks it is made of.
ITEMS = {
    "decode-equals-aggregated": ("decode-equals-aggregated", "loaded-transfer"),
    "no-leaks": ("no-leaks",),
    "failure-semantics": ("sabotage-corrupted-kv", "missing-transfer", "truncated-transfer", "unread-transfer"),
}


def run_plugin_pd(stock: EngineEnv, plugin: EngineEnv, model: Path, work: Path) -> dict[str, Any]:
    """The whole sequence with the plugin's connector; the record of what happened. Engines always end."""
    return run_storage_pd(stock, plugin, model, work, PLUGIN)


def _item(name: str, checks: list[Check]) -> ItemResult:
    bad = [line for c in checks if c.status != PASS for line in c.details["all"]]
    if bad:
        return ItemResult(FEATURE, name, Status.FAIL, bad[0], "\n".join(bad))
    return ItemResult(FEATURE, name, Status.PASS, "; ".join(c.details["seen"] for c in checks))


def plugin_pd_items(run: dict[str, Any]) -> list[ItemResult]:
    """decode-equals-aggregated, no-leaks and failure-semantics from one `run_plugin_pd` record."""
    checks = {c.name.removeprefix("shared-storage-"): c for c in storage_checks(run, PLUGIN)}
    return [_item(item, [checks[name] for name in names]) for item, names in ITEMS.items()]
