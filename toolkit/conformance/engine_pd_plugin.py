"""P/D on stock vLLM's CPU build through the dynamo-base plugin's SharedStorageConnectorV1 (loaded by
`kv_connector_module_path` from the plugin wheel installed beside stock), judged as the pd-disagg contract.

The run is engine_pd_storage.py's, with the plugin as the transport: an aggregated engine (stock alone, no
connector: the reference), a prefill and a decode engine (stock + plugin), each its own process, on the tiny
model. Its checks are grouped here into the contract's three items.

Before that run, `connector_refusal` asks the plugin in its own venv for the connector class the way vLLM's loader
does (the name's attribute of the module the plugin registered for it): on a vLLM whose connector API the plugin's
transport does not speak (0.13.0: toolkit/plugin/delivers.toml, `since`), the plugin refuses the name with one line,
and the run would only end in that line at the prefill's start.
"""

from __future__ import annotations

import json
import subprocess
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
from toolkit.envs import offline_env
from toolkit.errors import VpatchError
from toolkit.records.contract import ItemResult
from toolkit.records.status import Status
from toolkit.serving.plugin import SOURCE

__all__ = [
    "CONNECTOR",
    "HOLD_TIMEOUT",
    "LOAD_TIMEOUT",
    "connector_refusal",
    "corrupt",
    "own_count",
    "plugin_pd_items",
    "run_plugin_pd",
]

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


# Run by the plugin venv's Python: getattr on the module registered for the name is what vLLM's connector factory
# does. Prints the refusal's line and, for it and the error it was raised over, the plugin frame that raised it.
PROBE = """
import json, sys, traceback
import dynamo_base_plugin.connector_names as names
def where(error):
    frames = [f for f in traceback.extract_tb(error.__traceback__) if "/dynamo_base_plugin/" in f.filename]
    return [frames[-1].filename.rsplit("/dynamo_base_plugin/", 1)[1], frames[-1].lineno] if frames else None
try:
    getattr(names, sys.argv[1])
except names.ConnectorNameError as exc:
    cause = exc.__context__
    print(json.dumps({"refused": str(exc), "at": where(exc), "cause": where(cause) if cause else None}))
else:
    print(json.dumps({"refused": None}))
"""
PROBE_TIMEOUT = 600.0  # importing torch and vLLM's connector base; minutes at this machine's worst load


def _source_line(found: list | None) -> str:
    """A plugin frame [file in the package, line] as the repository's path: toolkit/serving/plugin/.../X.py:L."""
    if not found:
        return "?"
    root = SOURCE.parents[3]  # the repository, above toolkit/serving/plugin/dynamo_base_plugin
    return f"{(SOURCE / str(found[0])).relative_to(root)}:{found[1]}"


def connector_refusal(plugin: EngineEnv, name: str = CONNECTOR) -> str | None:
    """The plugin's refusal of connector `name` on this venv's vLLM, with where it was raised and over what
    (`... (refused at toolkit/serving/plugin/dynamo_base_plugin/connector_names.py:79, over the import at
    .../shared_storage.py:45)`); None when the class loads."""
    try:
        proc = subprocess.run(
            [str(plugin.python), "-c", PROBE, name],
            capture_output=True,
            text=True,
            env=offline_env(),
            timeout=PROBE_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise VpatchError(f"asking the plugin for {name} took more than {PROBE_TIMEOUT:.0f} s") from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise VpatchError(f"asking the plugin for {name} failed (exit {proc.returncode}): {last}")
    found = json.loads(lines[-1])
    if found["refused"] is None:
        return None
    over = f", over the import at {_source_line(found['cause'])}" if found.get("cause") else ""
    return f"{found['refused']} (refused at {_source_line(found['at'])}{over})"
