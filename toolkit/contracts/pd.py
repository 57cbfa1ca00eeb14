"""The pd-disagg contract, judged from the P/D scenarios (toolkit/serving/drivers/pd_scenarios.py).

The side's own engine runs every scenario aggregated (the reference) and disaggregated (a prefill engine
and a decode engine, the shared-storage transport between them, NIXL where importable), each a process
of its own; toolkit/conformance/pdchecks.py judges them. Items:

- `decode-equals-aggregated`: every request's decode outputs equal its aggregated outputs;
- `no-leaks`: after the drain no block is referenced, no transfer left behind, no held block freed early;
- `failure-semantics`: a failed or timed-out load recomputes or fails the request as configured, an abort
  during a load frees the blocks only once the load ended, an unacknowledged send is released by the
  hold timeout;
- `nixl-transport`: the decode engine reads the KV over NIXL (not provided where NIXL cannot load).

A build whose disaggregated run cannot start (stock vLLM 0.9.0 has none of the CPU-capable connectors the
scenarios use) does not provide the items, with the reason.
"""

from __future__ import annotations

from pathlib import Path

from toolkit.conformance.checks import CheckResult
from toolkit.conformance.envs import run_pd
from toolkit.conformance.pdchecks import pd_checks
from toolkit.contracts.sides import Side
from toolkit.errors import VpatchError
from toolkit.records.contract import ConfigRun, ItemResult
from toolkit.records.status import Status

FEATURE = "pd-disagg"
ITEMS = {
    "pd-disagg-outputs": "decode-equals-aggregated",
    "pd-no-leaks": "no-leaks",
    "pd-failure-paths": "failure-semantics",
    "pd-nixl-transport": "nixl-transport",
}


def items_from_checks(checks: list[CheckResult]) -> list[ItemResult]:
    """pdchecks' results as contract items (a check that does not apply is an item not provided)."""
    items = []
    for check in checks:
        status = Status.NOT_PROVIDED if check.status == Status.NOT_APPLICABLE else Status(check.status)
        items.append(ItemResult(FEATURE, ITEMS[check.name], status, check.detail, check.diff))
    return items


def not_provided(build: str, why: str) -> list[ItemResult]:
    return [
        ItemResult(FEATURE, item, Status.NOT_PROVIDED, f"{build} has no CPU P/D transport: {why}")
        for item in ITEMS.values()
    ]


def run_pd_contract(side: Side, work: Path) -> ConfigRun:
    work.mkdir(parents=True, exist_ok=True)
    name = f"{side.name}-pd"
    try:
        reference = run_pd(side.venv, work / f"{name}-aggregated.json", mode="aggregated")
    except VpatchError as exc:
        items = [
            ItemResult(FEATURE, item, Status.FAIL, f"the aggregated reference failed: {exc}") for item in ITEMS.values()
        ]
        return ConfigRun(name, side.name, side.build, None, items, error=str(exc))
    try:
        disagg = run_pd(side.venv, work / f"{name}-disagg.json", mode="disagg")
    except VpatchError as exc:
        if side.build.kind == "dynamo-base":
            items = [
                ItemResult(FEATURE, item, Status.FAIL, f"the disaggregated run failed: {exc}")
                for item in ITEMS.values()
            ]
            return ConfigRun(name, side.name, side.build, None, items, error=str(exc))
        return ConfigRun(name, side.name, side.build, None, not_provided(side.build.label, str(exc)))
    return ConfigRun(name, side.name, side.build, None, items_from_checks(pd_checks(reference, disagg)))
